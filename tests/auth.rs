//! API-key auth through a real gateway: exact 401 and 403 answers, keys from hashes, the
//! environment and files, keys removed before forwarding and never logged.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use bytes::Bytes;
use common::{send, Answer, Gateway, Upstream};
use http::Request;
use http_body_util::Full;
use serde_json::json;
use sluice::proxy::auth::KeyHash;

fn sha(key: &str) -> String {
    hex::encode(KeyHash::of(key.as_bytes()).0)
}

/// An echo cluster, an LLM route `chat` under `/v1/` that requires a key, an `admin` route
/// under `/admin/` (body not read as LLM), and consumer `alpha` (key `sk-alpha`).
fn config(echo: &str, extra: &str) -> String {
    format!(
        r#"
        [[clusters]]
        name = "echo"
        backends = [{{ url = "{echo}" }}]

        [[routes]]
        name = "chat"
        cluster = "echo"
        auth = "required"
        request_headers = {{ set = {{ authorization = "Bearer upstream-secret" }} }}
        [routes.match]
        path_prefix = "/v1/"

        [[routes]]
        name = "admin"
        cluster = "echo"
        auth = "required"
        llm = "off"
        [routes.match]
        path_prefix = "/admin/"

        [[consumers]]
        name = "alpha"
        key_sha256 = "{alpha}"
        models = ["gpt-4o", "llama-*"]
        blocked_models = ["llama-guard"]
        routes = ["chat"]

        {extra}
        "#,
        alpha = sha("sk-alpha"),
    )
}

async fn call(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<serde_json::Value>,
) -> Answer {
    let mut req = match &body {
        Some(_) => Request::post(gw.url(path)).header("content-type", "application/json"),
        None => Request::get(gw.url(path)),
    };
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    send(req.body(Full::new(body)).unwrap()).await
}

fn chat(model: &str) -> serde_json::Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] })
}

/// The headers the echo upstream saw, from its JSON echo.
fn forwarded(answer: &Answer) -> serde_json::Value {
    answer.json()["headers"].clone()
}

#[tokio::test]
async fn missing_and_unknown_keys_get_exact_401s() {
    let echo = Upstream::echo("echo").await;
    let gw = Gateway::start(&config(&echo.url(), "")).await;

    let answer = call(&gw, "/v1/chat/completions", &[], Some(chat("gpt-4o"))).await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.json(),
        json!({ "error": {
            "message": "route `chat` requires an API key: send `Authorization: Bearer <key>` \
                        or `x-api-key: <key>`",
            "type": "invalid_request_error",
            "code": "missing_api_key",
        }})
    );
    assert_eq!(answer.header("www-authenticate"), "Bearer");
    assert_eq!(answer.header("content-type"), "application/json");
    assert!(!answer.header("x-request-id").is_empty());

    for headers in [
        [("authorization", "Bearer sk-wrong")],
        [("x-api-key", "sk-alpha ")],
        [("authorization", "Bearer sk-alphA")],
    ] {
        let answer = call(&gw, "/v1/chat/completions", &headers, Some(chat("gpt-4o"))).await;
        let expected = if headers[0].1.trim() == "sk-alpha" {
            200
        } else {
            401
        };
        assert_eq!(answer.status, expected, "{headers:?}");
        if expected == 401 {
            assert_eq!(
                answer.json(),
                json!({ "error": {
                    "message": "the API key is not valid",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }})
            );
            assert_eq!(answer.header("www-authenticate"), "Bearer");
            assert!(!answer.text().contains("sk-"), "the key was echoed");
        }
    }
    // A Basic credential is not an API key.
    let answer = call(
        &gw,
        "/v1/models",
        &[("authorization", "Basic c2stYWxwaGE6")],
        None,
    )
    .await;
    answer.assert_error(401, "missing_api_key");
    assert_eq!(
        echo.seen().len(),
        1,
        "a refused request reached the upstream"
    );
    assert_eq!(
        gw.metric("sluice_auth_failures_total{reason=\"missing_key\"}")
            .await,
        2.0
    );
    assert_eq!(
        gw.metric("sluice_auth_failures_total{reason=\"invalid_key\"}")
            .await,
        2.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn keys_come_from_hashes_env_and_files_and_are_not_forwarded() {
    let echo = Upstream::echo("echo").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/gamma.key"), "sk-gamma\n").unwrap();
    std::env::set_var("SLUICE_TEST_BETA_KEY", "sk-beta");
    let extra = format!(
        r#"
        [[consumers]]
        name = "beta"
        key_env = "SLUICE_TEST_BETA_KEY"
        key_sha256 = ["{old}", "{new}"]

        [[consumers]]
        name = "gamma"
        key_file = "secrets/gamma.key"
        "#,
        old = sha("sk-beta-old"),
        new = sha("sk-beta-new"),
    );
    let gw = Gateway::start_in(dir, &config(&echo.url(), &extra)).await;
    for (header, key) in [
        ("authorization", "Bearer sk-beta"),
        ("x-api-key", "sk-beta-old"),
        ("authorization", "bearer sk-beta-new"),
        ("x-api-key", "sk-gamma"),
    ] {
        let answer = call(
            &gw,
            "/v1/chat/completions",
            &[(header, key), ("x-api-key-extra", "kept")],
            Some(chat("anything")),
        )
        .await;
        assert_eq!(answer.status, 200, "{header}: {key}: {}", answer.text());
        let seen = forwarded(&answer);
        // The client's key is gone; the route's own credential replaced it.
        assert_eq!(seen["authorization"], "Bearer upstream-secret");
        assert!(seen.get("x-api-key").is_none(), "{seen}");
        assert_eq!(seen["x-api-key-extra"], "kept");
    }
    gw.stop().await;
}

#[tokio::test]
async fn forbidden_models_and_routes_get_exact_403s() {
    let echo = Upstream::echo("echo").await;
    let gw = Gateway::start(&config(&echo.url(), "")).await;
    let key = [("authorization", "Bearer sk-alpha")];

    for model in ["gpt-4o", "llama-3-70b"] {
        let answer = call(&gw, "/v1/chat/completions", &key, Some(chat(model))).await;
        assert_eq!(answer.status, 200, "{model}: {}", answer.text());
    }
    for model in ["gpt-4o-mini", "llama-guard"] {
        let answer = call(&gw, "/v1/chat/completions", &key, Some(chat(model))).await;
        assert_eq!(answer.status, 403);
        assert_eq!(
            answer.json(),
            json!({ "error": {
                "message": format!("consumer `alpha` may not use model `{model}`"),
                "type": "permission_error",
                "code": "model_not_allowed",
            }})
        );
    }
    // A body that names no model does not pass an allow-list ...
    let answer = call(
        &gw,
        "/v1/chat/completions",
        &key,
        Some(json!({"messages": []})),
    )
    .await;
    assert_eq!(
        answer.json()["error"]["message"],
        "consumer `alpha` may not use a request without a model"
    );
    // ... but a request without a body is not about a model.
    let answer = call(&gw, "/v1/models", &key, None).await;
    assert_eq!(answer.status, 200);

    let answer = call(&gw, "/admin/stats", &key, None).await;
    assert_eq!(answer.status, 403);
    assert_eq!(
        answer.json(),
        json!({ "error": {
            "message": "consumer `alpha` may not use route `admin`",
            "type": "permission_error",
            "code": "route_not_allowed",
        }})
    );
    assert!(!answer.header("x-request-id").is_empty());
    assert_eq!(
        gw.metric("sluice_auth_failures_total{reason=\"model_not_allowed\"}")
            .await,
        3.0
    );
    assert_eq!(
        gw.metric("sluice_auth_failures_total{reason=\"route_not_allowed\"}")
            .await,
        1.0
    );
    // Only the three allowed requests reached the upstream.
    assert_eq!(echo.seen().len(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn model_rules_read_the_body_on_routes_that_are_not_llm() {
    let echo = Upstream::echo("echo").await;
    let extra = format!(
        r#"
        [[consumers]]
        name = "ops"
        key_sha256 = "{ops}"
        models = ["gpt-4o"]
        "#,
        ops = sha("sk-ops"),
    );
    let gw = Gateway::start(&config(&echo.url(), &extra)).await;
    let key = [("x-api-key", "sk-ops")];
    let answer = call(&gw, "/admin/jobs", &key, Some(chat("llama-3"))).await;
    answer.assert_error(403, "model_not_allowed");
    let answer = call(&gw, "/admin/jobs", &key, Some(chat("gpt-4o"))).await;
    assert_eq!(answer.status, 200);
    // The body read for the check is forwarded whole.
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(answer.json()["body"].as_str().unwrap()).unwrap(),
        chat("gpt-4o")
    );
    gw.stop().await;
}

#[tokio::test]
async fn model_rules_refuse_a_body_too_large_to_read() {
    let echo = Upstream::echo("echo").await;
    let extra = r#"
        [server]
        max_buffered_body = "1KiB"
        "#;
    let gw = Gateway::start(&config(&echo.url(), extra)).await;
    let key = [("authorization", "Bearer sk-alpha")];
    let mut big = chat("gpt-4o");
    big["messages"] = json!([{ "role": "user", "content": "x".repeat(4096) }]);
    // An allowed model, but past the bound the model cannot be checked: refused, not let by.
    let answer = call(&gw, "/v1/chat/completions", &key, Some(big)).await;
    answer.assert_error(413, "request_too_large");
    let answer = call(&gw, "/v1/chat/completions", &key, Some(chat("gpt-4o"))).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        echo.seen().len(),
        1,
        "the refused body reached the upstream"
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_model_list_of_a_route_with_auth_needs_a_key() {
    let echo = Upstream::echo("echo").await;
    let extra = r#"
        [[routes]]
        name = "listed"
        cluster = "echo"
        auth = "required"
        models_endpoint = true
        [routes.match]
        path_prefix = "/listed/"
        "#;
    let gw = Gateway::start(&config(&echo.url(), extra)).await;
    let answer = call(&gw, "/listed/v1/models", &[], None).await;
    answer.assert_error(401, "missing_api_key");
    // alpha may use only the `chat` route.
    let key = [("authorization", "Bearer sk-alpha")];
    let answer = call(&gw, "/listed/v1/models", &key, None).await;
    answer.assert_error(403, "route_not_allowed");
    assert!(echo.seen().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn optional_auth_admits_anonymous_callers_but_not_bad_keys() {
    let echo = Upstream::echo("echo").await;
    let extra = r#"
        [[routes]]
        name = "open"
        cluster = "echo"
        auth = "optional"
        auth_header = "api-key"
        [routes.match]
        path_prefix = "/open/"
    "#;
    let gw = Gateway::start(&config(&echo.url(), extra)).await;
    assert_eq!(call(&gw, "/open/x", &[], None).await.status, 200);
    call(&gw, "/open/x", &[("api-key", "nope")], None)
        .await
        .assert_error(401, "invalid_api_key");
    // alpha may use `chat` only.
    call(&gw, "/open/x", &[("api-key", "sk-alpha")], None)
        .await
        .assert_error(403, "route_not_allowed");
    gw.stop().await;
}

/// Two model routes on one path that both require a key, and a third, `free`, on another
/// path that serves one model without a key after an authenticated one.
const MODEL_ROUTES: &str = r#"
    [[routes]]
    name = "gpt"
    cluster = "echo"
    auth = "required"
    [routes.match]
    path = "/models/chat"
    models = ["gpt-4o"]

    [[routes]]
    name = "llama"
    cluster = "echo"
    auth = "required"
    [routes.match]
    path = "/models/chat"
    models = ["llama-*"]

    [[routes]]
    name = "guarded"
    cluster = "echo"
    auth = "required"
    [routes.match]
    path = "/mixed/chat"
    models = ["gpt-4o"]

    [[routes]]
    name = "free"
    cluster = "echo"
    [routes.match]
    path = "/mixed/chat"
"#;

/// Starts a POST to `path` whose body never comes: the answer can only be one given
/// without reading it. The sender is returned so that the body stays open.
async fn post_without_body(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> (tokio::sync::mpsc::Sender<Bytes>, Answer) {
    let (tx, body) = common::channel_body();
    let mut req = Request::post(gw.url(path))
        .header("content-type", "application/json")
        .header("content-length", "1000");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = within(common::open(req.body(body).unwrap())).await;
    let status = response.status();
    let headers = response.headers().clone();
    let (body, _) = within(common::drain(response.into_body())).await;
    (
        tx,
        Answer {
            status,
            headers,
            body,
        },
    )
}

/// Awaits `future`, failing the test if it hangs; no assertion depends on the bound.
async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(10), future)
        .await
        .expect("hang: the gateway waited for a body it should not have read")
}

#[tokio::test]
async fn model_routes_refuse_bad_keys_before_reading_the_body() {
    let echo = Upstream::echo("echo").await;
    let gw = Gateway::start(&config(&echo.url(), MODEL_ROUTES)).await;

    // Every route this request could reach requires a key: refused with the body unread.
    let (_tx, answer) = post_without_body(&gw, "/models/chat", &[]).await;
    answer.assert_error(401, "missing_api_key");
    assert!(answer.text().contains("route `gpt`"), "{}", answer.text());
    let bad = [("authorization", "Bearer sk-wrong")];
    let (_tx, answer) = post_without_body(&gw, "/models/chat", &bad).await;
    answer.assert_error(401, "invalid_api_key");

    // A valid key is let through to the body: the route its model picks is then checked
    // (alpha may use `chat` only).
    let key = [("authorization", "Bearer sk-alpha")];
    let answer = call(&gw, "/models/chat", &key, Some(chat("llama-3"))).await;
    answer.assert_error(403, "route_not_allowed");
    assert!(answer.text().contains("route `llama`"), "{}", answer.text());

    // `free` takes any model without a key: the body must be read to know the route.
    let answer = call(&gw, "/mixed/chat", &[], Some(chat("mistral"))).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = call(&gw, "/mixed/chat", &[], Some(chat("gpt-4o"))).await;
    answer.assert_error(401, "missing_api_key");
    assert_eq!(echo.seen().len(), 1);
    gw.stop().await;
}

#[test]
fn the_access_log_names_the_consumer_and_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        r#"
            [[clusters]]
            name = "mock"
            backends = [{ url = "mock://m" }]
            [[routes]]
            name = "chat"
            cluster = "mock"
            auth = "required"
            [[consumers]]
            name = "alpha"
            key_env = "SLUICE_ALPHA_KEY"
            "#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "-c"])
        .arg(&path)
        .args(["--http", "127.0.0.1:0", "--monitor", "127.0.0.1:0"])
        .args(["--log-format", "json", "--log-level", "debug"])
        .env("SLUICE_ALPHA_KEY", "sk-very-secret-alpha")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut all = Vec::new();
    let http: std::net::SocketAddr = loop {
        let line = lines.next().expect("exited before listening").unwrap();
        all.push(line.clone());
        if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
            if event["message"] == "listening" {
                break event["http"].as_str().unwrap().parse().unwrap();
            }
        }
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for key in ["sk-very-secret-alpha", "sk-very-secret-wrong"] {
        let req = Request::post(format!("http://{http}/v1/chat/completions"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(chat("m").to_string())))
            .unwrap();
        runtime.block_on(send(req));
    }
    let mut access = Vec::new();
    while access.len() < 2 {
        let line = lines.next().expect("exited early").unwrap();
        all.push(line.clone());
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["target"] == "sluice::access" {
            access.push(event);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(access[0]["consumer"], "alpha", "{}", access[0]);
    assert_eq!(access[0]["status"], 200);
    assert!(access[1].get("consumer").is_none_or(|c| c.is_null()));
    assert_eq!(access[1]["error"], "invalid_api_key");
    for line in &all {
        assert!(!line.contains("sk-very-secret"), "a key was logged: {line}");
    }
}

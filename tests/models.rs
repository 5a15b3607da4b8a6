//! Routing on the `model` of a JSON body, model rewrites, `GET /v1/models` from the config,
//! and bad bodies on model routes, through a real gateway.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{get, post_json, raw, send, Gateway, Tap, TapEvent, Upstream};
use http::Request;
use http_body_util::Full;
use serde_json::json;
use tokio::time::timeout;

/// Generous guard against hangs; no assertion depends on it.
const HANG_GUARD: Duration = Duration::from_secs(10);

/// A mock cluster per name, so that `x-sluice-mock` names the cluster that answered.
fn mock_clusters(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("[[clusters]]\nname = \"{n}\"\nbackends = [{{ url = \"mock://{n}\" }}]\n"))
        .collect()
}

const MATRIX_ROUTES: &str = r#"
[[routes]]
name = "gpt"
cluster = "openai"
match = { path = "/v1/chat/completions", models = ["gpt-4o", "gpt-4o-*"] }

[[routes]]
name = "llama"
cluster = "llama"
match = { path = "/v1/chat/completions", models = ["llama-*"] }

[[routes]]
name = "instruct"
cluster = "instruct"
match = { path_prefix = "/v1/", models = ["*-instruct", "qwen?-72b"] }

[[routes]]
name = "models"
cluster = "default"
models_endpoint = true
match = { path = "/v1/models" }

[[routes]]
name = "default"
cluster = "default"
match = { path_prefix = "/v1/" }
model_rewrite = { aliases = { "gpt-5" = "default-large" } }
"#;

async fn served_by(gw: &Gateway, path: &str, body: &str) -> (u16, String) {
    let answer = send(
        Request::post(gw.url(path))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap(),
    )
    .await;
    (
        answer.status.as_u16(),
        answer.header("x-sluice-mock").to_owned(),
    )
}

#[tokio::test]
async fn model_routing_matrix() {
    let toml = mock_clusters(&["openai", "llama", "instruct", "default"]) + MATRIX_ROUTES;
    let gw = Gateway::start(&toml).await;
    let chat = "/v1/chat/completions";
    let cases = [
        // (path, body, cluster): exact, prefix and glob names; routes sharing a path.
        (chat, r#"{"model":"gpt-4o","messages":[]}"#, "openai"),
        (chat, r#"{"messages":[],"model":"gpt-4o-mini"}"#, "openai"),
        (chat, r#"{"model":"llama-3.1-70b","messages":[]}"#, "llama"),
        (
            chat,
            r#"{"model":"mistral-7b-instruct","messages":[]}"#,
            "instruct",
        ),
        (chat, r#"{"model":"qwen2-72b","messages":[]}"#, "instruct"),
        // Names are case-sensitive and globs match the whole name.
        (chat, r#"{"model":"GPT-4o","messages":[]}"#, "default"),
        (chat, r#"{"model":"qwen25-72b","messages":[]}"#, "default"),
        (
            chat,
            r#"{"model":"mistral-7b-instruct-v2","messages":[]}"#,
            "default",
        ),
        // Other paths under /v1/: the prefix routes, model first.
        (
            "/v1/embeddings",
            r#"{"model":"bge-instruct","input":"x"}"#,
            "instruct",
        ),
        (
            "/v1/embeddings",
            r#"{"model":"llama-3","input":"x"}"#,
            "default",
        ),
        // No model, or not JSON: the routes without a condition take it.
        (chat, r#"{"messages":[]}"#, "default"),
        (chat, "not json", "default"),
    ];
    for (path, body, cluster) in cases {
        let (status, by) = served_by(&gw, path, body).await;
        assert_eq!(by, cluster, "{path} {body} (status {status})");
    }
    // The `default` route's alias reached its backend, which answers with its name.
    let answer = post_json(
        &gw.url(chat),
        &json!({"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["model"], "default-large");
    gw.stop().await;
}

#[tokio::test]
async fn a_route_that_needs_no_model_does_not_read_the_body() {
    // The exact route comes first and has no model condition: its request streams through
    // while the client is still sending, which it could not if the body were read first.
    let mut tap = Tap::start().await;
    let toml = format!(
        r#"
        [[clusters]]
        name = "tap"
        backends = [{{ url = "{}" }}]
        {}
        [[routes]]
        name = "upload"
        cluster = "tap"
        llm = "off"
        match = {{ path = "/v1/files" }}

        [[routes]]
        name = "by-model"
        cluster = "tap"
        match = {{ path_prefix = "/v1/", models = ["gpt-4o"] }}
        "#,
        tap.url(),
        ""
    );
    let gw = Gateway::start(&toml).await;
    let (tx, body) = common::channel_body();
    let request = Request::post(gw.url("/v1/files")).body(body).unwrap();
    let pending = tokio::spawn(common::open(request));
    tx.send(Bytes::from_static(b"first part")).await.unwrap();
    let head = timeout(HANG_GUARD, tap.next_event()).await.expect("hang");
    assert!(matches!(head, TapEvent::Head { ref uri } if uri == "/v1/files"));
    drop(tx);
    let response = timeout(HANG_GUARD, pending).await.expect("hang").unwrap();
    assert_eq!(response.status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn aliases_and_prefix_strips_rewrite_only_the_model() {
    let upstream = Upstream::echo("qwen").await;
    let toml = format!(
        r#"
        [[clusters]]
        name = "qwen"
        backends = [{{ url = "{}" }}]
        # The cluster's own names, applied after the route's.
        model_rewrite = {{ aliases = {{ "Qwen2.5-72B-Instruct" = "qwen2.5-72b-awq" }} }}

        [[routes]]
        name = "chat"
        cluster = "qwen"
        include_usage = true
        match = {{ path_prefix = "/v1/" }}
        model_rewrite = {{ strip_prefix = ["openai/"], aliases = {{ "gpt-4o" = "Qwen2.5-72B-Instruct" }} }}
        "#,
        upstream.url()
    );
    let gw = Gateway::start(&toml).await;
    // Odd spacing, escapes and field order must survive byte for byte.
    let sent = r#"{ "temperature" : 0.5,"model":  "openai/gpt\u002d4o" , "messages":[{"role":"user","content":"h\u00e9"}]}"#;
    let answer = send(
        Request::post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(sent.as_bytes())))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = &upstream.seen()[0];
    let expected = r#"{ "temperature" : 0.5,"model":  "qwen2.5-72b-awq" , "messages":[{"role":"user","content":"h\u00e9"}]}"#;
    assert_eq!(std::str::from_utf8(&seen.body).unwrap(), expected);
    assert_eq!(seen.headers["content-length"], expected.len().to_string());

    // A streamed request also gets `stream_options`, and the model still changes.
    let answer = post_json(
        &gw.url("/v1/chat/completions"),
        &json!({"model": "gpt-4o", "stream": true, "messages": []}),
    )
    .await;
    assert_eq!(answer.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&upstream.seen()[1].body).unwrap();
    assert_eq!(body["model"], "qwen2.5-72b-awq");
    assert_eq!(body["stream_options"]["include_usage"], true);

    // A name with no alias is forwarded as the client sent it, byte for byte.
    let plain = r#"{"model":"other","messages":[]}"#;
    send(
        Request::post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(plain.as_bytes())))
            .unwrap(),
    )
    .await;
    assert_eq!(&upstream.seen()[2].body[..], plain.as_bytes());
    gw.stop().await;
}

#[tokio::test]
async fn v1_models_lists_the_public_names_from_the_config() {
    let toml = mock_clusters(&["openai", "llama", "instruct", "default"]) + MATRIX_ROUTES;
    let gw = Gateway::start(&toml).await;
    let answer = get(&gw.url("/v1/models")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.header("x-sluice-mock"),
        "",
        "answered by sluice itself"
    );
    let json = answer.json();
    assert_eq!(json["object"], "list");
    let ids: Vec<&str> = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    // Exact names and aliases; patterns (`llama-*`) cannot be listed.
    assert_eq!(ids, ["gpt-4o", "gpt-5"]);
    assert_eq!(json["data"][0]["object"], "model");

    // A route with a prefix answers `…/models/{id}` too; ids may hold a `/`.
    let models_route = r#"
        [[clusters]]
        name = "m"
        backends = [{ url = "mock://m" }]

        [[routes]]
        name = "all"
        cluster = "m"
        models_endpoint = true
        match = { path_prefix = "/v1/", models = ["a", "b/c"] }

        [[routes]]
        name = "rest"
        cluster = "m"
        models_endpoint = true
        match = { path_prefix = "/v1/" }
    "#;
    let gw2 = Gateway::start(models_route).await;
    get(&gw2.url("/v1/models/nope"))
        .await
        .assert_error(404, "model_not_found");
    assert_eq!(get(&gw2.url("/v1/models/b/c")).await.json()["id"], "b/c");
    let ids = get(&gw2.url("/v1/models")).await.json()["data"].clone();
    assert_eq!(
        ids,
        json!([
            {"id": "a", "object": "model", "created": 0, "owned_by": "sluice"},
            {"id": "b/c", "object": "model", "created": 0, "owned_by": "sluice"},
        ])
    );
    gw.stop().await;
    gw2.stop().await;
}

/// A gateway whose only route needs a model, in front of a tap that reports every
/// connection, and a body bound of 1KiB.
async fn strict_gateway(tap: &Tap) -> Gateway {
    Gateway::start(&format!(
        r#"
        [server]
        max_buffered_body = "1KiB"

        [[clusters]]
        name = "tap"
        backends = [{{ url = "{}" }}]

        [[routes]]
        name = "by-model"
        cluster = "tap"
        match = {{ path_prefix = "/v1/", models = ["gpt-4o"] }}
        "#,
        tap.url()
    ))
    .await
}

async fn post_raw(gw: &Gateway, body: &'static str) -> common::Answer {
    send(
        Request::post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn bad_bodies_get_a_json_4xx_and_never_reach_the_backend() {
    let tap = Tap::start().await;
    let gw = strict_gateway(&tap).await;

    post_raw(&gw, "{\"model\": \"gpt-4o\", oops}")
        .await
        .assert_error(400, "invalid_json");
    post_raw(&gw, "").await.assert_error(400, "invalid_json");
    post_raw(&gw, "[\"gpt-4o\"]")
        .await
        .assert_error(400, "invalid_json");
    post_raw(&gw, r#"{"model":"gpt-4o","model":"gpt-4o-mini"}"#)
        .await
        .assert_error(400, "invalid_json");
    post_raw(&gw, r#"{"model": 4, "messages": []}"#)
        .await
        .assert_error(400, "invalid_model");
    post_raw(&gw, r#"{"messages": []}"#)
        .await
        .assert_error(400, "model_required");
    post_raw(&gw, r#"{"model": null}"#)
        .await
        .assert_error(400, "model_required");
    post_raw(&gw, r#"{"model": "gpt-3"}"#)
        .await
        .assert_error(404, "model_not_found");

    // Larger than max_buffered_body: declared, and chunked.
    let big = format!(r#"{{"model":"gpt-4o","pad":"{}"}}"#, "x".repeat(2000));
    post_json(&gw.url("/v1/x"), &serde_json::from_str(&big).unwrap())
        .await
        .assert_error(413, "request_too_large");
    let (tx, body) = common::channel_body();
    let request = Request::post(gw.url("/v1/x")).body(body).unwrap();
    let pending = tokio::spawn(common::open(request));
    for _ in 0..3 {
        tx.send(Bytes::from(vec![b' '; 600])).await.unwrap();
    }
    let response = timeout(HANG_GUARD, pending).await.expect("hang").unwrap();
    assert_eq!(response.status(), 413);
    drop(tx);

    // A Content-Length that promises more than comes: the client gives up writing.
    let answer = timeout(HANG_GUARD, async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        stream
            .write_all(
                b"POST /v1/x HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
                  content-length: 100\r\n\r\n{\"model\":\"gpt-4o\"",
            )
            .await
            .unwrap();
        stream.shutdown().await.unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("hang");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("request_body_error"), "{answer}");

    // A Content-Length that promises less: the body is cut, so it is not JSON.
    let answer = timeout(
        HANG_GUARD,
        raw(
            gw.http,
            b"POST /v1/x HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\
              content-type: application/json\r\ncontent-length: 9\r\n\r\n{\"model\":\"gpt-4o\"}",
        ),
    )
    .await
    .expect("hang");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("invalid_json"), "{answer}");

    // Not one of them reached the backend, not even as a connection.
    assert_eq!(tap.accepted(), 0);
    // And a good one does.
    let good = post_raw(&gw, r#"{"model":"gpt-4o"}"#).await;
    assert_eq!(good.status, 200);
    assert_eq!(tap.accepted(), 1);
    gw.stop().await;
}

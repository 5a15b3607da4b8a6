//! The conf-agent contract on the monitor port: `GET /reload/<name>?path=<dir>`, done step by
//! step as a conf-agent does it; bad configs refused with the running one untouched; static
//! changes reported; tokens; pools that survive.

mod common;

use std::path::Path;

use common::reload::{assert_applied, reload, repoint, write_version};
use common::{get, send, Gateway, Upstream};
use http::Request;
use http_body_util::Full;

/// The main file: the routing lives in `conf.d`; the watch is off so that only the test's
/// own calls reload.
fn main_file(extra: &str) -> String {
    format!("dynamic_dir = \"conf.d\"\n[reload]\nwatch = false\n{extra}\n")
}

/// A dynamic file: cluster `models` (the mock) and a route `/NAME/` for each name, sent to the
/// mock as `/v1/`.
fn routes(names: &[&str]) -> String {
    let mut toml =
        "[[clusters]]\nname = \"models\"\nbackends = [{ url = \"mock://m\" }]\n".to_owned();
    for name in names {
        toml.push_str(&format!(
            "[[routes]]\nname = \"{name}\"\ncluster = \"models\"\nrewrite_prefix = \"/v1/\"\n\
             match = {{ path_prefix = \"/{name}/\" }}\n"
        ));
    }
    toml
}

/// A gateway whose live `conf.d` is a symlink to `conf.d_1`, holding `files`.
async fn start(main: &str, files: &[(&str, &str)]) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("conf.d");
    let first = write_version(&live, "1", files);
    std::os::unix::fs::symlink(&first, &live).unwrap();
    Gateway::start_in(dir, main).await
}

/// The status of `GET /{route}/models`: 200 when the route exists, 404 when it does not.
async fn route_status(gw: &Gateway, route: &str) -> u16 {
    let answer = get(&gw.url(&format!("/{route}/models"))).await;
    if answer.status == 404 {
        answer.assert_error(404, "route_not_found");
    }
    answer.status.as_u16()
}

async fn status(gw: &Gateway) -> serde_json::Value {
    get(&gw.monitor_url("/status")).await.json()
}

#[tokio::test]
async fn a_conf_agent_cycle_writes_reloads_with_path_and_repoints() {
    let gw = start(&main_file(""), &[("routes.toml", &routes(&["a", "b"]))]).await;
    let live = gw.dir().join("conf.d");
    assert_eq!(route_status(&gw, "a").await, 200);
    assert_eq!(route_status(&gw, "c").await, 404);
    let started = status(&gw).await;
    assert_eq!(started["last_reload"]["trigger"], "start");
    assert_eq!(started["last_reload"]["ok"], true);

    // 1. A complete new config in a fresh directory: route a removed, c added.
    let next = write_version(&live, "2", &[("routes.toml", &routes(&["b", "c"]))]);
    // 2. The reload call names it; the answer says it took effect.
    let reply = reload(&gw, "server_data_conf", Some(&next)).await;
    assert_applied(&reply);
    assert_eq!(reply["restart_required"], serde_json::json!([]));
    let version = reply["version"].as_str().unwrap().to_owned();
    assert_ne!(version, started["config_version"]);
    // The new config serves as soon as the reply is out.
    assert_eq!(route_status(&gw, "c").await, 200);
    assert_eq!(route_status(&gw, "b").await, 200);
    assert_eq!(route_status(&gw, "a").await, 404);
    // 3. Only then the agent repoints the live directory, for the next start.
    repoint(&live, &next);

    // A reload without path reads the live directory: the same version.
    let again = reload(&gw, "sluice", None).await;
    assert_applied(&again);
    assert_eq!(again["version"], version.as_str());
    assert_eq!(route_status(&gw, "c").await, 200);

    let status = status(&gw).await;
    assert_eq!(status["config_version"], version.as_str());
    let last = &status["last_reload"];
    assert_eq!(last["ok"], true);
    assert!(last["error"].is_null());
    assert_eq!(last["trigger"], "api");
    assert_eq!(last["version"], version.as_str());
    assert!(last["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(last["dir"], live.to_str().unwrap());
    assert_eq!(
        gw.metric(r#"sluice_config_reload_total{result="ok"}"#)
            .await,
        2.0
    );
    assert_eq!(
        gw.metric(&format!(
            r#"sluice_config_version_info{{version="{version}"}}"#
        ))
        .await,
        1.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_bad_config_is_refused_and_the_running_one_keeps_serving() {
    let gw = start(&main_file(""), &[("routes.toml", &routes(&["a"]))]).await;
    let live = gw.dir().join("conf.d");
    let running = status(&gw).await["config_version"].clone();

    // Two problems across two files: a route naming a missing cluster, a file that does not
    // parse. Every problem is reported, each with its file, key and reason.
    let bad_route = "[[routes]]\nname = \"z\"\ncluster = \"nope\"\n";
    let next = write_version(
        &live,
        "2",
        &[
            ("routes.toml", &routes(&["a", "b"])),
            ("30-more.toml", bad_route),
        ],
    );
    let reply = reload(&gw, "sluice", Some(&next)).await;
    let want = format!(
        "{}:routes[0].cluster: route `z` names cluster `nope`, which is not defined",
        next.join("30-more.toml").display()
    );
    assert_eq!(reply["error"], want.as_str(), "{reply}");

    let unparsable = write_version(&live, "3", &[("routes.toml", "[[routes]\nname = 1\n")]);
    let reply = reload(&gw, "sluice", Some(&unparsable)).await;
    let error = reply["error"].as_str().unwrap();
    let file = unparsable.join("routes.toml");
    assert!(
        error.starts_with(&format!("{}: ", file.display())) && error.contains("(line 1,"),
        "{error}"
    );

    // Nothing changed: the old route serves, the new one does not exist.
    assert_eq!(route_status(&gw, "a").await, 200);
    assert_eq!(route_status(&gw, "b").await, 404);
    let status = status(&gw).await;
    assert_eq!(status["config_version"], running);
    let last = &status["last_reload"];
    assert_eq!(last["ok"], false);
    assert_eq!(last["error"], error);
    assert_eq!(last["version"], running);
    assert_eq!(
        gw.metric(r#"sluice_config_reload_total{result="error"}"#)
            .await,
        2.0
    );
    assert_eq!(gw.metric("sluice_config_last_reload_success").await, 0.0);

    // A directory that does not exist is refused the same way.
    let reply = reload(&gw, "sluice", Some(&gw.dir().join("conf.d_9"))).await;
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("cannot read directory"),
        "{reply}"
    );

    // The next good config takes effect and the gauge recovers.
    let good = write_version(&live, "4", &[("routes.toml", &routes(&["a", "b"]))]);
    assert_applied(&reload(&gw, "sluice", Some(&good)).await);
    assert_eq!(route_status(&gw, "b").await, 200);
    assert_eq!(gw.metric("sluice_config_last_reload_success").await, 1.0);
    gw.stop().await;
}

#[tokio::test]
async fn names_queries_and_methods_outside_the_contract_are_answered() {
    let gw = start(&main_file(""), &[("routes.toml", &routes(&["a"]))]).await;
    let unknown = reload(&gw, "gslb_data_conf", None).await;
    assert_eq!(
        unknown["error"],
        "unknown reloader `gslb_data_conf`; sluice answers to sluice, server_data_conf, tls_conf"
    );
    let tls_with_path = reload(&gw, "tls_conf", Some(Path::new("/tmp"))).await;
    assert!(tls_with_path["error"]
        .as_str()
        .unwrap()
        .starts_with("tls_conf takes no path"));
    assert_applied(&reload(&gw, "tls_conf", None).await);

    let typo = get(&gw.monitor_url("/reload/sluice?dir=/tmp")).await.json();
    assert_eq!(
        typo["error"],
        "unknown query parameter `dir`; the only one is `path`"
    );
    let list = get(&gw.monitor_url("/reload")).await.json();
    assert_eq!(
        list["reloaders"],
        serde_json::json!(["sluice", "server_data_conf", "tls_conf"])
    );
    let post = send(
        Request::post(gw.monitor_url("/reload/sluice"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    post.assert_error(405, "method_not_allowed");
    // None of these changed anything.
    assert_eq!(
        gw.metric(r#"sluice_config_reload_total{result="error"}"#)
            .await,
        0.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_configured_token_is_required_as_a_bearer_token() {
    let gw = start(
        &main_file("token = \"s3cret-token\""),
        &[("routes.toml", &routes(&["a"]))],
    )
    .await;
    let call = |auth: Option<&'static str>| {
        let mut req = Request::get(gw.monitor_url("/reload/sluice"));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        send(req.body(Full::default()).unwrap())
    };
    let missing = call(None).await;
    missing.assert_error(401, "invalid_reload_token");
    assert_eq!(missing.header("www-authenticate"), "Bearer");
    call(Some("Bearer wrong"))
        .await
        .assert_error(401, "invalid_reload_token");
    let ok = call(Some("Bearer s3cret-token")).await;
    assert_eq!(ok.status, 200);
    assert!(ok.json()["error"].is_null(), "{}", ok.text());
    gw.stop().await;
}

#[tokio::test]
async fn a_path_needs_a_dynamic_dir_that_the_agent_can_repoint() {
    let gw = Gateway::start(&format!("[reload]\nwatch = false\n{}", routes(&["a"]))).await;
    let reply = reload(&gw, "sluice", Some(Path::new("/tmp"))).await;
    let want = format!(
        "{}:dynamic_dir: is not set, so a reload cannot read a directory given with path=: \
         set dynamic_dir to the directory the conf-agent manages",
        gw.dir().join("sluice.toml").display()
    );
    assert_eq!(reply["error"], want.as_str());
    gw.stop().await;
}

#[tokio::test]
async fn the_main_file_is_read_again_and_static_changes_are_reported() {
    let gw = start(&main_file(""), &[("routes.toml", &routes(&["a"]))]).await;
    // The main file's own routes are dynamic; its [listen] and [server] need a restart.
    let main = format!(
        "{}[listen]\nhttp = \"127.0.0.1:1\"\n[server]\nmax_connections = 7\n\
         [[routes]]\nname = \"m\"\ncluster = \"models\"\nrewrite_prefix = \"/v1/\"\n\
         match = {{ path_prefix = \"/m/\" }}\n",
        main_file("")
    );
    std::fs::write(gw.dir().join("sluice.toml"), main).unwrap();
    let reply = reload(&gw, "sluice", None).await;
    assert_applied(&reply);
    assert_eq!(
        reply["restart_required"],
        serde_json::json!(["listen.http", "server.max_connections"])
    );
    assert_eq!(route_status(&gw, "m").await, 200);
    // Still listening where it started.
    assert_eq!(route_status(&gw, "a").await, 200);
    let last = &status(&gw).await["last_reload"];
    assert_eq!(
        last["restart_required"],
        serde_json::json!(["listen.http", "server.max_connections"])
    );
    gw.stop().await;
}

#[tokio::test]
async fn connection_pools_survive_reloads_of_an_unchanged_backend() {
    let upstream = Upstream::echo("real").await;
    let real = format!(
        "[[clusters]]\nname = \"real\"\nbackends = [{{ url = \"{}\" }}]\n\
         [[routes]]\nname = \"r\"\ncluster = \"real\"\nmatch = {{ path_prefix = \"/r/\" }}\n",
        upstream.url()
    );
    let gw = start(
        &main_file(""),
        &[("real.toml", &real), ("routes.toml", &routes(&["a"]))],
    )
    .await;
    let live = gw.dir().join("conf.d");
    let connects = r#"sluice_upstream_connects_total{cluster="real"}"#;
    assert_eq!(get(&gw.url("/r/x")).await.status, 200);
    assert_eq!(gw.metric(connects).await, 1.0);

    for version in 2..12 {
        // Other routes come and go; cluster `real` stays as it is.
        let name = format!("n{version}");
        let next = write_version(
            &live,
            &version.to_string(),
            &[("real.toml", &real), ("routes.toml", &routes(&[&name]))],
        );
        assert_applied(&reload(&gw, "sluice", Some(&next)).await);
        assert_eq!(get(&gw.url("/r/x")).await.status, 200);
    }
    // Eleven requests over ten reloads, one connection.
    assert_eq!(upstream.seen().len(), 11);
    assert_eq!(gw.metric(connects).await, 1.0);

    // A changed client setting builds the backend anew, with a pool of its own.
    let changed = real.replace(
        "name = \"real\"\n",
        "name = \"real\"\nconnect_timeout = \"2s\"\n",
    );
    let next = write_version(&live, "99", &[("real.toml", &changed)]);
    assert_applied(&reload(&gw, "sluice", Some(&next)).await);
    assert_eq!(get(&gw.url("/r/x")).await.status, 200);
    assert_eq!(gw.metric(connects).await, 2.0);
    gw.stop().await;
}

#[test]
fn sluice_check_reads_a_directory_as_a_reload_with_path_would() {
    use common::check::{run, text, write};
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("sluice.toml");
    write(&main, "dynamic_dir = \"conf.d\"\n");
    write(&dir.path().join("conf.d/routes.toml"), &routes(&["a"]));
    let next = dir.path().join("conf.d_2");
    write(&next.join("routes.toml"), &routes(&["a", "b"]));
    let out = run(&[
        "check",
        "-c",
        main.to_str().unwrap(),
        "--dynamic-dir",
        next.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ok (2 routes, 1 clusters"),
        "{}",
        text(&out.stdout)
    );

    let bad = dir.path().join("conf.d_3");
    write(
        &bad.join("routes.toml"),
        "[[routes]]\nname = \"z\"\ncluster = \"nope\"\n",
    );
    let out = run(&[
        "check",
        "-c",
        main.to_str().unwrap(),
        "--dynamic-dir",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        format!(
            "{}:routes[0].cluster: route `z` names cluster `nope`, which is not defined\n",
            bad.join("routes.toml").display()
        )
    );

    // As a reload with path=, a main file without dynamic_dir cannot take a directory.
    let plain = dir.path().join("plain.toml");
    write(&plain, &routes(&["a"]));
    let out = run(&[
        "check",
        "-c",
        plain.to_str().unwrap(),
        "--dynamic-dir",
        next.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(":dynamic_dir: is not set"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn a_removed_backend_finishes_the_streams_it_serves() {
    use bytes::Bytes;
    use common::{Reader, StreamUpstream};
    let mut upstream = StreamUpstream::start().await;
    let old = format!(
        "[[clusters]]\nname = \"old\"\nbackends = [{{ url = \"{}\" }}]\n\
         [[routes]]\nname = \"old\"\ncluster = \"old\"\nmatch = {{ path_prefix = \"/old/\" }}\n",
        upstream.url()
    );
    let gw = start(
        &main_file(""),
        &[("old.toml", &old), ("routes.toml", &routes(&["a"]))],
    )
    .await;
    let live = gw.dir().join("conf.d");
    let chat = serde_json::json!({"model": "m", "stream": true, "messages": []});
    let mut reader = Reader::post(gw.http, "/old/chat/completions", &chat).await;
    assert_eq!(reader.status, 200);
    let stream = upstream.next().await;
    stream
        .tx
        .send(Ok(Bytes::from_static(b"data: 1\n\n")))
        .await
        .unwrap();
    assert_eq!(
        reader.next().await.unwrap().as_deref(),
        Some(&b"data: 1\n\n"[..])
    );

    // The route and its cluster go; the stream they serve does not.
    let next = write_version(&live, "2", &[("routes.toml", &routes(&["a"]))]);
    assert_applied(&reload(&gw, "sluice", Some(&next)).await);
    get(&gw.url("/old/chat/completions"))
        .await
        .assert_error(404, "route_not_found");
    stream
        .tx
        .send(Ok(Bytes::from_static(b"data: 2\n\n")))
        .await
        .unwrap();
    stream
        .tx
        .send(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
        .await
        .unwrap();
    drop(stream);
    let (rest, err) = reader.rest().await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(rest, "data: 2\n\ndata: [DONE]\n\n");
    // Counted under the route it started on.
    let ok = r#"sluice_requests_total{cluster="old",route="old",status_class="2xx"}"#;
    eventually_metric(&gw, ok, 1.0).await;
    gw.stop().await;
}

async fn eventually_metric(gw: &Gateway, sample: &str, want: f64) {
    common::reload::eventually(sample, || async { gw.metric(sample).await == want }).await;
}

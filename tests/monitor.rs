//! The monitor port: health, readiness, status, metrics, and counters that move.

mod common;

use common::{get, post_json, Gateway, Upstream};

async fn gateway(upstream: &Upstream) -> Gateway {
    Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "models"
        backends = [{{ url = "{}", weight = 3 }}, {{ url = "mock://m?tokens=4" }}]
        [[routes]]
        name = "v1"
        cluster = "models"
        match = {{ path_prefix = "/v1/", methods = ["POST"] }}
        "#,
        upstream.url()
    ))
    .await
}

#[tokio::test]
async fn health_readiness_and_status() {
    let upstream = Upstream::echo("a").await;
    let gw = gateway(&upstream).await;

    let health = get(&gw.monitor_url("/healthz")).await;
    assert_eq!(health.status, 200);
    let ready = get(&gw.monitor_url("/readyz")).await;
    assert_eq!(ready.status, 200);

    let status = get(&gw.monitor_url("/status")).await.json();
    assert_eq!(status["ready"], true);
    assert_eq!(status["draining"], false);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["config_version"].as_str().unwrap().len(), 16);
    assert_eq!(status["routes"][0]["name"], "v1");
    assert_eq!(status["routes"][0]["cluster"], "models");
    assert_eq!(status["routes"][0]["path"]["value"], "/v1/");
    assert_eq!(status["routes"][0]["methods"][0], "POST");
    let backends = &status["clusters"][0]["backends"];
    assert_eq!(backends[0]["url"], upstream.url());
    assert_eq!(backends[0]["weight"], 3);
    assert_eq!(backends[1]["url"], "mock://m?tokens=4");

    get(&gw.monitor_url("/nope"))
        .await
        .assert_error(404, "not_found");
    post_json(&gw.monitor_url("/healthz"), &serde_json::json!({}))
        .await
        .assert_error(405, "method_not_allowed");
    gw.stop().await;
}

#[tokio::test]
async fn counters_move_when_requests_pass() {
    let upstream = Upstream::echo("a").await;
    let gw = gateway(&upstream).await;
    let ok = r#"sluice_requests_total{cluster="models",route="v1",status_class="2xx"}"#;
    let unmatched = r#"sluice_requests_total{cluster="",route="",status_class="4xx"}"#;
    let durations = r#"sluice_request_duration_seconds_count{route="v1"}"#;
    let upstream_durations = r#"sluice_upstream_duration_seconds_count{cluster="models"}"#;
    assert_eq!(gw.metric(ok).await, 0.0);

    let chat = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..4 {
        assert_eq!(
            post_json(&gw.url("/v1/chat/completions"), &chat)
                .await
                .status,
            200
        );
    }
    get(&gw.url("/v1/chat/completions"))
        .await
        .assert_error(404, "route_not_found");

    assert_eq!(gw.metric(ok).await, 4.0);
    assert_eq!(gw.metric(unmatched).await, 1.0);
    assert_eq!(gw.metric(durations).await, 4.0);
    assert_eq!(gw.metric(upstream_durations).await, 4.0);
    // Weights 3:1 over one whole cycle: three echoes, one mock answer.
    assert_eq!(upstream.seen().len(), 3);
    assert!(gw.metric("sluice_connections_total").await >= 5.0);
    assert_eq!(gw.metric("sluice_requests_in_flight").await, 0.0);
    let metrics = get(&gw.monitor_url("/metrics")).await;
    assert!(metrics.header("content-type").starts_with("text/plain"));
    let text = metrics.text();
    assert!(text.contains(&format!(
        "sluice_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(text.contains("sluice_open_connections"));
    assert!(text.contains("sluice_config_version_info{version="));
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_is_still_counted() {
    let (upstream, mut arrived) = Upstream::held(b"late").await;
    let gw = Gateway::start(&format!(
        "[[clusters]]\nname = \"slow\"\nbackends = [{{ url = \"{}\" }}]\n\
         [[routes]]\nname = \"all\"\ncluster = \"slow\"\n",
        upstream.url()
    ))
    .await;
    let client = tokio::spawn(common::raw(
        gw.http,
        b"GET /wait HTTP/1.1\r\nHost: h\r\n\r\n",
    ));
    let _release = arrived.recv().await.unwrap();
    assert_eq!(gw.metric("sluice_requests_in_flight").await, 1.0);
    client.abort();
    let gone = r#"sluice_requests_total{cluster="slow",route="all",status_class="4xx"}"#;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while gw.metric(gone).await != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request was never counted"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(gw.metric("sluice_requests_in_flight").await, 0.0);
    gw.stop().await;
}

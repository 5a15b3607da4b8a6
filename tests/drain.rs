//! Graceful shutdown of the real binary: SIGTERM drains requests in flight, refuses new
//! connections, fails readiness, and exits 0.

mod common;

use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use bytes::Bytes;
use common::binary::{self, signal};
use common::{get, Upstream};
use http_body_util::Full;

/// The binary, started with `toml` written to `dir/sluice.toml`.
fn spawn_gateway(dir: &std::path::Path, toml: &str) -> (Child, SocketAddr, SocketAddr) {
    let path = dir.join("sluice.toml");
    std::fs::write(&path, toml).unwrap();
    binary::spawn(&path)
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    // An upstream that holds each request until the test releases it.
    let (upstream, mut arrived) = Upstream::held(b"finished").await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, http, monitor) = spawn_gateway(
        dir.path(),
        &format!(
            "[server]\ndrain_timeout = \"30s\"\n[[clusters]]\nname = \"slow\"\n\
             backends = [{{ url = \"{}\" }}]\n[[routes]]\nname = \"all\"\ncluster = \"slow\"\n",
            upstream.url()
        ),
    );
    assert_eq!(get(&format!("http://{monitor}/readyz")).await.status, 200);

    // A request in flight, held by the upstream.
    let in_flight = tokio::spawn(async move { get(&format!("http://{http}/work")).await });
    let release = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .expect("the request never reached the upstream")
        .unwrap();

    signal(&child, "TERM");

    // Readiness fails and new connections are refused while the request is still held.
    wait_until(|| async { get(&format!("http://{monitor}/readyz")).await.status == 503 }).await;
    wait_until(|| async { tokio::net::TcpStream::connect(http).await.is_err() }).await;
    assert!(!in_flight.is_finished());

    // Released, the request finishes normally, marked as the connection's last.
    release.send(()).unwrap();
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "finished");
    assert_eq!(answer.header("connection"), "close");

    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sigterm_sends_goaway_to_http2_clients_and_lets_their_streams_finish() {
    let (upstream, mut arrived) = Upstream::held(b"finished").await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, http, _) = spawn_gateway(
        dir.path(),
        &format!(
            "[[clusters]]\nname = \"slow\"\nbackends = [{{ url = \"{}\" }}]\n\
             [[clusters]]\nname = \"fast\"\nbackends = [{{ url = \"mock://fast\" }}]\n\
             [[routes]]\nname = \"probe\"\ncluster = \"fast\"\nmatch = {{ path = \"/v1/models\" }}\n\
             [[routes]]\nname = \"all\"\ncluster = \"slow\"\n",
            upstream.url()
        ),
    );
    let stream = tokio::net::TcpStream::connect(http).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let request = |path: &str| {
        http::Request::get(format!("http://{http}{path}"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let in_flight = tokio::spawn(sender.clone().send_request(request("/work")));
    let release = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .expect("the request never reached the upstream")
        .unwrap();

    signal(&child, "TERM");
    // After GOAWAY the connection takes no new streams (probed on a route that answers at
    // once); the one in flight goes on.
    wait_until(|| {
        let next = sender.clone().send_request(request("/v1/models"));
        async move { next.await.is_err() }
    })
    .await;
    release.send(()).unwrap();
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight stream was cut");
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body.as_ref(), b"finished");
    conn.await.unwrap().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sigint_with_nothing_in_flight_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, http, _) = spawn_gateway(
        dir.path(),
        "[[clusters]]\nname = \"m\"\nbackends = [{ url = \"mock://m\" }]\n\
         [[routes]]\nname = \"all\"\ncluster = \"m\"\n",
    );
    let answer = common::post_json(
        &format!("http://{http}/v1/chat/completions"),
        &serde_json::json!({"model": "m", "messages": []}),
    )
    .await;
    assert_eq!(answer.status, 200);
    signal(&child, "INT");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Polls `condition` until it holds; fails after 10 s so a broken drain cannot hang the test.
async fn wait_until<F, Fut>(condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_request_still_running_at_the_drain_timeout_is_cut_and_the_process_exits() {
    let (upstream, mut arrived) = Upstream::held(b"too late").await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, http, _) = spawn_gateway(
        dir.path(),
        &format!(
            "[server]\ndrain_timeout = \"200ms\"\n[[clusters]]\nname = \"slow\"\n\
             backends = [{{ url = \"{}\" }}]\n[[routes]]\nname = \"all\"\ncluster = \"slow\"\n",
            upstream.url()
        ),
    );
    let in_flight = tokio::spawn(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let uri: http::Uri = format!("http://{http}/work").parse().unwrap();
        client.get(uri).await
    });
    let _release = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .expect("the request never reached the upstream")
        .unwrap();
    signal(&child, "TERM");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        in_flight.await.unwrap().is_err(),
        "the held request got an answer"
    );
}

#[tokio::test]
async fn shutdown_delay_keeps_accepting_while_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, http, monitor) = spawn_gateway(
        dir.path(),
        "[server]\nshutdown_delay = \"2s\"\n[[clusters]]\nname = \"m\"\n\
         backends = [{ url = \"mock://m\" }]\n[[routes]]\nname = \"all\"\ncluster = \"m\"\n",
    );
    signal(&child, "TERM");
    wait_until(|| async { get(&format!("http://{monitor}/readyz")).await.status == 503 }).await;
    // Not ready, yet still serving new connections until the delay ends.
    let answer = get(&format!("http://{http}/v1/models")).await;
    assert_eq!(answer.status, 200);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

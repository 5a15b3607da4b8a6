//! Upstream keep-alive: connections are reused, and closed ones are not.

mod common;

use bytes::Bytes;
use common::{get, Gateway, Upstream};
use http::Response;
use http_body_util::Full;

async fn gateway(upstream: &Upstream) -> Gateway {
    Gateway::start(&format!(
        "[[clusters]]\nname = \"a\"\nbackends = [{{ url = \"{}\" }}]\n\
         [[routes]]\nname = \"all\"\ncluster = \"a\"\n",
        upstream.url()
    ))
    .await
}

const CONNECTS: &str = r#"sluice_upstream_connects_total{cluster="a"}"#;

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let upstream = Upstream::echo("a").await;
    let gw = gateway(&upstream).await;
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/x")).await.status, 200);
    }
    assert_eq!(upstream.seen().len(), 20);
    assert_eq!(gw.metric(CONNECTS).await, 1.0);
    gw.stop().await;
}

#[tokio::test]
async fn pool_max_idle_zero_keeps_no_connection() {
    let upstream = Upstream::echo("a").await;
    let gw = Gateway::start(&format!(
        "[upstream]\npool_max_idle_per_host = 0\n[[clusters]]\nname = \"a\"\n\
         backends = [{{ url = \"{}\" }}]\n[[routes]]\nname = \"all\"\ncluster = \"a\"\n",
        upstream.url()
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/x")).await.status, 200);
    }
    assert_eq!(gw.metric(CONNECTS).await, 3.0);
    gw.stop().await;
}

#[tokio::test]
async fn a_connection_the_backend_closes_is_not_reused() {
    let upstream = Upstream::start(|_| async {
        Response::builder()
            .header("connection", "close")
            .body(Full::new(Bytes::from_static(b"bye")))
            .unwrap()
    })
    .await;
    let gw = gateway(&upstream).await;
    for _ in 0..5 {
        let answer = get(&gw.url("/x")).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.text(), "bye");
    }
    assert_eq!(gw.metric(CONNECTS).await, 5.0);
    gw.stop().await;
}

#[tokio::test]
async fn concurrent_requests_open_connections_that_are_then_reused() {
    let upstream = Upstream::echo("a").await;
    let gw = gateway(&upstream).await;
    let burst = || async {
        let requests: Vec<_> = (0..8)
            .map(|_| tokio::spawn(get_owned(gw.url("/x"))))
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap(), 200);
        }
    };
    burst().await;
    let after_first = gw.metric(CONNECTS).await;
    assert!((1.0..=8.0).contains(&after_first), "{after_first}");
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/x")).await.status, 200);
    }
    // Sequential requests after the burst find idle connections and open none.
    assert_eq!(gw.metric(CONNECTS).await, after_first);
    gw.stop().await;
}

async fn get_owned(url: String) -> u16 {
    get(&url).await.status.as_u16()
}

//! Retries, the retry budget, fallback clusters, provider-key rotation and per-backend
//! concurrency caps, through a real gateway to real upstreams on 127.0.0.1.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{get, post_json, Gateway, Reader, StreamUpstream, Upstream};
use http::Response;
use http_body_util::Full;
use serde_json::json;
use tokio::net::TcpSocket;
use tokio::time::timeout;

const HANG_GUARD: Duration = Duration::from_secs(10);

/// An address that refuses connections: a bound socket that does not listen (it keeps the
/// port, so nothing else can take it meanwhile).
fn refusing() -> (TcpSocket, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", socket.local_addr().unwrap());
    (socket, url)
}

/// An upstream answering every request with `status` and `x-upstream: name`, counting them.
async fn answering(name: &'static str, status: u16) -> (Upstream, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    let upstream = Upstream::start(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            Response::builder()
                .status(status)
                .header("x-upstream", name)
                .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
                .unwrap()
        }
    })
    .await;
    (upstream, count)
}

fn chat() -> serde_json::Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn a_failed_attempt_is_retried_on_another_backend() {
    let (_socket, refused) = refusing();
    let (unavailable, unavailable_count) = answering("unavailable", 503).await;
    let (good, good_count) = answering("good", 200).await;
    let gw = Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "c"
        backends = [{{ url = "{refused}" }}, {{ url = "{}" }}, {{ url = "{}" }}]
        retry = {{ attempts = 3, budget_min_per_second = 100 }}
        outlier = {{ consecutive_failures = 0 }}

        [[routes]]
        name = "r"
        cluster = "c"
        "#,
        unavailable.url(),
        good.url()
    ))
    .await;
    for _ in 0..12 {
        let answer = post_json(&gw.url("/v1/chat/completions"), &chat()).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.header("x-upstream"), "good");
    }
    assert_eq!(good_count.load(Ordering::SeqCst), 12);
    // Each try went to a different backend: the bad ones were tried, and retried away from.
    assert!(unavailable_count.load(Ordering::SeqCst) >= 4);
    let connect = gw
        .metric(r#"sluice_upstream_retries_total{cluster="c",reason="connect"}"#)
        .await;
    let status = gw
        .metric(r#"sluice_upstream_retries_total{cluster="c",reason="status"}"#)
        .await;
    assert!(connect >= 4.0 && status >= 4.0, "{connect} {status}");
    gw.stop().await;
}

#[tokio::test]
async fn a_try_past_its_per_try_timeout_is_retried_with_the_same_body() {
    // `silent` reads each request and never answers; `echo` answers with what it received.
    let silent = Upstream::start(|_| std::future::pending()).await;
    let echo = Upstream::echo("echo").await;
    let gw = Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "c"
        backends = [{{ url = "{}" }}, {{ url = "{}" }}]
        retry = {{ attempts = 2, per_try_timeout = "300ms", budget_min_per_second = 100 }}
        outlier = {{ consecutive_failures = 0 }}

        [[routes]]
        name = "r"
        cluster = "c"
        "#,
        silent.url(),
        echo.url()
    ))
    .await;
    for n in 0..6 {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": format!("question {n}")}]});
        let answer = timeout(
            HANG_GUARD,
            post_json(&gw.url("/v1/chat/completions"), &body),
        )
        .await
        .expect("hang");
        assert_eq!(answer.status, 200, "{}", answer.text());
        let sent: serde_json::Value =
            serde_json::from_str(answer.json()["body"].as_str().unwrap()).unwrap();
        assert_eq!(sent, body, "the retried attempt carried another body");
    }
    // Round-robin alternates, so the silent backend had some first tries, each with the
    // body the echo then got.
    let silent_bodies: Vec<serde_json::Value> = silent
        .seen()
        .iter()
        .map(|seen| serde_json::from_slice(&seen.body).unwrap())
        .collect();
    assert!(silent_bodies.len() >= 2, "{silent_bodies:?}");
    let echoed: Vec<serde_json::Value> = echo
        .seen()
        .iter()
        .map(|seen| serde_json::from_slice(&seen.body).unwrap())
        .collect();
    assert!(
        silent_bodies.iter().all(|b| echoed.contains(b)),
        "{silent_bodies:?}"
    );
    let timeouts = gw
        .metric(r#"sluice_upstream_retries_total{cluster="c",reason="timeout"}"#)
        .await;
    assert_eq!(timeouts, silent_bodies.len() as f64);
    gw.stop().await;
}

#[tokio::test]
async fn nothing_is_retried_once_the_answer_has_started() {
    let mut streaming = StreamUpstream::start().await;
    let (other, other_count) = answering("other", 200).await;
    let gw = Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "c"
        backends = [{{ url = "{}" }}, {{ url = "{}" }}]
        retry = {{ attempts = 2, budget_min_per_second = 100 }}

        [[routes]]
        name = "r"
        cluster = "c"
        "#,
        streaming.url(),
        other.url()
    ))
    .await;
    let body = json!({"model": "m", "stream": true, "messages": []});
    // Round-robin alternates between the two: within two requests one reaches the stream.
    let mut reader = None;
    for _ in 0..2 {
        let r = timeout(
            HANG_GUARD,
            Reader::post(gw.http, "/v1/chat/completions", &body),
        )
        .await
        .expect("hang");
        if r.headers.get("x-upstream").is_none() {
            reader = Some(r);
            break;
        }
    }
    let mut reader = reader.expect("no request reached the streaming backend");
    let before = other_count.load(Ordering::SeqCst);
    let stream = timeout(HANG_GUARD, streaming.next()).await.expect("hang");
    stream
        .tx
        .send(Ok(Bytes::from_static(b"data: {\"choices\":[]}\n\n")))
        .await
        .unwrap();
    // The first bytes reach the client; then the backend fails.
    let first = timeout(HANG_GUARD, reader.next()).await.expect("hang");
    assert_eq!(
        first.unwrap().as_deref(),
        Some(&b"data: {\"choices\":[]}\n\n"[..])
    );
    stream
        .tx
        .send(Err(std::io::Error::other("backend crashed")))
        .await
        .unwrap();
    let (rest, error) = timeout(HANG_GUARD, reader.rest()).await.expect("hang");
    assert_eq!(rest, "");
    assert!(error.is_some(), "a cut stream must not end cleanly");
    // The failure came after the head: no other backend was asked.
    assert_eq!(other_count.load(Ordering::SeqCst), before);
    let retries = gw
        .metric(r#"sluice_upstream_retries_total{cluster="c",reason="status"}"#)
        .await
        + gw.metric(r#"sluice_upstream_retries_total{cluster="c",reason="connect"}"#)
            .await;
    assert_eq!(retries, 0.0);
    gw.stop().await;
}

#[tokio::test]
async fn the_retry_budget_caps_retries() {
    let (a, a_count) = answering("a", 503).await;
    let (b, b_count) = answering("b", 503).await;
    let gw = Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "c"
        backends = [{{ url = "{}" }}, {{ url = "{}" }}]
        retry = {{ attempts = 3, budget_ratio = 0.1, budget_min_per_second = 0 }}
        outlier = {{ consecutive_failures = 0 }}

        [[routes]]
        name = "r"
        cluster = "c"
        "#,
        a.url(),
        b.url()
    ))
    .await;
    for _ in 0..10 {
        let answer = post_json(&gw.url("/v1/chat/completions"), &chat()).await;
        assert_eq!(answer.status, 503);
    }
    // Without a budget each request would try both backends (20 in all). A tenth of ten
    // requests is one retry: the tenth request's. The nine before were refused one.
    let total = a_count.load(Ordering::SeqCst) + b_count.load(Ordering::SeqCst);
    assert_eq!(total, 11);
    assert_eq!(
        gw.metric(r#"sluice_retry_budget_exhausted_total{cluster="c"}"#)
            .await,
        9.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_fallback_cluster_takes_what_the_primary_cannot() {
    let (_socket, refused) = refusing();
    let (backup, backup_count) = answering("backup", 200).await;
    let (down, down_count) = answering("down", 503).await;
    let gw = Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "primary"
        backends = [{{ url = "{refused}" }}]

        [[clusters]]
        name = "exhausted"
        backends = [{{ url = "{}" }}]
        outlier = {{ consecutive_failures = 0 }}

        [[clusters]]
        name = "backup"
        backends = [{{ url = "{}" }}]

        [[routes]]
        name = "refused"
        cluster = "primary"
        fallbacks = ["backup"]
        match = {{ path_prefix = "/a/" }}

        [[routes]]
        name = "unavailable"
        cluster = "exhausted"
        fallbacks = ["backup"]
        match = {{ path_prefix = "/b/" }}
        "#,
        down.url(),
        backup.url()
    ))
    .await;
    // The primary cannot be reached: the fallback answers.
    let answer = post_json(&gw.url("/a/v1/chat/completions"), &chat()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-upstream"), "backup");
    // The primary answered 503 on its only attempt: the fallback answers.
    let answer = post_json(&gw.url("/b/v1/chat/completions"), &chat()).await;
    assert_eq!(answer.header("x-upstream"), "backup");
    assert_eq!(down_count.load(Ordering::SeqCst), 1);
    assert_eq!(backup_count.load(Ordering::SeqCst), 2);
    assert_eq!(
        gw.metric(r#"sluice_fallbacks_total{cluster="backup",route="refused"}"#)
            .await,
        1.0
    );
    // The access log and the requests counter name the cluster that served.
    assert_eq!(
        gw.metric(
            r#"sluice_requests_total{cluster="backup",route="unavailable",status_class="2xx"}"#
        )
        .await,
        1.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_primary_with_no_healthy_backend_is_skipped() {
    // Fails its health checks; counts the other requests it gets.
    let served = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&served);
    let sick = Upstream::start(move |seen| {
        let status = if seen.uri == "/health" {
            500
        } else {
            s.fetch_add(1, Ordering::SeqCst);
            200
        };
        async move {
            Response::builder()
                .status(status)
                .header("x-upstream", "sick")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap()
        }
    })
    .await;
    let (backup, _) = answering("backup", 200).await;
    let sick_url = sick.url();
    let gw = Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "primary"
        backends = [{{ url = "{sick_url}" }}]
        panic_mode = "try_all"
        health_check = {{ path = "/health", interval = "50ms", unhealthy_threshold = 1 }}

        [[clusters]]
        name = "backup"
        backends = [{{ url = "{}" }}]

        [[routes]]
        name = "r"
        cluster = "primary"
        fallbacks = ["backup"]
        "#,
        backup.url()
    ))
    .await;
    let metric = format!(r#"sluice_backend_healthy{{backend="{sick_url}",cluster="primary"}}"#);
    timeout(HANG_GUARD, async {
        while gw.metric(&metric).await != 0.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the check never took the backend down");
    for _ in 0..5 {
        let answer = get(&gw.url("/v1/models")).await;
        assert_eq!(answer.header("x-upstream"), "backup");
    }
    // A fallback comes before panic mode: the sick backend got no request.
    assert_eq!(served.load(Ordering::SeqCst), 0);
    gw.stop().await;
}

#[tokio::test]
async fn a_429_moves_to_the_next_provider_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key-a"), "sk-aaa\n").unwrap();
    std::fs::write(dir.path().join("key-b"), "sk-bbb").unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&seen);
    let provider = Upstream::start(move |request| {
        let auth = request.headers["authorization"]
            .to_str()
            .unwrap()
            .to_owned();
        log.lock().unwrap().push(auth.clone());
        async move {
            let status = if auth == "Bearer sk-aaa" { 429 } else { 200 };
            Response::builder()
                .status(status)
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap()
        }
    })
    .await;
    let gw = Gateway::start_in(
        dir,
        &format!(
            r#"
            [[clusters]]
            name = "provider"
            backends = [{{ url = "{}" }}]
            retry = {{ attempts = 2 }}
            credentials = {{ keys = [{{ file = "key-a" }}, {{ file = "key-b" }}], cooldown = "1h" }}

            [[routes]]
            name = "r"
            cluster = "provider"
            "#,
            provider.url()
        ),
    )
    .await;
    for _ in 0..10 {
        let answer = common::send(
            http::Request::post(gw.url("/v1/chat/completions"))
                .header("authorization", "Bearer client-key")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(chat().to_string())))
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let seen = seen.lock().unwrap().clone();
    // Key a was used once, got its 429, and rests for an hour; b did the rest. The
    // client's own key never left the gateway.
    assert_eq!(
        seen.iter().filter(|k| *k == "Bearer sk-aaa").count(),
        1,
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|k| *k == "Bearer sk-bbb").count(),
        10,
        "{seen:?}"
    );
    assert_eq!(
        gw.metric(r#"sluice_upstream_key_rotations_total{cluster="provider"}"#)
            .await,
        1.0
    );
    // /status names where the keys are, never what they are.
    let status = get(&gw.monitor_url("/status")).await.text();
    assert!(
        status.contains("key-a") && !status.contains("sk-aaa"),
        "{status}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_concurrency_cap_queues_then_refuses() {
    let mut upstream = StreamUpstream::start().await;
    let url = upstream.url();
    let gw = Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "c"
        backends = [{{ url = "{url}" }}]
        max_in_flight = 1
        max_queue = 1
        queue_timeout = "30s"

        [[routes]]
        name = "r"
        cluster = "c"
        "#
    ))
    .await;
    let body = json!({"model": "m", "stream": true, "messages": []});
    // The first request takes the one slot and holds it while its stream is open.
    let mut first = timeout(
        HANG_GUARD,
        Reader::post(gw.http, "/v1/chat/completions", &body),
    )
    .await
    .expect("hang");
    let first_stream = timeout(HANG_GUARD, upstream.next()).await.expect("hang");
    // The second waits in the queue.
    let http = gw.http;
    let second_body = body.clone();
    let second = tokio::spawn(async move {
        let mut reader = Reader::post(http, "/v1/chat/completions", &second_body).await;
        let status = reader.status;
        (status, reader.rest().await.0)
    });
    let queued = format!(r#"sluice_backend_queued_requests{{backend="{url}",cluster="c"}}"#);
    timeout(HANG_GUARD, async {
        while gw.metric(&queued).await != 1.0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the second request never queued");
    // The third finds the queue full: 503 at once, with Retry-After.
    let third = post_json(&gw.url("/v1/chat/completions"), &body).await;
    third.assert_error(503, "backend_overloaded");
    assert_eq!(third.header("retry-after"), "1");
    assert_eq!(
        gw.metric(r#"sluice_backend_overloaded_total{cluster="c"}"#)
            .await,
        1.0
    );
    // The first stream ends; its slot goes to the queued request.
    first_stream
        .tx
        .send(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
        .await
        .unwrap();
    drop(first_stream);
    assert_eq!(first.rest().await.0, "data: [DONE]\n\n");
    let second_stream = timeout(HANG_GUARD, upstream.next()).await.expect("hang");
    second_stream
        .tx
        .send(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
        .await
        .unwrap();
    drop(second_stream);
    let (status, text) = timeout(HANG_GUARD, second).await.expect("hang").unwrap();
    assert_eq!(status, 200);
    assert_eq!(text, "data: [DONE]\n\n");
    gw.stop().await;
}

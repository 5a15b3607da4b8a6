//! Backend health through a real gateway: active checks take a backend out and bring it
//! back, passive outlier detection ejects one that keeps failing, a `Retry-After` pauses
//! one, and `panic_mode` decides what happens when none is healthy. Each state change is
//! waited for on `/status` or `/metrics` with a bounded deadline, never a fixed sleep.
//! (The growing backoff of repeated ejections is a paused-time unit test in
//! `src/upstream/health/tests.rs`.)

mod common;

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{drain, get, open, Gateway, RawUpstream, Script, Upstream};
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use tokio::time::timeout;

/// Long enough for a few checks at 50 ms on a loaded machine; only a guard against hangs.
const DEADLINE: Duration = Duration::from_secs(10);

/// An upstream that answers `/health` with the status in `health`, and everything else
/// with 200 and `x-upstream: name`; it counts the requests that are not checks.
struct Switchable {
    upstream: Upstream,
    health: Arc<AtomicU16>,
    served: Arc<AtomicUsize>,
}

async fn switchable(name: &'static str, status: u16) -> Switchable {
    let health = Arc::new(AtomicU16::new(status));
    let served = Arc::new(AtomicUsize::new(0));
    let (h, s) = (Arc::clone(&health), Arc::clone(&served));
    let upstream = Upstream::start(move |seen| {
        let status = if seen.uri == "/health" {
            h.load(Ordering::SeqCst)
        } else {
            s.fetch_add(1, Ordering::SeqCst);
            200
        };
        async move {
            Response::builder()
                .status(status)
                .header("x-upstream", name)
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap()
        }
    })
    .await;
    Switchable {
        upstream,
        health,
        served,
    }
}

/// The `/status` entry of backend `url` in cluster `cluster`.
async fn backend_status(gw: &Gateway, cluster: &str, url: &str) -> serde_json::Value {
    let status = get(&gw.monitor_url("/status")).await.json();
    status["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == cluster)
        .and_then(|c| c["backends"].as_array())
        .and_then(|b| b.iter().find(|b| b["url"] == url))
        .cloned()
        .unwrap_or_else(|| panic!("no backend {url} in {status}"))
}

/// Waits until backend `url` reports `healthy`.
async fn wait_healthy(gw: &Gateway, cluster: &str, url: &str, healthy: bool) {
    timeout(DEADLINE, async {
        while backend_status(gw, cluster, url).await["healthy"] != healthy {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{url} never became healthy = {healthy}"));
}

async fn who_answers(gw: &Gateway, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..n {
        let answer = get(&gw.url("/v1/x")).await;
        names.push(format!(
            "{} {}",
            answer.status.as_u16(),
            answer.header("x-upstream")
        ));
    }
    names
}

#[tokio::test]
async fn active_checks_mark_a_backend_down_and_up_again() {
    let a = switchable("a", 200).await;
    let b = switchable("b", 200).await;
    let (url_a, url_b) = (a.upstream.url(), b.upstream.url());
    let gw = Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "c"
        backends = [{{ url = "{url_a}" }}, {{ url = "{url_b}" }}]
        health_check = {{ path = "/health", interval = "50ms", timeout = "1s", healthy_threshold = 2, unhealthy_threshold = 2 }}

        [[routes]]
        name = "r"
        cluster = "c"
        "#
    ))
    .await;
    let metric = format!(r#"sluice_backend_healthy{{backend="{url_a}",cluster="c"}}"#);
    wait_healthy(&gw, "c", &url_a, true).await;
    assert_eq!(gw.metric(&metric).await, 1.0);

    a.health.store(503, Ordering::SeqCst);
    wait_healthy(&gw, "c", &url_a, false).await;
    let entry = backend_status(&gw, "c", &url_a).await;
    assert_eq!(entry["down_reason"], "health_check");
    assert_eq!(gw.metric(&metric).await, 0.0);
    let before = a.served.load(Ordering::SeqCst);
    assert!(who_answers(&gw, 10).await.iter().all(|n| n == "200 b"));
    assert_eq!(
        a.served.load(Ordering::SeqCst),
        before,
        "a down backend got traffic"
    );

    a.health.store(200, Ordering::SeqCst);
    wait_healthy(&gw, "c", &url_a, true).await;
    assert_eq!(gw.metric(&metric).await, 1.0);
    let answers = who_answers(&gw, 10).await;
    assert!(answers.iter().any(|n| n == "200 a"), "{answers:?}");
    assert!(
        gw.metric(r#"sluice_health_checks_total{cluster="c",result="failed"}"#)
            .await
            >= 2.0
    );
    gw.stop().await;
}

/// An upstream that answers every request with `status` (and `extra` headers), counting them.
async fn answering(
    status: u16,
    extra: &'static [(&'static str, &'static str)],
) -> (Upstream, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    let upstream = Upstream::start(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut response = Response::builder()
                .status(status)
                .header("x-upstream", status.to_string());
            for (k, v) in extra {
                response = response.header(*k, *v);
            }
            response.body(Full::new(Bytes::from_static(b"{}"))).unwrap()
        }
    })
    .await;
    (upstream, count)
}

#[tokio::test]
async fn consecutive_failures_eject_a_backend() {
    let (bad, bad_count) = answering(500, &[]).await;
    let (good, _) = answering(200, &[]).await;
    let bad_url = bad.url();
    let gw = Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "c"
        backends = [{{ url = "{bad_url}" }}, {{ url = "{}" }}]
        outlier = {{ consecutive_failures = 3, base_ejection = "1h", max_ejection = "2h" }}

        [[routes]]
        name = "r"
        cluster = "c"
        "#,
        good.url()
    ))
    .await;
    // Round-robin alternates: the bad backend fails its three, then is out for an hour.
    let answers = who_answers(&gw, 30).await;
    assert_eq!(bad_count.load(Ordering::SeqCst), 3, "{answers:?}");
    assert_eq!(answers.iter().filter(|n| *n == "500 500").count(), 3);
    let entry = backend_status(&gw, "c", &bad_url).await;
    assert_eq!(entry["healthy"], false);
    assert_eq!(entry["down_reason"], "ejected");
    assert!(entry["down_for_ms"].as_u64().unwrap() > 3_000_000);
    let ejections = format!(r#"sluice_backend_ejections_total{{backend="{bad_url}",cluster="c"}}"#);
    assert_eq!(gw.metric(&ejections).await, 1.0);
    gw.stop().await;
}

#[tokio::test]
async fn streams_cut_after_their_head_eject_a_backend() {
    // A 200 head, then the connection closes 7 bytes into a 100-byte body: what a backend
    // whose engine died behind a streaming answer looks like.
    let mut cut = RawUpstream::start(Script::ReplyThenClose(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\nx-upstream: cut\r\n\r\npartial",
    ))
    .await;
    let (good, _) = answering(200, &[]).await;
    let cut_url = cut.url();
    let gw = Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "c"
        backends = [{{ url = "{cut_url}" }}, {{ url = "{}" }}]
        outlier = {{ consecutive_failures = 3, base_ejection = "1h", max_ejection = "2h" }}

        [[routes]]
        name = "r"
        cluster = "c"
        "#,
        good.url()
    ))
    .await;
    let mut cut_answers = 0;
    for _ in 0..30 {
        let response = open(
            Request::get(gw.url("/v1/x"))
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await;
        assert_eq!(response.status(), 200);
        let from_cut = response.headers()["x-upstream"] == "cut";
        let (_, error) = drain(response.into_body()).await;
        assert_eq!(
            error.is_some(),
            from_cut,
            "only the cut backend's answers fail"
        );
        cut_answers += usize::from(from_cut);
    }
    // Round-robin alternates: three cut streams in a row eject it for an hour.
    assert_eq!(cut_answers, 3);
    for _ in 0..3 {
        timeout(DEADLINE, cut.next_head())
            .await
            .expect("three heads");
    }
    let entry = backend_status(&gw, "c", &cut_url).await;
    assert_eq!(entry["down_reason"], "ejected");
    gw.stop().await;
}

#[tokio::test]
async fn retry_after_pauses_a_backend() {
    let (busy, busy_count) = answering(503, &[("retry-after", "3600")]).await;
    let (good, _) = answering(200, &[]).await;
    let busy_url = busy.url();
    let gw = Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "c"
        backends = [{{ url = "{busy_url}" }}, {{ url = "{}" }}]
        outlier = {{ consecutive_failures = 0 }}

        [[routes]]
        name = "r"
        cluster = "c"
        "#,
        good.url()
    ))
    .await;
    let answers = who_answers(&gw, 10).await;
    // Its first answer paused it (ejection is off, so this is the pause alone).
    assert_eq!(busy_count.load(Ordering::SeqCst), 1, "{answers:?}");
    let entry = backend_status(&gw, "c", &busy_url).await;
    assert_eq!(entry["down_reason"], "retry_after");
    gw.stop().await;
}

#[tokio::test]
async fn with_no_healthy_backend_panic_mode_decides() {
    let a = switchable("a", 500).await;
    let url = a.upstream.url();
    let config = |mode: &str| {
        format!(
            r#"
            [[clusters]]
            name = "c"
            backends = [{{ url = "{url}" }}]
            panic_mode = "{mode}"
            health_check = {{ interval = "50ms", unhealthy_threshold = 1 }}

            [[routes]]
            name = "r"
            cluster = "c"
            "#
        )
    };
    let fail = Gateway::start(&config("fail")).await;
    wait_healthy(&fail, "c", &url, false).await;
    get(&fail.url("/v1/x"))
        .await
        .assert_error(503, "no_healthy_backend");
    assert_eq!(a.served.load(Ordering::SeqCst), 0);
    fail.stop().await;

    let try_all = Gateway::start(&config("try_all")).await;
    wait_healthy(&try_all, "c", &url, false).await;
    let answer = get(&try_all.url("/v1/x")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(a.served.load(Ordering::SeqCst), 1);
    try_all.stop().await;
}

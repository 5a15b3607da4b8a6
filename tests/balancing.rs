//! Traffic splits between clusters and the distribution of each load-balancing policy,
//! through a real gateway to in-process mock backends (which name themselves in
//! `x-sluice-mock`).
//!
//! Shares are exact where the scheme is deterministic (weighted round-robin over whole
//! cycles); for random choices the RNG of the test's thread, which also runs the gateway
//! (a current-thread runtime), is seeded, and the tolerance is still five standard
//! deviations wide.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{post_json, send, Gateway, Reader};
use http::Request;
use http_body_util::Full;
use serde_json::json;
use tokio::time::timeout;

const HANG_GUARD: Duration = Duration::from_secs(10);

fn chat() -> serde_json::Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
}

/// Sends `n` chat requests (with `headers`) and counts who answered.
async fn tally(gw: &Gateway, n: usize, headers: &[(&str, &str)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let mut req = Request::post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let answer = send(
            req.body(Full::new(Bytes::from(chat().to_string())))
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        *counts
            .entry(answer.header("x-sluice-mock").to_owned())
            .or_insert(0) += 1;
    }
    counts
}

/// One cluster `c` of mock backends `(name, weight)` with `lb`, and a route to it.
fn cluster(lb: &str, backends: &[(&str, u32)], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(n, w)| format!("{{ url = \"mock://{n}\", weight = {w} }}"))
        .collect();
    format!(
        "[[clusters]]\nname = \"c\"\nlb = \"{lb}\"\nbackends = [{}]\n{extra}\n\
         [[routes]]\nname = \"r\"\ncluster = \"c\"\n",
        list.join(", ")
    )
}

#[tokio::test]
async fn a_split_sends_each_cluster_its_share() {
    let gw = Gateway::start(
        r#"
        [[clusters]]
        name = "stable"
        backends = [{ url = "mock://stable" }]
        model_rewrite = { aliases = { "m" = "m-v1" } }

        [[clusters]]
        name = "canary"
        backends = [{ url = "mock://canary" }]
        model_rewrite = { aliases = { "m" = "m-v2" } }

        [[routes]]
        name = "chat"
        clusters = [{ name = "stable", weight = 90 }, { name = "canary", weight = 10 }]
        "#,
    )
    .await;
    let counts = tally(&gw, 1000, &[]).await;
    // Smooth weighted round-robin over clusters: exact over whole cycles of ten.
    assert_eq!(counts["stable"], 900, "{counts:?}");
    assert_eq!(counts["canary"], 100, "{counts:?}");
    // Each cluster saw its own model name, and the metrics name the cluster that served.
    let answer = post_json(&gw.url("/v1/chat/completions"), &chat()).await;
    let model = answer.json()["model"].as_str().unwrap().to_owned();
    assert!(model == "m-v1" || model == "m-v2", "{model}");
    let stable = r#"sluice_requests_total{cluster="stable",route="chat",status_class="2xx"}"#;
    let canary = r#"sluice_requests_total{cluster="canary",route="chat",status_class="2xx"}"#;
    assert_eq!(gw.metric(stable).await + gw.metric(canary).await, 1001.0);
    assert!(gw.metric(canary).await >= 100.0);
    gw.stop().await;
}

#[tokio::test]
async fn round_robin_follows_weights_exactly() {
    let gw = Gateway::start(&cluster("round_robin", &[("a", 3), ("b", 1)], "")).await;
    let counts = tally(&gw, 400, &[]).await;
    assert_eq!((counts["a"], counts["b"]), (300, 100), "{counts:?}");
    gw.stop().await;
}

#[tokio::test]
async fn random_follows_weights_within_five_deviations() {
    fastrand::seed(7);
    let gw = Gateway::start(&cluster("random", &[("a", 1), ("b", 3)], "")).await;
    let counts = tally(&gw, 1000, &[]).await;
    // 250 expected for `a`; one standard deviation is about 14.
    let a = counts["a"];
    assert!((180..=320).contains(&a), "{counts:?}");
    gw.stop().await;
}

#[tokio::test]
async fn least_request_spreads_short_requests_evenly() {
    fastrand::seed(11);
    let gw = Gateway::start(&cluster(
        "least_request",
        &[("a", 1), ("b", 1), ("c", 1)],
        "",
    ))
    .await;
    let counts = tally(&gw, 600, &[]).await;
    for name in ["a", "b", "c"] {
        // 200 expected each; about 12 is one standard deviation.
        assert!((140..=260).contains(&counts[name]), "{counts:?}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn least_request_prefers_the_backend_with_fewer_open_streams() {
    let gw = Gateway::start(&cluster("least_request", &[("a", 1), ("b", 1)], "")).await;
    // Five streams that stay open: their first token is an hour away.
    let mut held = Vec::new();
    let mut streams: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..5 {
        let reader = timeout(
            HANG_GUARD,
            Reader::post_with(
                gw.http,
                "/v1/chat/completions",
                &json!({"model": "m", "stream": true, "messages": []}),
                &[("x-mock-delay", "1h")],
            ),
        )
        .await
        .expect("hang");
        assert_eq!(reader.status, 200);
        let by = reader.headers["x-sluice-mock"].to_str().unwrap().to_owned();
        *streams.entry(by).or_insert(0) += 1;
        held.push(reader);
    }
    // Two backends are always compared, so the streams alternate: 3 and 2.
    let (busy, idle) = if streams.get("a") == Some(&3) {
        ("a", "b")
    } else {
        ("b", "a")
    };
    assert_eq!((streams[busy], streams[idle]), (3, 2), "{streams:?}");
    // Every short request goes to the backend with fewer open streams.
    let counts = tally(&gw, 20, &[]).await;
    assert_eq!(counts.get(idle), Some(&20), "{counts:?}");
    let in_flight =
        format!(r#"sluice_backend_requests_in_flight{{backend="mock://{busy}",cluster="c"}}"#);
    assert_eq!(gw.metric(&in_flight).await, 3.0);

    // Streams count until they end: once they are gone, the load is even again.
    drop(held);
    let gone =
        format!(r#"sluice_backend_requests_in_flight{{backend="mock://{busy}",cluster="c"}}"#);
    timeout(HANG_GUARD, async {
        while gw.metric(&gone).await != 0.0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the closed streams never left the in-flight count");
    let counts = tally(&gw, 20, &[]).await;
    assert!(counts.get(busy).is_some_and(|&n| n > 0), "{counts:?}");
    gw.stop().await;
}

#[tokio::test]
async fn consistent_hashing_keeps_each_key_on_its_backend() {
    let gw = Gateway::start(&cluster(
        "consistent_hash",
        &[("a", 1), ("b", 1), ("c", 1)],
        r#"hash_on = "header:x-session""#,
    ))
    .await;
    let mut homes = BTreeMap::new();
    for session in 0..30 {
        let session = format!("s{session}");
        let counts = tally(&gw, 5, &[("x-session", &session)]).await;
        assert_eq!(counts.len(), 1, "session {session} moved: {counts:?}");
        homes.insert(session, counts.into_keys().next().unwrap());
    }
    // Thirty sessions do not all land on one backend.
    let used: std::collections::BTreeSet<_> = homes.values().collect();
    assert!(used.len() >= 2, "{homes:?}");
    gw.stop().await;
}

#[tokio::test]
async fn client_ip_hashing_behind_a_trusted_proxy_follows_x_forwarded_for() {
    // Every request comes from 127.0.0.1, the trusted proxy; the clients are the addresses
    // it forwards for.
    let config = cluster(
        "consistent_hash",
        &[("a", 1), ("b", 1), ("c", 1)],
        r#"hash_on = "client_ip""#,
    ) + "\n[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n";
    let gw = Gateway::start(&config).await;
    let mut homes = BTreeMap::new();
    for client in 0..30 {
        let forwarded = format!("203.0.113.{client}, 127.0.0.1");
        let counts = tally(&gw, 3, &[("x-forwarded-for", &forwarded)]).await;
        assert_eq!(counts.len(), 1, "client {client} moved: {counts:?}");
        homes.insert(client, counts.into_keys().next().unwrap());
    }
    let used: std::collections::BTreeSet<_> = homes.values().collect();
    assert!(used.len() >= 2, "all clients hashed as one: {homes:?}");
    gw.stop().await;
}

#[tokio::test]
async fn prompt_hashing_sends_a_shared_prefix_to_one_backend() {
    let gw = Gateway::start(&cluster(
        "consistent_hash",
        &[("a", 1), ("b", 1), ("c", 1), ("d", 1)],
        "hash_on = \"prompt\"\nhash_prompt_bytes = 64",
    ))
    .await;
    let system = "You are a helpful assistant for ACME Corp. Answer briefly and politely.";
    let mut served = std::collections::BTreeSet::new();
    for question in 0..20 {
        let body = json!({
            "model": "m",
            "max_tokens": 1,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": format!("question {question}")},
            ],
        });
        let answer = post_json(&gw.url("/v1/chat/completions"), &body).await;
        assert_eq!(answer.status, 200);
        served.insert(answer.header("x-sluice-mock").to_owned());
    }
    assert_eq!(served.len(), 1, "{served:?}");
    gw.stop().await;
}

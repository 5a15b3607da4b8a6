//! Local rate limits through a real gateway: exact 429 answers and `x-ratelimit-*` headers,
//! token reservations settled to the usage of streamed and non-streamed answers, in-flight
//! caps, client addresses from trusted proxies, and the memory bound under a flood of keys.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{send, Answer, Gateway, Reader};
use http::Request;
use http_body_util::Full;
use serde_json::json;
use sluice::proxy::auth::KeyHash;

/// Generous guard against hangs; no assertion depends on it.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn sha(key: &str) -> String {
    hex::encode(KeyHash::of(key.as_bytes()).0)
}

/// A mock cluster, route `chat` (key required, `limits`), consumers alpha and beta.
fn config(limits: &str, route_limits: &str, extra: &str) -> String {
    format!(
        r#"
        {extra}

        [[clusters]]
        name = "mock"
        backends = [{{ url = "mock://m?tokens=7" }}]

        [[routes]]
        name = "chat"
        cluster = "mock"
        auth = "required"
        include_usage = true
        limits = [{route_limits}]
        [routes.match]
        path_prefix = "/v1/"

        [[routes]]
        name = "free"
        cluster = "mock"
        rewrite_prefix = "/"
        [routes.match]
        path_prefix = "/free/"

        [[consumers]]
        name = "alpha"
        key_sha256 = "{alpha}"

        [[consumers]]
        name = "beta"
        key_sha256 = "{beta}"

        {limits}
        "#,
        alpha = sha("sk-alpha"),
        beta = sha("sk-beta"),
    )
}

fn chat_body(stream: bool, max_tokens: u64) -> serde_json::Value {
    json!({
        "model": "m",
        "stream": stream,
        "max_tokens": max_tokens,
        "messages": [{ "role": "user", "content": "one two three" }],
    })
}

async fn chat(gw: &Gateway, key: &str, body: &serde_json::Value, extra: &[(&str, &str)]) -> Answer {
    let mut req = Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    tokio::time::timeout(HANG_GUARD, send(req))
        .await
        .expect("hang")
}

/// Waits until `n` requests of route `chat` were counted (so their limits settled).
async fn counted(gw: &Gateway, class: &str, n: f64) {
    let sample = format!(
        "sluice_requests_total{{cluster=\"mock\",route=\"chat\",status_class=\"{class}\"}}"
    );
    for _ in 0..500 {
        if gw.metric(&sample).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{sample} never reached {n}");
}

fn number(answer: &Answer, header: &str) -> i64 {
    answer
        .header(header)
        .parse()
        .unwrap_or_else(|_| panic!("{header}: {:?}", answer.header(header)))
}

#[tokio::test]
async fn requests_over_the_limit_get_an_exact_429() {
    let limits = r#"
        [[limits]]
        name = "rpm"
        requests = 2
        per = "1h"
        key = ["consumer"]
    "#;
    let gw = Gateway::start(&config(limits, r#""rpm""#, "")).await;
    let body = chat_body(false, 5);

    let first = chat(&gw, "sk-alpha", &body, &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit-requests"), "2");
    assert_eq!(first.header("x-ratelimit-remaining-requests"), "1");
    assert_eq!(first.header("x-ratelimit-reset-requests"), "30m0s");
    assert_eq!(first.header("x-ratelimit-limit-tokens"), "");
    let second = chat(&gw, "sk-alpha", &body, &[]).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-ratelimit-remaining-requests"), "0");

    let refused = chat(&gw, "sk-alpha", &body, &[]).await;
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.json(),
        json!({ "error": {
            "message": "rate limit `rpm` exceeded (requests); try again in 1800s",
            "type": "requests",
            "code": "rate_limit_exceeded",
        }})
    );
    assert_eq!(refused.header("retry-after"), "1800");
    assert_eq!(refused.header("content-type"), "application/json");
    assert!(!refused.header("x-request-id").is_empty());
    assert_eq!(refused.header("x-ratelimit-limit-requests"), "2");
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), "0");
    let reset = refused.header("x-ratelimit-reset-requests");
    assert!(reset == "1h0m0s" || reset.starts_with("59m59."), "{reset}");

    // Beta has a bucket of its own; a route without limits shows no headers.
    assert_eq!(chat(&gw, "sk-beta", &body, &[]).await.status, 200);
    let free = common::get(&gw.url("/free/v1/models")).await;
    assert_eq!(free.status, 200);
    assert_eq!(free.header("x-ratelimit-limit-requests"), "");

    assert_eq!(
        gw.metric("sluice_ratelimit_decisions_total{limit=\"rpm\",result=\"allowed\"}")
            .await,
        3.0
    );
    assert_eq!(
        gw.metric("sluice_ratelimit_decisions_total{limit=\"rpm\",result=\"limited\"}")
            .await,
        1.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_consumer_limit_refusal_leaves_the_route_limit_untouched() {
    // The route allows 10 per hour; alpha's own limit allows 1.
    let limits = r#"
        [[limits]]
        name = "route-rpm"
        requests = 10
        per = "1h"

        [[limits]]
        name = "alpha-rpm"
        requests = 1
        per = "1h"
        key = ["consumer"]
    "#;
    let text = config(limits, r#""route-rpm""#, "").replace(
        "name = \"alpha\"",
        "name = \"alpha\"\n        limits = [\"alpha-rpm\"]",
    );
    let gw = Gateway::start(&text).await;
    let body = chat_body(false, 5);
    assert_eq!(chat(&gw, "sk-alpha", &body, &[]).await.status, 200);
    for _ in 0..3 {
        chat(&gw, "sk-alpha", &body, &[])
            .await
            .assert_error(429, "rate_limit_exceeded");
    }
    // Had the refused requests taken from the route's bucket, 6 would be left, not 8.
    let beta = chat(&gw, "sk-beta", &body, &[]).await;
    assert_eq!(beta.header("x-ratelimit-remaining-requests"), "8");
    gw.stop().await;
}

#[tokio::test]
async fn token_reservations_settle_to_streamed_and_non_streamed_usage() {
    // A slow refill (10,000 per 100 days) keeps the figures whole during the test.
    let limits = r#"
        [[limits]]
        name = "tpm"
        tokens = 10000
        per = "2400h"
        key = ["consumer"]
        bytes_per_token = 4
    "#;
    let gw = Gateway::start(&config(limits, r#""tpm""#, "")).await;
    let estimate =
        |body: &serde_json::Value, max: i64| (body.to_string().len() as i64 + 3) / 4 + max;
    // The mock answers min(max_tokens, 7) tokens for a 3-word prompt: 10 tokens used.
    let plain = chat_body(false, 50);
    let first = chat(&gw, "sk-alpha", &plain, &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["usage"]["total_tokens"], 10);
    assert_eq!(first.header("x-ratelimit-limit-tokens"), "10000");
    assert_eq!(
        number(&first, "x-ratelimit-remaining-tokens"),
        10000 - estimate(&plain, 50)
    );
    counted(&gw, "2xx", 1.0).await;

    // Streamed: the usage comes in the last chunk (asked for by include_usage).
    let streamed = chat_body(true, 40);
    let mut reader = Reader::post_with(
        gw.http,
        "/v1/chat/completions",
        &streamed,
        &[("authorization", "Bearer sk-alpha")],
    )
    .await;
    assert_eq!(reader.status, 200);
    // The first answer was settled to its usage before this one reserved.
    let remaining: i64 = reader.headers["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(remaining, 10000 - 10 - estimate(&streamed, 40));
    let (text, err) = tokio::time::timeout(HANG_GUARD, reader.rest())
        .await
        .unwrap();
    assert!(err.is_none(), "{text}");
    assert!(text.contains("[DONE]"));
    counted(&gw, "2xx", 2.0).await;

    // Both settled: 20 used. This request shows 10000 - 20 - its own estimate.
    let third = chat(&gw, "sk-alpha", &plain, &[("x-mock-tokens", "1")]).await;
    assert_eq!(
        number(&third, "x-ratelimit-remaining-tokens"),
        10000 - 20 - estimate(&plain, 50)
    );
    counted(&gw, "2xx", 3.0).await;
    // 3 prompt + 1 output.
    let fourth = chat(&gw, "sk-alpha", &plain, &[]).await;
    assert_eq!(
        number(&fourth, "x-ratelimit-remaining-tokens"),
        10000 - 24 - estimate(&plain, 50)
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_oversized_estimate_is_refused_with_tokens_type() {
    let limits = r#"
        [[limits]]
        name = "tpm"
        tokens = 100
        per = "24h"
        key = ["consumer"]
    "#;
    let gw = Gateway::start(&config(limits, r#""tpm""#, "")).await;
    // Takes the whole bucket (the estimate is above its capacity), uses 10.
    let body = chat_body(false, 5000);
    assert_eq!(chat(&gw, "sk-alpha", &body, &[]).await.status, 200);
    counted(&gw, "2xx", 1.0).await;
    let refused = chat(&gw, "sk-alpha", &body, &[]).await;
    refused.assert_error(429, "rate_limit_exceeded");
    assert_eq!(refused.json()["error"]["type"], "tokens");
    assert_eq!(refused.header("x-ratelimit-remaining-tokens"), "90");
    // 10 tokens at 100 per day.
    assert_eq!(refused.header("retry-after"), "8640");
    gw.stop().await;
}

#[tokio::test]
async fn in_flight_caps_hold_until_the_stream_ends() {
    let limits = r#"
        [[limits]]
        name = "streams"
        concurrent = 1
        key = ["consumer"]
    "#;
    let text = config(limits, r#""streams""#, "").replace("tokens=7", "tokens=5&delay=20ms");
    let gw = Gateway::start(&text).await;
    let mut reader = Reader::post_with(
        gw.http,
        "/v1/chat/completions",
        &chat_body(true, 5),
        &[("authorization", "Bearer sk-alpha")],
    )
    .await;
    assert_eq!(reader.status, 200);
    reader.next().await.unwrap();
    let refused = chat(&gw, "sk-alpha", &chat_body(false, 5), &[]).await;
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.json(),
        json!({ "error": {
            "message": "rate limit `streams` exceeded (concurrency); try again in 1s",
            "type": "concurrency",
            "code": "rate_limit_exceeded",
        }})
    );
    assert_eq!(refused.header("retry-after"), "1");
    // Beta is not held back by alpha's stream.
    assert_eq!(
        chat(&gw, "sk-beta", &chat_body(false, 5), &[]).await.status,
        200
    );
    let (_, err) = tokio::time::timeout(HANG_GUARD, reader.rest())
        .await
        .unwrap();
    assert!(err.is_none());
    counted(&gw, "2xx", 2.0).await;
    assert_eq!(
        chat(&gw, "sk-alpha", &chat_body(false, 5), &[])
            .await
            .status,
        200
    );
    gw.stop().await;
}

#[tokio::test]
async fn client_addresses_come_from_forwarded_for_only_behind_trusted_proxies() {
    let limits = r#"
        [[limits]]
        name = "per-ip"
        requests = 1
        per = "1h"
        key = ["client_ip"]
    "#;
    for trusted in [true, false] {
        let server = if trusted {
            "[server]\ntrusted_proxies = [\"127.0.0.1\"]"
        } else {
            ""
        };
        let gw = Gateway::start(&config(limits, r#""per-ip""#, server)).await;
        let body = chat_body(false, 5);
        let from = |ip: &'static str| [("x-forwarded-for", ip)];
        assert_eq!(
            chat(&gw, "sk-alpha", &body, &from("1.1.1.1")).await.status,
            200
        );
        assert_eq!(
            chat(&gw, "sk-alpha", &body, &from("1.1.1.1")).await.status,
            429
        );
        // Another client behind the proxy has its own bucket; without trust, every claim
        // is the proxy's own address, which has spent its request.
        let other = chat(&gw, "sk-alpha", &body, &from("2.2.2.2")).await.status;
        assert_eq!(other, if trusted { 200 } else { 429 }, "trusted: {trusted}");
        gw.stop().await;
    }
}

#[tokio::test]
async fn a_flood_of_distinct_keys_stays_within_the_memory_bound() {
    let limits = r#"
        [[limits]]
        name = "per-tenant"
        requests = 10
        per = "1h"
        key = ["header:x-tenant"]
    "#;
    let gw = Gateway::start(&config(
        limits,
        r#""per-tenant""#,
        "[ratelimit]\nmax_keys = 128",
    ))
    .await;
    let body = chat_body(false, 1);
    for i in 0..1000 {
        let tenant = format!("tenant-{i}");
        let answer = chat(&gw, "sk-alpha", &body, &[("x-tenant", &tenant)]).await;
        assert_eq!(answer.status, 200);
    }
    let keys = gw.metric("sluice_ratelimit_local_keys").await;
    assert!(keys <= 128.0 && keys > 0.0, "{keys} buckets held");
    let evicted = gw
        .metric("sluice_ratelimit_evictions_total{reason=\"capacity\"}")
        .await;
    assert!(evicted >= 1000.0 - 128.0, "{evicted} evicted");
    // A tenant still active keeps its bucket and its count.
    for _ in 0..3 {
        chat(&gw, "sk-alpha", &body, &[("x-tenant", "steady")]).await;
    }
    let steady = chat(&gw, "sk-alpha", &body, &[("x-tenant", "steady")]).await;
    assert_eq!(steady.header("x-ratelimit-remaining-requests"), "6");
    gw.stop().await;
}

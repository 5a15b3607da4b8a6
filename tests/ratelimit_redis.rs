//! Redis-backed limits against a real `redis-server` started by the test on a free port:
//! two gateways enforce one combined limit; Redis stopped mid-test, with fail-open and
//! fail-closed each doing what they promise, and recovery when it comes back; a slow Redis
//! never holds a request past the timeout; tokens settled in Redis.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::redis::RedisServer;
use common::{send, Answer, Gateway};
use http::Request;
use http_body_util::Full;
use serde_json::json;
use sluice::proxy::auth::KeyHash;

/// Generous guard against hangs; no assertion depends on it.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// A Redis timeout that a busy test machine does not reach by accident (the default 50 ms
/// is meant for a production network, not for a first connection on a loaded CI box).
const SLOW_MACHINE: &str = r#"timeout = "2s""#;

fn sha(key: &str) -> String {
    hex::encode(KeyHash::of(key.as_bytes()).0)
}

/// `[redis]` at `url` with `redis_extra`, a mock cluster, route `chat` limited by `limit`
/// (which the test defines in `limits`), and consumer alpha.
fn config(url: &str, redis_extra: &str, limits: &str) -> String {
    format!(
        r#"
        [redis]
        url = "{url}"
        retry_interval = "100ms"
        {redis_extra}

        [[clusters]]
        name = "mock"
        backends = [{{ url = "mock://m?tokens=7" }}]

        [[routes]]
        name = "chat"
        cluster = "mock"
        auth = "required"
        limits = ["shared"]

        [[consumers]]
        name = "alpha"
        key_sha256 = "{alpha}"

        {limits}
        "#,
        alpha = sha("sk-alpha"),
    )
}

async fn chat(gw: &Gateway) -> Answer {
    let body = json!({
        "model": "m", "max_tokens": 5,
        "messages": [{ "role": "user", "content": "one two three" }],
    });
    let req = Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-alpha")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    tokio::time::timeout(HANG_GUARD, send(req))
        .await
        .expect("hang")
}

async fn decisions(gw: &Gateway, result: &str) -> f64 {
    gw.metric(&format!(
        "sluice_ratelimit_decisions_total{{limit=\"shared\",result=\"{result}\"}}"
    ))
    .await
}

#[tokio::test]
async fn two_gateways_sharing_one_redis_enforce_one_limit() {
    let redis = RedisServer::start().await;
    let limits = r#"
        [[limits]]
        name = "shared"
        requests = 6
        per = "1h"
        key = ["consumer"]
        backend = "redis"
    "#;
    let text = config(&redis.url(), SLOW_MACHINE, limits);
    let a = Gateway::start(&text).await;
    let b = Gateway::start(&text).await;
    let mut allowed = [0, 0];
    for i in 0..12 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let answer = chat(gw).await;
        match answer.status.as_u16() {
            200 => allowed[i % 2] += 1,
            429 => assert_eq!(answer.json()["error"]["code"], "rate_limit_exceeded"),
            other => panic!("status {other}: {}", answer.text()),
        }
        if i == 3 {
            // The server forgets the script: the next call falls back to EVAL.
            assert_eq!(redis.command(&["SCRIPT", "FLUSH"]).await, "+OK\r\n");
        }
    }
    assert_eq!(allowed, [3, 3], "one limit of 6 between two gateways");
    // The bucket lives in Redis under the configured prefix.
    let keys = redis.command(&["KEYS", "sluice:rl:*"]).await;
    assert!(keys.contains("sluice:rl:shared|5:alpha"), "{keys}");
    let level = redis
        .command(&["HGET", "sluice:rl:shared|5:alpha", "l"])
        .await;
    let level: f64 = level.lines().nth(1).unwrap().parse().unwrap();
    assert!((0.0..1.0).contains(&level), "{level}");
    assert_eq!(
        decisions(&a, "allowed").await + decisions(&b, "allowed").await,
        6.0
    );
    assert_eq!(
        decisions(&a, "limited").await + decisions(&b, "limited").await,
        6.0
    );
    assert_eq!(a.metric("sluice_ratelimit_redis_up").await, 1.0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn fail_open_decides_locally_while_redis_is_down_and_recovers() {
    let mut redis = RedisServer::start().await;
    let limits = r#"
        [[limits]]
        name = "shared"
        requests = 3
        per = "1h"
        key = ["consumer"]
        backend = "redis"
        on_redis_error = "open"
    "#;
    let gw = Gateway::start(&config(&redis.url(), SLOW_MACHINE, limits)).await;
    assert_eq!(chat(&gw).await.status, 200);
    assert_eq!(decisions(&gw, "allowed").await, 1.0);

    redis.stop().await;
    // The local fallback bucket is full: three pass, the fourth is refused.
    for _ in 0..3 {
        let answer = chat(&gw).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    chat(&gw).await.assert_error(429, "rate_limit_exceeded");
    assert_eq!(decisions(&gw, "fallback_allowed").await, 3.0);
    assert_eq!(decisions(&gw, "fallback_limited").await, 1.0);
    assert_eq!(gw.metric("sluice_ratelimit_redis_up").await, 0.0);
    let errors = gw
        .metric("sluice_ratelimit_redis_errors_total{reason=\"error\"}")
        .await
        + gw.metric("sluice_ratelimit_redis_errors_total{reason=\"skipped\"}")
            .await
        + gw.metric("sluice_ratelimit_redis_errors_total{reason=\"timeout\"}")
            .await;
    assert!(errors >= 4.0, "{errors}");

    // Back, empty: Redis decides again (the exhausted local bucket would refuse).
    redis.restart().await;
    let mut recovered = false;
    for _ in 0..100 {
        if chat(&gw).await.status == 200 && decisions(&gw, "allowed").await == 2.0 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "requests never went back to Redis");
    assert_eq!(gw.metric("sluice_ratelimit_redis_up").await, 1.0);
    // Redis's new bucket of 3 has 2 left.
    assert_eq!(chat(&gw).await.status, 200);
    assert_eq!(chat(&gw).await.status, 200);
    assert_eq!(chat(&gw).await.status, 429, "Redis's bucket of 3 is spent");
    gw.stop().await;
}

#[tokio::test]
async fn fail_closed_refuses_while_redis_is_down_and_recovers() {
    let mut redis = RedisServer::start().await;
    let limits = r#"
        [[limits]]
        name = "shared"
        requests = 100
        per = "1h"
        backend = "redis"
        on_redis_error = "closed"
    "#;
    let gw = Gateway::start(&config(&redis.url(), SLOW_MACHINE, limits)).await;
    assert_eq!(chat(&gw).await.status, 200);
    redis.stop().await;
    for _ in 0..3 {
        let answer = chat(&gw).await;
        assert_eq!(answer.status, 503);
        assert_eq!(
            answer.json(),
            json!({ "error": {
                "message": "rate limit `shared` cannot be checked now (its store is \
                            unreachable); try again shortly",
                "type": "server_error",
                "code": "rate_limiter_unavailable",
            }})
        );
        assert_eq!(answer.header("retry-after"), "1");
    }
    assert_eq!(decisions(&gw, "unavailable").await, 3.0);
    redis.restart().await;
    let mut recovered = false;
    for _ in 0..100 {
        if chat(&gw).await.status == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        recovered,
        "requests were still refused after Redis came back"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_slow_redis_never_holds_a_request_past_the_timeout() {
    let redis = RedisServer::start().await;
    let limits = r#"
        [[limits]]
        name = "shared"
        requests = 100
        per = "1h"
        backend = "redis"
    "#;
    let gw = Gateway::start(&config(&redis.url(), r#"timeout = "100ms""#, limits)).await;
    // Until Redis has answered within the timeout once (a loaded machine may take longer
    // for the first connection).
    for _ in 0..50 {
        assert_eq!(chat(&gw).await.status, 200);
        if decisions(&gw, "allowed").await >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        decisions(&gw, "allowed").await >= 1.0,
        "Redis never answered"
    );
    let fallback = decisions(&gw, "fallback_allowed").await;
    let timeouts = "sluice_ratelimit_redis_errors_total{reason=\"timeout\"}";
    let timed_out = gw.metric(timeouts).await;
    // Redis stops answering anyone for 3 s.
    let port = redis.port;
    let sleeper = tokio::spawn(async move {
        let redis = RedisServer::attach(port);
        redis.command(&["DEBUG", "SLEEP", "3"]).await
    });
    // Wait until Redis is asleep: a PING it leaves unanswered for half a second, well
    // inside the 3 s it sleeps.
    let probe = RedisServer::attach(port);
    tokio::time::timeout(HANG_GUARD, async {
        let ping = || probe.command(&["PING"]);
        while tokio::time::timeout(Duration::from_millis(500), ping())
            .await
            .is_ok()
        {}
    })
    .await
    .expect("Redis never went to sleep");
    let answer = chat(&gw).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        !sleeper.is_finished(),
        "the request waited for Redis to wake up"
    );
    assert_eq!(decisions(&gw, "fallback_allowed").await, fallback + 1.0);
    assert_eq!(gw.metric(timeouts).await, timed_out + 1.0);
    assert_eq!(sleeper.await.unwrap(), "+OK\r\n");
    gw.stop().await;
}

#[tokio::test]
async fn token_usage_settles_in_redis() {
    let redis = RedisServer::start().await;
    let limits = r#"
        [[limits]]
        name = "shared"
        tokens = 10000
        per = "2400h"
        key = ["consumer"]
        backend = "redis"
    "#;
    let gw = Gateway::start(&config(&redis.url(), SLOW_MACHINE, limits)).await;
    let answer = chat(&gw).await;
    assert_eq!(answer.status, 200);
    // 3 prompt words + 5 tokens (max_tokens): the bucket settles at 10000 - 8.
    let mut level = String::new();
    for _ in 0..200 {
        level = redis
            .command(&["HGET", "sluice:rl:shared|5:alpha", "l"])
            .await;
        if level.contains("\r\n9992") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(level.contains("\r\n9992"), "{level}");
    gw.stop().await;
}

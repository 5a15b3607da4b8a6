//! What a rate-limit decision costs: local buckets in process, and Redis-backed buckets
//! against a real `redis-server` on 127.0.0.1 (started by this bench on a free port).
//!
//! - `local/bucket_take`: one `LocalStore::try_take` on a hot key (shard lock, hash lookup,
//!   refill, take).
//! - `local/admit_1_limit`: `Limiter::admit` with one request limit keyed by consumer: key
//!   building, the take, the headers, the admission dropped.
//! - `local/admit_3_limits`: a request limit, a token limit (then settled) and an in-flight
//!   cap, all keyed by consumer: what a typical LLM route with auth pays.
//! - `local/admit_100k_keys`: one limit keyed by a header, rotating over 100,000 values in a
//!   store capped at 100,000 buckets (cache misses, inserts).
//! - `redis/ping`: a `PING` through redis-rs's ConnectionManager: the floor of any Redis
//!   round trip on this machine.
//! - `redis/admit_1_limit`: `Limiter::admit` with one Redis-backed limit: the latency a
//!   Redis limit adds to a request.
//!
//! Run: `cargo bench --bench ratelimit`; figures are in `docs/benchmarks.md`.

use std::net::{IpAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue};
use sluice::ratelimit::bucket::Rate;
use sluice::ratelimit::key::{KeyPart, KeyValues};
use sluice::ratelimit::metrics::AccessMetrics;
use sluice::ratelimit::redis::RedisSettings;
use sluice::ratelimit::{
    Ask, Backend, Estimate, Kind, Limit, Limiter, OnRedisError, StoreSettings,
};

fn metrics() -> AccessMetrics {
    AccessMetrics::register(&prometheus::Registry::new()).unwrap()
}

fn limit(name: &str, kind: Kind, key: Vec<KeyPart>, backend: Backend) -> Arc<Limit> {
    Arc::new(Limit {
        name: name.to_owned(),
        kind,
        key,
        backend,
        decisions: metrics().decisions(name),
    })
}

/// Large enough that no bench ever runs out of tokens.
fn plenty() -> Rate {
    Rate::new(1_000_000_000, Duration::from_secs(1), 1_000_000_000).unwrap()
}

fn ask(headers: &HeaderMap) -> Ask<'_> {
    Ask {
        values: KeyValues {
            consumer: Some("team-a"),
            route: "chat",
            model: Some("llama-3-70b"),
            client: IpAddr::from([10, 1, 2, 3]),
            headers,
        },
        body_len: 1200,
        max_output: Some(256),
        upgrade: false,
    }
}

fn local(c: &mut Criterion) {
    let mut group = c.benchmark_group("local");
    let limiter = Arc::new(Limiter::new(&StoreSettings::default(), None, metrics()).unwrap());
    let store = limiter.local();
    group.bench_function("bucket_take", |b| {
        b.iter(|| store.try_take(b"rpm|6:team-a", plenty(), 1.0))
    });

    let rpm = limit(
        "rpm",
        Kind::Requests(plenty()),
        vec![KeyPart::Consumer],
        Backend::Local,
    );
    let headers = HeaderMap::new();
    let request = ask(&headers);
    group.bench_function("admit_1_limit", |b| {
        b.iter(|| {
            let decision = limiter.admit(&[&rpm], &request).now_or_never().unwrap();
            assert!(decision.outcome.is_ok());
            decision
        })
    });

    let tpm = limit(
        "tpm",
        Kind::Tokens(
            plenty(),
            Estimate {
                bytes_per_token: 4.0,
                default_max_tokens: 256,
            },
        ),
        vec![KeyPart::Consumer],
        Backend::Local,
    );
    let streams = limit(
        "streams",
        Kind::Concurrent(u32::MAX),
        vec![KeyPart::Consumer],
        Backend::Local,
    );
    let limits = [&rpm, &tpm, &streams];
    group.bench_function("admit_3_limits", |b| {
        b.iter(|| {
            let decision = limiter.admit(&limits, &request).now_or_never().unwrap();
            decision.outcome.unwrap().settle(Some(700), true);
        })
    });

    let tenant = limit(
        "tenant",
        Kind::Requests(plenty()),
        vec![KeyPart::parse("header:x-tenant").unwrap()],
        Backend::Local,
    );
    let values: Vec<HeaderMap> = (0..100_000)
        .map(|i| {
            let mut h = HeaderMap::new();
            h.insert("x-tenant", HeaderValue::from(i));
            h
        })
        .collect();
    let mut next = 0;
    group.bench_function("admit_100k_keys", |b| {
        b.iter(|| {
            let request = ask(&values[next % values.len()]);
            next += 1;
            limiter.admit(&[&tenant], &request).now_or_never().unwrap()
        })
    });
    group.finish();
}

/// A `redis-server` on a free port, killed when dropped.
struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server() -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is needed: apt-get install redis-server");
    // Owned at once, so that every path below kills and reaps it.
    let server = Server(child, port);
    for _ in 0..250 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("redis-server did not start");
}

fn redis(c: &mut Criterion) {
    let server = redis_server();
    let url = format!("redis://127.0.0.1:{}", server.1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("redis");

    let mut conn = runtime.block_on(async {
        redis::Client::open(url.as_str())
            .unwrap()
            .get_connection_manager()
            .await
            .unwrap()
    });
    group.bench_function("ping", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
                pong
            })
        })
    });

    let settings = RedisSettings {
        url,
        timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        retry_interval: Duration::from_secs(1),
        key_prefix: "bench:".to_owned(),
    };
    let limiter = runtime.block_on(async {
        Arc::new(Limiter::new(&StoreSettings::default(), Some(&settings), metrics()).unwrap())
    });
    let shared = limit(
        "shared",
        Kind::Requests(plenty()),
        vec![KeyPart::Consumer],
        Backend::Redis(OnRedisError::Closed),
    );
    let headers = HeaderMap::new();
    let request = ask(&headers);
    group.bench_function("admit_1_limit", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let decision = limiter.admit(&[&shared], &request).await;
                assert!(decision.outcome.is_ok(), "{:?}", decision.outcome.err());
            })
        })
    });
    group.finish();
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    targets = local, redis
}
criterion_main!(benches);

//! How long a backend pick takes for each load-balancing policy, and how long reading the
//! model of a JSON request body takes.
//!
//! - `pick/<policy>/<n>`: one `Balancer::pick` over `n` healthy mock backends, with the
//!   accept test the request path uses (not tried yet, healthy: three atomic loads per
//!   candidate when nothing was ever ejected) and, for consistent hashing, a fresh key per
//!   pick. Least request reads each candidate's in-flight count; a few backends carry load
//!   so that the choice matters.
//! - `model/parse/<size>`: `LlmRequest::parse` of a chat body of that size (the model
//!   first, then messages), the one parse that gives the model, its span and the prompt's.
//! - `model/rewrite`: `replace_model` of a 1 KiB body (one copy of the body).
//!
//! Run: `cargo bench --bench balance`; figures are in `docs/benchmarks.md`.

use std::hint::black_box;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderValue, Uri};
use sluice::config::snapshot::Backend;
use sluice::llm::models::replace_model;
use sluice::llm::request::LlmRequest;
use sluice::mock::MockBackend;
use sluice::proxy::balance::hash::hash64;
use sluice::proxy::balance::{Balancer, LbKind};
use sluice::upstream::health::{BackendState, InFlight};
use sluice::upstream::Target;

const SIZES: [usize; 2] = [8, 64];

fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let url = format!("mock://b{i}");
            let mock = MockBackend::from_uri(&Uri::from_str(&url).unwrap()).unwrap();
            Backend {
                authority: HeaderValue::from_str(mock.name()).unwrap(),
                url,
                weight: 1 + (i as u32 % 3),
                target: Target::Mock(mock),
                state: Arc::new(BackendState::new()),
            }
        })
        .collect()
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    group.measurement_time(Duration::from_secs(3));
    let policies = [
        ("round_robin", LbKind::RoundRobin),
        ("least_request", LbKind::LeastRequest),
        ("consistent_hash", LbKind::ConsistentHash),
        ("random", LbKind::Random),
    ];
    for n in SIZES {
        let backends = backends(n);
        // Some load, so least request and bounded load have something to compare.
        let _held: Vec<InFlight> = backends
            .iter()
            .step_by(3)
            .flat_map(|b| [b.state.begin(), b.state.begin()])
            .collect();
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        let names: Vec<&str> = backends.iter().map(|b| b.url.as_str()).collect();
        for (name, kind) in policies {
            let balancer = Balancer::new(kind, &weights, &names, 1.25, None);
            let found = balancer.pick(&backends, Some(1), |_| true);
            assert!(found.is_some_and(|i| i < n), "{name} picked nothing");
            let mut key = 0u64;
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let tried: [usize; 0] = [];
                    let accept = |i: usize| !tried.contains(&i) && backends[i].state.healthy();
                    black_box(balancer.pick(&backends, Some(black_box(key)), accept))
                })
            });
        }
    }
    group.finish();
}

/// A chat body of about `size` bytes: model first, a system prompt, then user turns.
fn chat_body(size: usize) -> Bytes {
    let mut messages = vec![serde_json::json!({
        "role": "system",
        "content": "You are a helpful assistant. Answer briefly and cite your sources.",
    })];
    let mut text = serde_json::json!({"model": "llama-3.1-70b-instruct", "messages": messages})
        .to_string()
        .len();
    let mut turn = 0;
    while text < size {
        let content = format!("Question {turn}: what does the text at position {turn} mean? ");
        text += content.len() + 32;
        messages.push(serde_json::json!({"role": "user", "content": content}));
        turn += 1;
    }
    let body = serde_json::json!({
        "model": "llama-3.1-70b-instruct",
        "messages": messages,
        "stream": true,
        "temperature": 0.7,
    });
    Bytes::from(body.to_string())
}

fn model(c: &mut Criterion) {
    let mut group = c.benchmark_group("model");
    group.measurement_time(Duration::from_secs(3));
    for size in [1024, 32 * 1024] {
        let body = chat_body(size);
        let parsed = LlmRequest::parse(&body).expect("the body parses");
        assert_eq!(parsed.model.as_deref(), Some("llama-3.1-70b-instruct"));
        let label = format!("{}KiB", size / 1024);
        group.bench_with_input(BenchmarkId::new("parse", label), &body, |b, body| {
            b.iter(|| black_box(LlmRequest::parse(black_box(body))))
        });
    }
    let body = chat_body(1024);
    let span = LlmRequest::parse(&body).unwrap().model_span.unwrap();
    group.bench_function("rewrite", |b| {
        b.iter(|| {
            black_box(replace_model(
                &body,
                span.clone(),
                "Qwen/Qwen2.5-72B-Instruct",
            ))
        })
    });
    let prompt = body.slice(LlmRequest::parse(&body).unwrap().prompt_span.unwrap());
    group.bench_function("hash_prompt_1KiB", |b| {
        b.iter(|| black_box(hash64(black_box(&prompt[..prompt.len().min(1024)]))))
    });
    group.finish();
}

criterion_group!(benches, pick, model);
criterion_main!(benches);

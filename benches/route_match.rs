//! How long `Router::find` takes on routing tables of 10 to 10,000 routes.
//!
//! Each table is generated from a fixed seed, so every run measures the same tables: a mix of
//! exact hosts, `*.suffix` wildcards and host-less routes; exact paths and prefixes of 1 to
//! 10 segments under a few API roots; a few regex routes; some routes limited to a method
//! or to a header. Three probe routes are placed among the generated ones, and the four
//! lookups aim at them (or, for the miss, at nothing):
//!
//! - `exact_path`: `POST api.example.com /v1/chat/completions`, an exact host and exact path;
//! - `deep_prefix`: a host-less prefix eight segments deep, found under a longer request path;
//! - `miss`: a host and path that no route takes (the 404 path: every prefix length and every
//!   regex of the host-less group is tried);
//! - `wildcard_host`: `llm.prod.acme.example.net`, served by `*.acme.example.net`.
//!
//! Before measuring, every lookup is checked to give the expected answer on every table.
//!
//! Run: `cargo bench --bench route_match`; figures are in `docs/benchmarks.md`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;
use regex::Regex;
use sluice::proxy::route::{PathMatch, RouteMatcher, Router};

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

/// API roots of generated routes. The miss lookup uses `/v3`, which is not among them.
const ROOTS: [&str; 6] = [
    "/v1",
    "/openai/v1",
    "/api/v1",
    "/api/v2",
    "/llm",
    "/inference",
];
const ENDPOINTS: [&str; 8] = [
    "chat/completions",
    "completions",
    "embeddings",
    "models",
    "audio/transcriptions",
    "images/generations",
    "responses",
    "moderations",
];
const MODELS: [&str; 6] = [
    "gpt-4o",
    "llama-3-70b",
    "mistral-7b",
    "qwen2-72b",
    "phi-3-mini",
    "gemma-2-9b",
];
/// Regex routes, anchored under the generated roots so that none takes a probe's path.
const REGEXES: [&str; 8] = [
    r"^/v1/tenants/t[0-9]+/models/[^/]+/generate$",
    r"^/openai/v1/deployments/[^/]+/(chat/)?completions$",
    r"^/api/v2/batch/[0-9a-f]{8}(/.*)?$",
    r"^/llm/(?:gpt|llama|mistral)-[^/]+/stream$",
    r"^/inference/[a-z0-9-]+/v[0-9]+/predict$",
    r"^/api/v1/files/[^/]+/content$",
    r"^/v1/threads/[^/]+/runs/[^/]+$",
    r"^/openai/v1/fine_tuning/jobs/[^/]+/events$",
];

/// The generated table and the indices of its probe routes.
struct Table {
    router: Router,
    exact: usize,
    deep_prefix: usize,
    wildcard: usize,
}

/// One lookup: the request and the route it must find.
struct Lookup {
    name: &'static str,
    host: &'static str,
    path: &'static str,
    method: Method,
    expect: fn(&Table) -> Option<usize>,
}

fn lookups() -> [Lookup; 4] {
    [
        Lookup {
            name: "exact_path",
            host: "api.example.com",
            path: "/v1/chat/completions",
            method: Method::POST,
            expect: |t| Some(t.exact),
        },
        Lookup {
            name: "deep_prefix",
            host: "gateway.internal",
            path: "/openai/v1/tenants/acme/projects/prod/deployments/llama-3-70b/chat/completions",
            method: Method::POST,
            expect: |t| Some(t.deep_prefix),
        },
        Lookup {
            name: "miss",
            host: "unknown.example.org",
            path: "/v3/tenants/acme/deployments/unknown-model/chat/completions",
            method: Method::POST,
            expect: |_| None,
        },
        Lookup {
            name: "wildcard_host",
            host: "llm.prod.acme.example.net",
            path: "/v1/chat/completions",
            method: Method::POST,
            expect: |t| Some(t.wildcard),
        },
    ]
}

/// Headers of a typical OpenAI SDK request.
fn request_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (header::CONTENT_TYPE, "application/json"),
        (header::AUTHORIZATION, "Bearer sk-bench-0123456789abcdef"),
        (header::ACCEPT, "application/json"),
        (header::USER_AGENT, "OpenAI/Python 1.54.0"),
        (header::CONTENT_LENGTH, "187"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
}

fn matcher(hosts: Vec<String>, path: PathMatch) -> RouteMatcher {
    RouteMatcher {
        hosts,
        path,
        methods: Vec::new(),
        headers: Vec::new(),
        models: None,
    }
}

/// A route generated from `rng`; `regex` forces a regex path.
fn generated(rng: &mut fastrand::Rng, n: usize, regex: Option<usize>) -> RouteMatcher {
    // About ten routes per exact host and per wildcard suffix, whatever the table size.
    let exact_hosts = (n / 20).max(1);
    let wildcards = (n / 50).max(1);
    let tenants = (n / 10).max(2);

    let hosts = match (regex, rng.u8(..100)) {
        (Some(_), _) => Vec::new(),
        (None, 0..45) => {
            let k = rng.usize(..exact_hosts);
            // Host 0 is the probe's host, so its group holds generated routes too.
            let host = if k == 0 {
                "api.example.com".to_owned()
            } else {
                format!("t{k}.llm.example.com")
            };
            vec![host]
        }
        (None, 45..65) => vec![format!("*.r{}.example.net", rng.usize(..wildcards))],
        (None, _) => Vec::new(),
    };

    let root = ROOTS[rng.usize(..ROOTS.len())];
    let path = if let Some(i) = regex {
        PathMatch::Regex(Regex::new(REGEXES[i % REGEXES.len()]).expect("bench regex is valid"))
    } else if rng.u8(..100) < 40 {
        // Exact paths always name a tenant or a model, so none equals a probe's path.
        let endpoint = ENDPOINTS[rng.usize(..ENDPOINTS.len())];
        let path = match rng.u8(..3) {
            0 => format!("{root}/tenants/t{}/{endpoint}", rng.usize(..tenants)),
            1 => format!(
                "{root}/deployments/{}/{endpoint}",
                MODELS[rng.usize(..MODELS.len())]
            ),
            _ => format!(
                "{root}/tenants/t{}/deployments/{}/{endpoint}",
                rng.usize(..tenants),
                MODELS[rng.usize(..MODELS.len())]
            ),
        };
        PathMatch::Exact(path)
    } else {
        // A prefix of 1 to 10 segments: the root, then tenant, project, model and endpoint.
        let mut prefix = root.to_owned();
        let depth = rng.usize(0..=4);
        let segments = [
            format!("tenants/t{}", rng.usize(..tenants)),
            format!("projects/p{}", rng.usize(..tenants)),
            format!("deployments/{}", MODELS[rng.usize(..MODELS.len())]),
            ENDPOINTS[rng.usize(..ENDPOINTS.len())].to_owned(),
        ];
        for segment in &segments[..depth] {
            prefix.push('/');
            prefix.push_str(segment);
        }
        if rng.bool() {
            prefix.push('/');
        }
        PathMatch::Prefix(prefix)
    };

    let methods = match rng.u8(..100) {
        0..20 => vec![Method::POST],
        20..25 => vec![Method::GET],
        25..30 => vec![Method::GET, Method::POST],
        _ => Vec::new(),
    };
    let headers = match rng.u8(..100) {
        0..7 => vec![(
            HeaderName::from_static("x-tenant"),
            Some(HeaderValue::from_str(&format!("t{}", rng.usize(..tenants))).expect("ascii")),
        )],
        7..10 => vec![(HeaderName::from_static("x-canary"), None)],
        _ => Vec::new(),
    };
    RouteMatcher {
        methods,
        headers,
        ..matcher(hosts, path)
    }
}

/// A table of `n` routes: `n - 3` generated ones and three probes spread among them.
fn table(n: usize) -> Table {
    let mut rng = fastrand::Rng::with_seed((0x51u64 << 32) | n as u64);
    let regexes = (1 + n / 100).min(REGEXES.len());
    let regex_every = n / regexes;
    let (exact, deep_prefix, wildcard) = (n / 4, n / 2, 3 * n / 4);
    let mut exact_probe = matcher(
        vec!["api.example.com".to_owned()],
        PathMatch::Exact("/v1/chat/completions".to_owned()),
    );
    exact_probe.methods = vec![Method::POST];
    let deep_probe = matcher(
        Vec::new(),
        PathMatch::Prefix("/openai/v1/tenants/acme/projects/prod/deployments/llama-3-70b/".into()),
    );
    let wildcard_probe = matcher(
        vec!["*.acme.example.net".to_owned()],
        PathMatch::Prefix("/v1/".to_owned()),
    );

    let mut matchers = Vec::with_capacity(n);
    for i in 0..n {
        let m = match i {
            _ if i == exact => exact_probe.clone(),
            _ if i == deep_prefix => deep_probe.clone(),
            _ if i == wildcard => wildcard_probe.clone(),
            _ => {
                let regex = (i % regex_every == 1).then_some(i / regex_every);
                generated(&mut rng, n, regex)
            }
        };
        matchers.push(m);
    }
    describe(n, &matchers);
    Table {
        router: Router::new(&matchers),
        exact,
        deep_prefix,
        wildcard,
    }
}

/// Prints what drives the cost of a lookup in this table: the host-less group's distinct
/// prefix lengths (one hash probe each on a miss) and its regexes (one match each on a miss).
fn describe(n: usize, matchers: &[RouteMatcher]) {
    let hostless: Vec<&RouteMatcher> = matchers.iter().filter(|m| m.hosts.is_empty()).collect();
    let mut lengths: Vec<usize> = hostless
        .iter()
        .filter_map(|m| match &m.path {
            PathMatch::Prefix(p) => Some(p.len()),
            _ => None,
        })
        .collect();
    lengths.sort_unstable();
    lengths.dedup();
    let regexes = hostless
        .iter()
        .filter(|m| matches!(m.path, PathMatch::Regex(_)))
        .count();
    let mut hosts: Vec<&str> = matchers
        .iter()
        .flat_map(|m| m.hosts.iter().map(String::as_str))
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    let wildcards = hosts.iter().filter(|h| h.starts_with('*')).count();
    eprintln!(
        "table of {n} routes: {} host-less ({} distinct prefix lengths, {regexes} regex), \
         {} exact hosts, {wildcards} wildcard suffixes",
        hostless.len(),
        lengths.len(),
        hosts.len() - wildcards,
    );
}

fn route_match(c: &mut Criterion) {
    let tables: Vec<(usize, Table)> = SIZES.iter().map(|&n| (n, table(n))).collect();
    let headers = request_headers();
    for lookup in lookups() {
        for (n, t) in &tables {
            let found = t
                .router
                .find(lookup.host, lookup.path, &lookup.method, &headers)
                .map(|m| m.route);
            assert_eq!(found, (lookup.expect)(t), "{} on {n} routes", lookup.name);
        }
    }

    let mut group = c.benchmark_group("route_match");
    // Lookups take tens to hundreds of nanoseconds: short windows give stable medians, and
    // 16 benchmarks fit in about a minute.
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(60);
    for lookup in lookups() {
        for (n, t) in &tables {
            group.bench_with_input(BenchmarkId::new(lookup.name, n), t, |b, t| {
                b.iter(|| {
                    t.router.find(
                        black_box(lookup.host),
                        black_box(lookup.path),
                        black_box(&lookup.method),
                        black_box(&headers),
                    )
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, route_match);
criterion_main!(benches);

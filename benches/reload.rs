//! How long a reload of a large config takes: 10,000 routes and 1,000 clusters.
//!
//! The config is generated into a temporary directory as a conf-agent would lay it out: a
//! main file with `dynamic_dir = "conf.d"`, and in `conf.d/` one file of 1,000 clusters (two
//! `http://` backends each; nothing connects) and ten files of 1,000 routes. The routes are
//! a mix: exact hosts, `*.suffix` wildcards and host-less ones; exact paths and prefixes; 50
//! regexes; some with a method or header condition, a rewrite or header edits.
//!
//! - `load`: read and parse the main file and the eleven dynamic files (`config::load_with`);
//! - `compile_cold`: compile them with nothing to carry over, as at start;
//! - `reload_unchanged`: a whole reload through `Reloader` (load, compile against the running
//!   snapshot, swap), every backend keeping its pool;
//! - `reload_one_file_changed`: the same after one routes file was rewritten (a route
//!   renamed and moved), the usual shape of a conf-agent update;
//! - `drop_snapshot`: freeing a snapshot of this size, which the reloader does off the
//!   runtime's threads (see `Reloader::reap`).
//!
//! Run: `cargo bench --bench reload`; figures are in `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use sluice::config::{self, compile, DynamicDir};
use sluice::metrics::Metrics;
use sluice::reload::{Outcome, Reloader, Trigger};

const CLUSTERS: usize = 1_000;
const ROUTE_FILES: usize = 10;
const ROUTES_PER_FILE: usize = 1_000;
const REGEXES: usize = 50;

fn clusters() -> String {
    let mut toml = String::new();
    for c in 0..CLUSTERS {
        let (a, b) = (c / 250, c % 250);
        let _ = write!(
            toml,
            "[[clusters]]\nname = \"c{c}\"\nbackends = [{{ url = \"http://10.{a}.{b}.1:8000\" }}, \
             {{ url = \"http://10.{a}.{b}.2:8000\", weight = 2 }}]\n"
        );
        if c % 10 == 0 {
            toml.push_str("connect_timeout = \"2s\"\npool_max_idle_per_host = 32\n");
        }
    }
    toml
}

/// Routes file `f`; `variant` renames one route and changes its path, so that a rewrite
/// of the file is a real change.
fn routes(f: usize, variant: usize) -> String {
    let mut toml = String::new();
    for i in 0..ROUTES_PER_FILE {
        let n = f * ROUTES_PER_FILE + i;
        let cluster = n % CLUSTERS;
        let name = if i == 0 && variant == 1 {
            format!("r{n}-moved")
        } else {
            format!("r{n}")
        };
        let _ = write!(
            toml,
            "[[routes]]\nname = \"{name}\"\ncluster = \"c{cluster}\"\n"
        );
        let host = match n % 20 {
            0..=8 => format!("hosts = [\"api{}.example.com\"], ", n % 500),
            9..=12 => format!("hosts = [\"*.t{}.example.net\"], ", n % 200),
            _ => String::new(),
        };
        let path = if n % (ROUTE_FILES * ROUTES_PER_FILE / REGEXES) == 7 {
            format!("path_regex = \"^/r{n}/v[0-9]+/(chat/)?completions$\"")
        } else if n.is_multiple_of(3) {
            format!("path = \"/v1/t{n}/chat/completions\"")
        } else if i == 0 && variant == 1 {
            format!("path_prefix = \"/moved/t{n}/\"")
        } else {
            format!("path_prefix = \"/v1/t{n}/m{}/\"", n % 7)
        };
        let methods = if n % 3 == 1 {
            ", methods = [\"POST\"]"
        } else {
            ""
        };
        let headers = if n % 10 == 5 {
            ", headers = [{ name = \"x-tenant\", value = \"t\" }]"
        } else {
            ""
        };
        let _ = writeln!(toml, "match = {{ {host}{path}{methods}{headers} }}");
        if n % 4 == 2 {
            toml.push_str("rewrite_prefix = \"/v1/\"\n");
        }
        if n % 5 == 3 {
            toml.push_str("request_headers = { set = { \"x-gateway\" = \"sluice\" }, remove = [\"cookie\"] }\n");
        }
    }
    toml
}

fn write_config(dir: &Path) {
    std::fs::write(
        dir.join("sluice.toml"),
        "dynamic_dir = \"conf.d\"\n[reload]\nwatch = false\n",
    )
    .unwrap();
    let conf = dir.join("conf.d");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("10-clusters.toml"), clusters()).unwrap();
    for f in 0..ROUTE_FILES {
        std::fs::write(conf.join(format!("20-routes-{f:02}.toml")), routes(f, 0)).unwrap();
    }
}

fn applied(outcome: Outcome) -> sluice::reload::Applied {
    match outcome {
        Outcome::Applied(applied) => applied,
        other => panic!("the reload did not apply: {other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let main = dir.path().join("sluice.toml");
    let metrics = Arc::new(Metrics::new());
    let config = config::load(&main).unwrap_or_else(|e| panic!("{e:#?}"));
    let snapshot =
        compile::snapshot(&config.dynamic, &config.static_config.upstream, &metrics).unwrap();
    assert_eq!(snapshot.routes.len(), ROUTE_FILES * ROUTES_PER_FILE);
    assert_eq!(snapshot.clusters.len(), CLUSTERS);
    let state = Arc::new(ArcSwap::from_pointee(snapshot));
    let reloader = Reloader::new(&config, Arc::clone(&state), Arc::clone(&metrics), false);
    // Checked once outside the timings: every backend keeps its pool on an unchanged reload.
    let first = applied(reloader.reload_blocking(Trigger::Api, None));
    assert_eq!((first.pools_kept, first.pools_new), (2 * CLUSTERS, 0));

    let mut group = c.benchmark_group("reload");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    let dynamic = DynamicDir::FromMainFile;
    group.bench_function("load", |b| {
        b.iter(|| config::load_with(&main, &dynamic).unwrap())
    });
    group.bench_function("compile_cold", |b| {
        let config = config::load(&main).unwrap();
        let fresh = Metrics::new();
        b.iter(|| {
            compile::snapshot(&config.dynamic, &config.static_config.upstream, &fresh).unwrap()
        })
    });
    group.bench_function("reload_unchanged", |b| {
        b.iter(|| applied(reloader.reload_blocking(Trigger::Api, None)))
    });
    group.bench_function("drop_snapshot", |b| {
        let config = config::load(&main).unwrap();
        let fresh = Metrics::new();
        b.iter_batched(
            || compile::snapshot(&config.dynamic, &config.static_config.upstream, &fresh).unwrap(),
            drop,
            BatchSize::PerIteration,
        )
    });
    let changing = dir.path().join("conf.d/20-routes-05.toml");
    let mut variant = 0;
    group.bench_function("reload_one_file_changed", |b| {
        b.iter_batched(
            || {
                variant = 1 - variant;
                std::fs::write(&changing, routes(5, variant)).unwrap();
            },
            |()| applied(reloader.reload_blocking(Trigger::Api, None)),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

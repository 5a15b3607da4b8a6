//! `sluice check` on model routing, splits, balancing, health, retries, provider keys and
//! concurrency caps: each bad value names the file, the key and the reason, and a key is
//! never printed, only where it is.

mod common;

use std::path::Path;

use common::check::{check, compare, has, is, text, write, Want, CLUSTER, ROUTE};

/// `CLUSTER` with extra cluster keys, and `ROUTE`.
fn cluster_with(extra: &str) -> String {
    format!("{CLUSTER}{extra}\n{ROUTE}")
}

/// `CLUSTER`, and `ROUTE` with extra route keys.
fn route_with(extra: &str) -> String {
    format!("{CLUSTER}{ROUTE}{extra}\n")
}

fn cases() -> Vec<(&'static str, String, Vec<Want>)> {
    vec![
        (
            "cluster and clusters",
            route_with("clusters = [{ name = \"models\" }]"),
            vec![is(
                "routes[0].clusters",
                "set either `cluster` or `clusters`, not both",
            )],
        ),
        (
            "no cluster at all",
            format!("{CLUSTER}\n[[routes]]\nname = \"chat\"\n"),
            vec![has("routes[0]", &["missing field `cluster`"])],
        ),
        (
            "split to an unknown cluster, with a zero weight",
            format!(
                "{CLUSTER}\n[[routes]]\nname = \"chat\"\n\
                 clusters = [{{ name = \"models\", weight = 0 }}, {{ name = \"canary\" }}]\n"
            ),
            vec![
                is("routes[0].clusters[0].weight", "must be at least 1"),
                is(
                    "routes[0].clusters[1].name",
                    "route `chat` names cluster `canary`, which is not defined",
                ),
            ],
        ),
        (
            "a fallback named twice",
            route_with("fallbacks = [\"models\"]"),
            vec![is(
                "routes[0].fallbacks[0]",
                "cluster `models` is named twice by route `chat`",
            )],
        ),
        (
            "empty model list and empty pattern",
            route_with("match = { models = [] }"),
            vec![is(
                "routes[0].match.models",
                "needs at least one model name (remove it to match any model)",
            )],
        ),
        (
            "bad model pattern",
            route_with("match = { models = [\"gpt-4o\", \"\"] }"),
            vec![is(
                "routes[0].match.models[1]",
                "model pattern `` must be 1 to 256 characters",
            )],
        ),
        (
            "empty alias",
            route_with("model_rewrite = { aliases = { \"gpt-4o\" = \"\" } }"),
            vec![is(
                "routes[0].model_rewrite.aliases",
                "an alias needs a public name and a backend name, neither empty",
            )],
        ),
        (
            "unknown lb",
            cluster_with("lb = \"fastest\""),
            vec![has(
                "clusters[0].lb",
                &["unknown variant `fastest`", "`round_robin`", "`least_request`"],
            )],
        ),
        (
            "hash_on without consistent hashing",
            cluster_with("hash_on = \"api_key\""),
            vec![is(
                "clusters[0].hash_on",
                "applies only to lb = \"consistent_hash\"",
            )],
        ),
        (
            "bad hash_on",
            cluster_with("lb = \"consistent_hash\"\nhash_on = \"cookie:session\""),
            vec![is(
                "clusters[0].hash_on",
                "`cookie:session` is not one of \"header:NAME\", \"api_key\", \"client_ip\", \"prompt\"",
            )],
        ),
        (
            "balance factor below 1",
            cluster_with("lb = \"consistent_hash\"\nbalance_factor = 0.5"),
            vec![is(
                "clusters[0].balance_factor",
                "must be a number of at least 1.0",
            )],
        ),
        (
            "bad health check",
            cluster_with(
                "health_check = { path = \"health\", interval = \"1ms\", healthy_threshold = 0, expected_status = [200, 999] }",
            ),
            vec![
                is(
                    "clusters[0].health_check.path",
                    "`health` must be a path starting with `/`",
                ),
                is("clusters[0].health_check.interval", "must be at least 10ms"),
                is("clusters[0].health_check.healthy_threshold", "must be at least 1"),
                is(
                    "clusters[0].health_check.expected_status[1]",
                    "`999` is not an HTTP status",
                ),
            ],
        ),
        (
            "ejection shorter than its base",
            cluster_with("outlier = { base_ejection = \"1m\", max_ejection = \"10s\" }"),
            vec![is(
                "clusters[0].outlier.max_ejection",
                "must be at least base_ejection",
            )],
        ),
        (
            "bad retry",
            cluster_with("retry = { attempts = 0, budget_ratio = 2.0, per_try_timeout = \"0s\" }"),
            vec![
                is(
                    "clusters[0].retry.attempts",
                    "must be from 1 (no retry) to 10",
                ),
                is("clusters[0].retry.budget_ratio", "must be from 0.0 to 1.0"),
                is("clusters[0].retry.per_try_timeout", "must be longer than 0s"),
            ],
        ),
        (
            "queue without a cap",
            cluster_with("max_queue = 10"),
            vec![is(
                "clusters[0].max_queue",
                "max_queue and queue_timeout need max_in_flight",
            )],
        ),
        (
            "unknown key in retry",
            cluster_with("retry = { tries = 3 }"),
            vec![has("clusters[0].retry.tries", &["unknown field `tries`"])],
        ),
    ]
}

#[test]
fn bad_values_name_the_file_the_key_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, (name, toml, want)) in cases().into_iter().enumerate() {
        let path = dir.path().join(format!("case{i}.toml"));
        write(&path, &toml);
        let want: Vec<(&Path, Want)> = want.into_iter().map(|w| (path.as_path(), w)).collect();
        if let Err(why) = compare(&check(&path), &want) {
            failures.push(format!("--- {name} ({}):\n{why}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn provider_keys_are_read_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("empty.key"), "  \n");
    write(&d.join("bad.key"), "sk-secret\u{7f}value\n");
    write(&d.join("good.key"), "sk-good\n");
    let path = d.join("sluice.toml");
    write(
        &path,
        &format!(
            r#"
[[clusters]]
name = "models"
backends = [{{ url = "http://127.0.0.1:9000" }}]
credentials = {{ keys = [
  {{ file = "missing.key" }},
  {{ file = "empty.key" }},
  {{ file = "bad.key" }},
  {{ env = "SLUICE_TEST_SURELY_UNSET_VARIABLE" }},
  {{ env = "X", file = "good.key" }},
  {{ file = "good.key", weight = 0 }},
] }}
{ROUTE}"#
        ),
    );
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("sk-"), "a key was printed:\n{stderr}");
    let file = path.display().to_string();
    let key = |i: usize| format!("{file}:clusters[0].credentials.keys[{i}]: ");
    let lines: Vec<&str> = stderr.lines().collect();
    let missing = d.join("missing.key").display().to_string();
    assert!(
        lines[0].starts_with(&format!("{}file:{missing}: cannot read {missing}", key(0))),
        "{stderr}"
    );
    let empty = d.join("empty.key").display().to_string();
    assert_eq!(
        lines[1],
        format!("{}file:{empty}: the key is empty", key(1))
    );
    let bad = d.join("bad.key").display().to_string();
    assert_eq!(
        lines[2],
        format!(
            "{}file:{bad}: the key has characters a header cannot carry",
            key(2)
        )
    );
    assert_eq!(
        lines[3],
        format!(
            "{}env:SLUICE_TEST_SURELY_UNSET_VARIABLE: environment variable \
             `SLUICE_TEST_SURELY_UNSET_VARIABLE` is not set or not text",
            key(3)
        )
    );
    assert_eq!(
        lines[4],
        format!("{}set exactly one of `env` and `file`", key(4))
    );
    assert_eq!(
        lines[5],
        format!("{file}:clusters[0].credentials.keys[5].weight: must be at least 1")
    );
    assert_eq!(lines.len(), 6, "{stderr}");
}

#[test]
fn the_models_example_passes() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/examples/models.toml");
    // The example reads its provider key from this variable.
    let out = std::process::Command::new(common::check::SLUICE)
        .args(["check", "-c", example.to_str().unwrap()])
        .env("OPENAI_API_KEY", "sk-example")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

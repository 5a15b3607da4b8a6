//! `sluice check` on the auth and rate-limit parts of a config: every problem names the
//! file, the key and the reason, all in one run; keys are never printed.

mod common;

use common::check::{assert_ok, assert_problems, check, has, is, text, write, CLUSTER};

#[test]
fn auth_and_limit_problems_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("key.txt"), "sk-file-secret\n");
    write(&d.join("empty.key"), "\n");
    let main = d.join("sluice.toml");
    write(
        &main,
        &format!(
            r#"
[redis]
url = "http://nope"
timeout = "0s"

[ratelimit]
max_keys = 0
{CLUSTER}
[[routes]]
name = "chat"
cluster = "models"
auth_header = "bad header"
limits = ["rpm", "nope", "rpm"]

[[routes]]
name = "open"
cluster = "models"
auth = "required"
limits = ["broken"]

[[limits]]
name = "rpm"
requests = 60

[[limits]]
name = "rpm"
requests = 1

[[limits]]
name = "broken"
requests = 0
tokens = 5

[[limits]]
name = "both-wrong"
concurrent = 0
per = "1s"
backend = "redis"
bytes_per_token = 3

[[limits]]
name = "keys"
requests = 1
per = "0s"
burst = 0
key = ["consumer", "user", "header:bad h", "consumer"]
on_redis_error = "closed"

[[consumers]]
name = "a"
key_sha256 = "abc"
models = ["gpt*4", ""]
routes = ["nowhere"]
limits = ["missing"]

[[consumers]]
name = "b"

[[consumers]]
name = "c"
key_env = "SLUICE_TEST_NOT_SET_ANYWHERE"
key_file = "missing.key"

[[consumers]]
name = "d"
key_file = "key.txt"

[[consumers]]
name = "e"
key_sha256 = ["{zeros}"]
key_file = "key.txt"

[[consumers]]
name = "f"
key_file = "empty.key"

[[consumers]]
name = "g"
key_sha256 = ["{zeros}", "not hex"]
"#,
            zeros = "0".repeat(64),
        ),
    );
    let out = check(&main);
    let m = main.as_path();
    assert_problems(
        &out,
        &[
            (m, is("ratelimit.max_keys", "must be at least 1")),
            (
                m,
                has("redis.url", &["`http://nope` is not a usable Redis URL"]),
            ),
            (m, is("redis.timeout", "must be longer than 0s")),
            (
                m,
                is("limits[1].name", "limit `rpm` is already defined in {file}"),
            ),
            (
                m,
                is(
                    "limits[2]",
                    "set exactly one of requests, tokens and concurrent",
                ),
            ),
            (m, is("limits[3].concurrent", "must be at least 1")),
            (
                m,
                is(
                    "limits[3].per",
                    "applies to requests and tokens limits, not to concurrent",
                ),
            ),
            (
                m,
                is("limits[3].bytes_per_token", "applies to tokens limits only"),
            ),
            (
                m,
                is(
                    "limits[3].backend",
                    "concurrent limits are kept in each process; use backend = \"local\"",
                ),
            ),
            (m, is("limits[4].per", "must be longer than 0s")),
            (m, is("limits[4].burst", "must be at least 1")),
            (
                m,
                is(
                    "limits[4].key[1]",
                    "`user` is not a key part: use consumer, route, model, client_ip or \
                     header:NAME",
                ),
            ),
            (
                m,
                is("limits[4].key[2]", "`bad h` is not a valid header name"),
            ),
            (m, is("limits[4].key[3]", "`consumer` is listed twice")),
            (
                m,
                is(
                    "limits[4].on_redis_error",
                    "applies to backend = \"redis\" only",
                ),
            ),
            (
                m,
                is(
                    "consumers[0].key_sha256",
                    "must be 64 hex digits: the SHA-256 of the key",
                ),
            ),
            (
                m,
                is(
                    "consumers[0].models[0]",
                    "`gpt*4` must be a model name, or a prefix followed by `*`",
                ),
            ),
            (
                m,
                is(
                    "consumers[0].models[1]",
                    "`` must be a model name, or a prefix followed by `*`",
                ),
            ),
            (
                m,
                is("consumers[0].routes[0]", "route `nowhere` is not defined"),
            ),
            (
                m,
                is("consumers[0].limits[0]", "limit `missing` is not defined"),
            ),
            (
                m,
                is(
                    "consumers[1]",
                    "a consumer needs a key: set key_sha256, key_env or key_file",
                ),
            ),
            (
                m,
                is(
                    "consumers[2].key_env",
                    "environment variable `SLUICE_TEST_NOT_SET_ANYWHERE` is not set",
                ),
            ),
            (
                m,
                has("consumers[2].key_file", &["cannot read ", "missing.key"]),
            ),
            (
                m,
                is(
                    "consumers[4]",
                    "a key of consumer `e` is also a key of consumer `d`",
                ),
            ),
            (m, has("consumers[5].key_file", &["empty.key is empty"])),
            (
                m,
                is(
                    "consumers[6].key_sha256[1]",
                    "must be 64 hex digits: the SHA-256 of the key",
                ),
            ),
            (
                m,
                is(
                    "routes[0].auth_header",
                    "needs auth = \"optional\" or \"required\"",
                ),
            ),
            (
                m,
                is(
                    "routes[0].auth_header",
                    "`bad header` is not a valid header name",
                ),
            ),
            (m, is("routes[0].limits[1]", "limit `nope` is not defined")),
            (m, is("routes[0].limits[2]", "limit `rpm` is listed twice")),
        ],
    );
    assert!(!text(&out.stderr).contains("sk-file-secret"));
}

#[test]
fn redis_limits_need_a_redis_section_and_redis_is_static() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let main = d.join("sluice.toml");
    write(
        &main,
        &format!(
            "dynamic_dir = \"conf.d\"\n{CLUSTER}\n[[limits]]\nname = \"shared\"\n\
             requests = 5\nbackend = \"redis\"\n"
        ),
    );
    let dynamic = d.join("conf.d/10-redis.toml");
    write(&dynamic, "[redis]\nurl = \"redis://127.0.0.1:6379\"\n");
    let out = check(&main);
    assert_problems(
        &out,
        &[(dynamic.as_path(), has("redis", &["unknown field `redis`"]))],
    );
    std::fs::remove_file(&dynamic).unwrap();
    let out = check(&main);
    assert_problems(
        &out,
        &[(
            main.as_path(),
            is(
                "limits[0].backend",
                "`redis` needs a [redis] section with its url in the main file",
            ),
        )],
    );
}

#[test]
fn a_full_auth_and_limits_config_passes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("secrets/team-b.key"), "sk-team-b\n");
    let main = d.join("sluice.toml");
    write(
        &main,
        &format!(
            r#"
dynamic_dir = "conf.d"

[redis]
url = "redis://127.0.0.1:6379/0"
timeout = "20ms"

[ratelimit]
max_keys = 5000
sweep_interval = "5s"
{CLUSTER}
[[routes]]
name = "chat"
cluster = "models"
auth = "required"
auth_header = "api-key"
limits = ["rpm", "tpm"]
"#
        ),
    );
    write(
        &d.join("conf.d/20-consumers.toml"),
        &format!(
            r#"
[[consumers]]
name = "team-a"
key_sha256 = "{hash}"
models = ["gpt-4o", "llama-*"]
blocked_models = ["llama-guard"]
routes = ["chat"]
limits = ["streams"]

[[consumers]]
name = "team-b"
key_file = "../secrets/team-b.key"

[[limits]]
name = "rpm"
requests = 600
per = "1m"
burst = 100
key = ["consumer", "model"]

[[limits]]
name = "tpm"
tokens = 100000
key = ["consumer"]
backend = "redis"
on_redis_error = "closed"
bytes_per_token = 3.5
default_max_tokens = 512

[[limits]]
name = "streams"
concurrent = 8
key = ["consumer", "header:x-tenant", "client_ip", "route"]
"#,
            hash = "a".repeat(64),
        ),
    );
    assert_ok(&main);
}

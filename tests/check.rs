//! The `sluice check` contract, through the real binary.
//!
//! A good config exits 0 and prints `FILE: ok (...)` on stdout. A bad one exits non-zero and
//! prints one `file:key.path: reason` line per problem on stderr, every problem of the run at
//! once, so an operator fixes a file in one pass.

mod common;

use std::path::{Path, PathBuf};

use common::check::{
    assert_ok, assert_problems, check, compare, has, is, run, text, write, Want, CLUSTER, ROUTE,
};

/// `CLUSTER` and `ROUTE` followed by `extra` keys of the route.
fn route_with(extra: &str) -> String {
    format!("{CLUSTER}{ROUTE}{extra}\n")
}

/// A cluster named `models` with one backend URL, and `ROUTE`.
fn backend(url: &str) -> String {
    format!("[[clusters]]\nname = \"models\"\nbackends = [{{ url = \"{url}\" }}]\n{ROUTE}")
}

/// Each broken config, named, with every line that `check` must print for it.
fn broken_configs() -> Vec<(&'static str, String, Vec<Want>)> {
    let url_key = "clusters[0].backends[0].url";
    vec![
        (
            "unknown top-level key",
            format!("bogus = 1\n{CLUSTER}"),
            vec![has(
                "bogus",
                &["unknown field `bogus`, expected one of `listen`", "(line 1, column 1)"],
            )],
        ),
        (
            "unknown key in [server]",
            format!("[server]\nmax_conns = 5\n{CLUSTER}"),
            vec![has(
                "server.max_conns",
                &["unknown field `max_conns`, expected one of `workers`", "(line 2,"],
            )],
        ),
        (
            "unknown key in [[routes]]",
            route_with("prefix = \"/v1/\""),
            vec![has(
                "routes[0].prefix",
                &["unknown field `prefix`, expected one of `name`, `cluster`, `match`"],
            )],
        ),
        (
            "unknown key in a route's match",
            route_with("match = { prefix = \"/v1/\" }"),
            vec![has(
                "routes[0].match.prefix",
                &["unknown field `prefix`, expected one of `hosts`, `path`, `path_prefix`"],
            )],
        ),
        (
            "unknown key in a backend",
            "[[clusters]]\nname = \"models\"\nbackends = [{ url = \"http://a:1\", wieght = 2 }]\n"
                .to_owned(),
            vec![has(
                "clusters[0].backends[0].wieght",
                &["unknown field `wieght`, expected `url` or `weight`"],
            )],
        ),
        (
            "TOML syntax error",
            format!("[server\nworkers = 2\n{CLUSTER}"),
            vec![has("", &["unclosed table, expected `]`", "(line 1, column 8)"])],
        ),
        (
            "duplicate TOML key",
            route_with("name = \"again\""),
            vec![has("", &["duplicate key", "(line 9,"])],
        ),
        (
            "wrong type",
            format!("[server]\nmax_connections = \"many\"\n{CLUSTER}"),
            vec![has(
                "server.max_connections",
                &["invalid type: string \"many\", expected usize", "(line 2, column 19)"],
            )],
        ),
        (
            "missing required key",
            format!("{CLUSTER}\n[[routes]]\nname = \"chat\"\n"),
            vec![has("routes[0]", &["missing field `cluster`"])],
        ),
        (
            "unknown enum value",
            "[[clusters]]\nname = \"models\"\nprotocol = \"h3\"\nbackends = [{ url = \"http://a:1\" }]\n"
                .to_owned(),
            vec![has(
                "clusters[0].protocol",
                &["unknown variant `h3`, expected one of `http1`, `h2c`, `http2`, `auto`"],
            )],
        ),
        (
            "bad duration",
            format!("[server]\nheader_read_timeout = \"soon\"\n{CLUSTER}"),
            vec![has(
                "server.header_read_timeout",
                &["invalid duration `soon`", "(line 2,"],
            )],
        ),
        (
            "negative duration",
            format!("[upstream]\nconnect_timeout = -5\n{CLUSTER}"),
            vec![has("upstream.connect_timeout", &["a duration cannot be negative"])],
        ),
        (
            "bad duration in a cluster",
            "[[clusters]]\nname = \"models\"\ntotal_timeout = \"10 parsecs\"\nbackends = [{ url = \"http://a:1\" }]\n"
                .to_owned(),
            vec![has(
                "clusters[0].total_timeout",
                &["invalid duration `10 parsecs`", "unknown time unit \"parsecs\""],
            )],
        ),
        (
            "bad size",
            format!("[server]\nmax_request_body = \"lots\"\n{CLUSTER}"),
            vec![has("server.max_request_body", &["invalid size `lots`"])],
        ),
        (
            "max_header_size below 8KiB",
            format!("[server]\nmax_header_size = \"4KiB\"\n{CLUSTER}"),
            vec![is("server.max_header_size", "must be between 8KiB and 4GiB")],
        ),
        (
            "zero max_connections",
            format!("[server]\nmax_connections = 0\n{CLUSTER}"),
            vec![is("server.max_connections", "must be at least 1")],
        ),
        (
            "zero header_read_timeout",
            format!("[server]\nheader_read_timeout = \"0s\"\n{CLUSTER}"),
            vec![is("server.header_read_timeout", "must be longer than 0s")],
        ),
        (
            "bad trusted_proxies entry",
            format!("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n{CLUSTER}"),
            vec![is(
                "server.trusted_proxies[1]",
                "`10.0.0.0/33` is not an IP address or CIDR network",
            )],
        ),
        (
            "bad listen address",
            format!("[listen]\nhttp = \"localhost:8080\"\n{CLUSTER}"),
            vec![has("listen.http", &["invalid socket address syntax"])],
        ),
        (
            "listeners on the same port",
            format!("[listen]\nhttp = \"0.0.0.0:8421\"\n{CLUSTER}"),
            vec![is(
                "listen.monitor",
                "`0.0.0.0:8421` takes the same port as listen.http `0.0.0.0:8421`",
            )],
        ),
        (
            "invalid log.level",
            format!("[log]\nlevel = \"info,,=[\"\n{CLUSTER}"),
            vec![is(
                "log.level",
                "invalid filter `info,,=[`: invalid filter directive",
            )],
        ),
        (
            "an idle pool too large to allocate",
            format!("[upstream]\npool_max_idle_per_host = 100000000\n{CLUSTER}"),
            vec![is("upstream.pool_max_idle_per_host", "must be at most 65536")],
        ),
        (
            "a misspelt log level",
            format!("[log]\nlevel = \"inof\"\n{CLUSTER}"),
            vec![is(
                "log.level",
                "`inof` is not a level (trace, debug, info, warn, error, off); \
                 filter a target with `target=level`",
            )],
        ),
        (
            "invalid log.format",
            format!("[log]\nformat = \"xml\"\n{CLUSTER}"),
            vec![has(
                "log.format",
                &["unknown variant `xml`, expected `text` or `json`"],
            )],
        ),
        (
            "route naming a missing cluster",
            format!("{CLUSTER}{ROUTE}\n[[routes]]\nname = \"embed\"\ncluster = \"embedders\"\n"),
            vec![is(
                "routes[1].cluster",
                "route `embed` names cluster `embedders`, which is not defined",
            )],
        ),
        (
            "bad cluster name",
            "[[clusters]]\nname = \"my models\"\nbackends = [{ url = \"http://a:1\" }]\n"
                .to_owned(),
            vec![is(
                "clusters[0].name",
                "cluster name `my models` must be 1 to 128 letters, digits, `-`, `_` or `.`",
            )],
        ),
        (
            "weight 0",
            "[[clusters]]\nname = \"models\"\nbackends = [{ url = \"http://a:1\", weight = 0 }]\n"
                .to_owned(),
            vec![is("clusters[0].backends[0].weight", "must be at least 1")],
        ),
        (
            "cluster with no backends",
            format!("[[clusters]]\nname = \"models\"\nbackends = []\n{ROUTE}"),
            vec![is("clusters[0].backends", "a cluster needs at least one backend")],
        ),
        (
            "unparsable backend URL",
            backend("http://exa mple:80"),
            vec![is(
                url_key,
                "`http://exa mple:80` is not a valid URL: invalid uri character",
            )],
        ),
        (
            "backend URL without a scheme",
            backend("10.0.0.5:8000"),
            vec![is(
                url_key,
                "`10.0.0.5:8000`: the scheme must be `http`, `https` or `mock`",
            )],
        ),
        (
            "ftp backend",
            backend("ftp://files.example.com"),
            vec![is(
                url_key,
                "`ftp://files.example.com`: the scheme must be `http`, `https` or `mock`",
            )],
        ),
        (
            "h2c to an https backend",
            "[[clusters]]\nname = \"models\"\nprotocol = \"h2c\"\nbackends = [{ url = \"https://api.openai.com\" }]\n"
                .to_owned(),
            vec![is(
                url_key,
                "`https://api.openai.com`: protocol `h2c` is HTTP/2 without TLS; use `http2` or `auto` for https backends",
            )],
        ),
        (
            "http2 to an http backend",
            "[[clusters]]\nname = \"models\"\nprotocol = \"http2\"\nbackends = [{ url = \"http://10.0.0.5:8000\" }]\n"
                .to_owned(),
            vec![is(
                url_key,
                "`http://10.0.0.5:8000`: protocol `http2` is HTTP/2 over TLS; use `h2c` for HTTP/2 to http backends",
            )],
        ),
        (
            "client_cert without client_key",
            "[[clusters]]\nname = \"models\"\nbackends = [{ url = \"https://api.openai.com\" }]\ntls = { client_cert = \"client.pem\" }\n"
                .to_owned(),
            vec![is(
                "clusters[0].tls.client_key",
                "is required with client_cert",
            )],
        ),
        (
            "bad upstream server_name",
            "[[clusters]]\nname = \"models\"\nbackends = [{ url = \"https://api.openai.com\" }]\ntls = { server_name = \"not a name\" }\n"
                .to_owned(),
            vec![is(
                "clusters[0].tls.server_name",
                "`not a name` is not a DNS name or an IP address",
            )],
        ),
        (
            "backend URL with a path",
            backend("http://10.0.0.5:8000/v1"),
            vec![is(
                url_key,
                "`http://10.0.0.5:8000/v1` has a path or query; a backend is `http://host:port` (use a route's rewrite_prefix for paths)",
            )],
        ),
        (
            "backend URL with a user",
            backend("http://admin@10.0.0.5:8000"),
            vec![is(
                url_key,
                "`http://admin@10.0.0.5:8000`: a backend URL cannot carry a user name",
            )],
        ),
        (
            "bad mock:// parameter",
            backend("mock://m?speed=fast"),
            vec![is(
                url_key,
                "`mock://m?speed=fast`: unknown parameter `speed`; expected `tokens` or `delay`",
            )],
        ),
        (
            "bad mock:// token count",
            backend("mock://m?tokens=0"),
            vec![is(
                url_key,
                "`mock://m?tokens=0`: `tokens` must be a whole number from 1 to 100000",
            )],
        ),
        (
            "WebSocket limits on a route without WebSocket",
            route_with("websocket_idle_timeout = \"10s\""),
            vec![is(
                "routes[0].websocket_idle_timeout",
                "needs websocket = true on the route",
            )],
        ),
        (
            "both path and path_prefix",
            route_with("match = { path = \"/v1/models\", path_prefix = \"/v1/\" }"),
            vec![is(
                "routes[0].match",
                "set only one of path, path_prefix and path_regex",
            )],
        ),
        (
            "path not starting with /",
            route_with("match = { path_prefix = \"v1/\" }"),
            vec![is(
                "routes[0].match.path_prefix",
                "`v1/` must be a path starting with `/`",
            )],
        ),
        (
            "bad regex",
            route_with("match = { path_regex = \"^/v1/(chat\" }"),
            vec![is(
                "routes[0].match.path_regex",
                "`^/v1/(chat` is not a valid regex: unclosed group",
            )],
        ),
        (
            "host pattern with a port",
            route_with("match = { hosts = [\"api.example.com\", \"api.example.com:8080\"] }"),
            vec![is(
                "routes[0].match.hosts[1]",
                "`api.example.com:8080` is not a host name or a `*.example.com` wildcard (no port)",
            )],
        ),
        (
            "wildcard host in the middle",
            route_with("match = { hosts = [\"api.*.com\"] }"),
            vec![is(
                "routes[0].match.hosts[0]",
                "`api.*.com` is not a host name or a `*.example.com` wildcard (no port)",
            )],
        ),
        (
            "bad method",
            route_with("match = { methods = [\"POST\", \"GE T\"] }"),
            vec![is(
                "routes[0].match.methods[1]",
                "`GE T` is not an HTTP method",
            )],
        ),
        (
            "bad header name in match",
            route_with("match = { headers = [{ name = \"x tenant\" }] }"),
            vec![is(
                "routes[0].match.headers[0].name",
                "`x tenant` is not a valid header name",
            )],
        ),
        (
            "rewrite_prefix with path_regex",
            route_with("match = { path_regex = \"^/v1/\" }\nrewrite_prefix = \"/\""),
            vec![is(
                "routes[0].rewrite_prefix",
                "needs match.path or match.path_prefix, not match.path_regex",
            )],
        ),
        (
            "rewrite_prefix with a query",
            route_with("match = { path_prefix = \"/v1/\" }\nrewrite_prefix = \"/v2?x=1\""),
            vec![is(
                "routes[0].rewrite_prefix",
                "`/v2?x=1` must be empty or a path starting with `/`",
            )],
        ),
        (
            "host_rewrite with preserve_host",
            route_with("host_rewrite = \"models.internal\"\npreserve_host = true"),
            vec![is(
                "routes[0].host_rewrite",
                "cannot be combined with preserve_host = true",
            )],
        ),
        (
            "bad header edit",
            route_with("response_headers = { remove = [\"server\", \"x bad\"] }"),
            vec![is(
                "routes[0].response_headers.remove[1]",
                "`x bad` is not a valid header name",
            )],
        ),
        (
            "duplicate cluster names",
            format!("{CLUSTER}{CLUSTER}"),
            vec![is(
                "clusters[1].name",
                "cluster `models` is already defined in {file}",
            )],
        ),
        (
            "duplicate route names",
            format!("{CLUSTER}{ROUTE}{ROUTE}"),
            vec![is(
                "routes[1].name",
                "route `chat` is already defined in {file}",
            )],
        ),
    ]
}

#[test]
fn broken_configs_name_the_file_the_key_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let cases = broken_configs();
    assert!(cases.len() >= 14);
    for (i, (name, toml, want)) in cases.into_iter().enumerate() {
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
fn every_problem_is_reported_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("sluice.toml");
    let routes = dir.path().join("conf.d/routes.toml");
    write(
        &main,
        r#"
dynamic_dir = "conf.d"

[server]
max_connections = 0
trusted_proxies = ["not-an-ip"]

[[clusters]]
name = "models"
backends = [
  { url = "http://127.0.0.1:9000", weight = 0 },
  { url = "ftp://127.0.0.1:9001" },
]
"#,
    );
    write(
        &routes,
        r#"
[[routes]]
name = "chat"
cluster = "nope"
match = { path_prefix = "v1", methods = ["P OST"] }
"#,
    );
    let out = check(&main);
    assert_problems(
        &out,
        &[
            (&main, is("server.max_connections", "must be at least 1")),
            (
                &main,
                is(
                    "server.trusted_proxies[0]",
                    "`not-an-ip` is not an IP address or CIDR network",
                ),
            ),
            (
                &main,
                is("clusters[0].backends[0].weight", "must be at least 1"),
            ),
            (
                &main,
                has(
                    "clusters[0].backends[1].url",
                    &["`ftp://127.0.0.1:9001`: the scheme must be `http`, `https` or `mock`"],
                ),
            ),
            (
                &routes,
                is(
                    "routes[0].cluster",
                    "route `chat` names cluster `nope`, which is not defined",
                ),
            ),
            (
                &routes,
                is(
                    "routes[0].match.path_prefix",
                    "`v1` must be a path starting with `/`",
                ),
            ),
            (
                &routes,
                is(
                    "routes[0].match.methods[0]",
                    "`P OST` is not an HTTP method",
                ),
            ),
        ],
    );
}

#[test]
fn a_missing_dynamic_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("sluice.toml");
    write(
        &main,
        &format!("dynamic_dir = \"conf.d\"\n{CLUSTER}{ROUTE}"),
    );
    let missing = dir.path().join("conf.d");
    let reason = format!("cannot read directory {}", missing.display());
    assert_problems(
        &check(&main),
        &[(&main, Want::Has("dynamic_dir", vec![reason]))],
    );
}

#[test]
fn errors_in_dynamic_files_name_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("sluice.toml");
    let a = dir.path().join("conf.d/10-a.toml");
    let b = dir.path().join("conf.d/20-b.toml");
    write(&main, &format!("dynamic_dir = \"conf.d\"\n{CLUSTER}"));
    let bad_route =
        "[[routes]]\nname = \"bad\"\ncluster = \"models\"\nmatch = { path = \"models\" }\n";
    write(&a, &format!("{ROUTE}{bad_route}"));
    write(
        &b,
        "[[routes]]\nname = \"embed\"\ncluster = \"embedders\"\n",
    );
    assert_problems(
        &check(&main),
        &[
            (
                &a,
                is(
                    "routes[1].match.path",
                    "`models` must be a path starting with `/`",
                ),
            ),
            (
                &b,
                is(
                    "routes[0].cluster",
                    "route `embed` names cluster `embedders`, which is not defined",
                ),
            ),
        ],
    );

    // A dynamic file holds routes and clusters only. A file that does not parse reports its
    // first parse error; the checks across files wait until every file parses.
    write(&b, "[server]\nworkers = 4\n");
    assert_problems(
        &check(&main),
        &[(
            &b,
            has(
                "server",
                &[
                    "unknown field `server`, expected one of `clusters`, `routes`, `certificates`, `tls`",
                    "(line 1,",
                ],
            ),
        )],
    );
}

#[test]
fn duplicates_across_files_name_the_first_file() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("sluice.toml");
    let a = dir.path().join("conf.d/10-a.toml");
    let b = dir.path().join("conf.d/20-b.toml");
    write(&main, &format!("dynamic_dir = \"conf.d\"\n{CLUSTER}"));
    write(&a, &format!("{CLUSTER}{ROUTE}"));
    write(&b, ROUTE);
    assert_problems(
        &check(&main),
        &[
            (
                &a,
                is(
                    "clusters[0].name",
                    format!("cluster `models` is already defined in {}", main.display()),
                ),
            ),
            (
                &b,
                is(
                    "routes[0].name",
                    format!("route `chat` is already defined in {}", a.display()),
                ),
            ),
        ],
    );
}

#[test]
fn dynamic_dir_reads_toml_files_and_skips_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("sluice.toml");
    let conf_d = dir.path().join("conf.d");
    write(&main, &format!("dynamic_dir = \"conf.d\"\n{CLUSTER}"));
    // A route in the directory may use a cluster of the main file, and the other way round.
    write(&conf_d.join("routes.toml"), ROUTE);
    write(
        &conf_d.join("embed.toml"),
        "[[clusters]]\nname = \"embed\"\nbackends = [{ url = \"mock://embed\" }]\n",
    );
    // Hidden entries (kubelet's `..data`), other extensions and subdirectories are skipped.
    write(&conf_d.join(".hidden.toml"), "not toml at all [");
    write(&conf_d.join("..data/routes.toml"), "not toml at all [");
    write(&conf_d.join("README.md"), "not toml at all [");
    write(&conf_d.join("routes.toml.bak"), "not toml at all [");
    let stdout = assert_ok(&main);
    assert!(
        stdout.contains("(1 routes, 2 clusters, version "),
        "{stdout}"
    );
}

#[test]
fn a_good_config_says_ok_with_counts_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    write(&path, &format!("{CLUSTER}{ROUTE}"));
    let stdout = assert_ok(&path);
    let rest = stdout
        .strip_prefix(&format!(
            "{}: ok (1 routes, 1 clusters, version ",
            path.display()
        ))
        .unwrap_or_else(|| panic!("stdout: {stdout}"));
    let version = rest.strip_suffix(")\n").expect("one line");
    assert_eq!(version.len(), 16, "{version}");
    assert!(version.bytes().all(|b| b.is_ascii_hexdigit()), "{version}");

    // The version is a digest of the files: a change gives a new one.
    write(&path, &format!("{CLUSTER}{ROUTE}\n# edited\n"));
    let edited = assert_ok(&path);
    assert_ne!(edited, stdout);
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let out = check(&path);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}: ", path.display())),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn shipped_configs_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert_ok(&root.join("conf/sluice.toml"));

    // conf/examples/*.toml, and conf/examples/<dir>/sluice.toml for examples with a dynamic_dir.
    let mut examples: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(root.join("conf/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            examples.push(path.join("sluice.toml"));
        } else if path.extension().is_some_and(|e| e == "toml") {
            examples.push(path);
        }
    }
    assert!(examples.len() >= 2, "too few examples: {examples:?}");
    for path in &examples {
        let text = std::fs::read_to_string(path).unwrap();
        if text.contains("[[certificates]]") {
            check_with_made_certificates(path, &text);
        } else if text.contains("env = \"OPENAI_API_KEY\"") {
            // Reads a provider key from the environment: tests/check_models.rs checks it
            // with one set.
            continue;
        } else {
            assert_ok(path);
        }
    }
}

/// Certificate files are not shipped: checks a copy of a TLS example beside certificates made
/// for each `cert`, `key` and `ca` path it names.
fn check_with_made_certificates(example: &Path, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::pki::Ca::new("example CA");
    let value = |line: &str| line.split('"').nth(1).map(str::to_owned);
    for line in text.lines().map(str::trim) {
        let Some(file) = value(line) else { continue };
        let path = dir.path().join(&file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if line.starts_with("cert =") {
            let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
            ca.server(&[stem.as_str()])
                .write(path.parent().unwrap(), &stem);
        } else if line.starts_with("ca =") {
            std::fs::write(&path, ca.pem()).unwrap();
        }
    }
    let copy = dir.path().join(example.file_name().unwrap());
    std::fs::write(&copy, text).unwrap();
    assert_ok(&copy);
}

#[test]
fn version_and_help() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    let version = format!("sluice {}\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(text(&out.stdout), version);

    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(help.contains("check") && help.contains("run"), "{help}");

    let out = run(&["check", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(help.contains("--config"), "{help}");
}

//! Checks the parsed files and builds the runtime objects in the same pass.
//!
//! A bad value never becomes a runtime object: each check sits where the object is built, and
//! every failure is collected with its file and key so that one run reports all of them.

mod limits;
mod models;
mod resilience;
mod tls;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Method, Uri};
use ipnet::IpNet;
use regex::Regex;

use super::carry::Previous;
use super::file::{self, MainFile, UpstreamDefaults, UpstreamProtocol};
use super::snapshot::{
    Backend, Cluster, HeaderEdits, HostPolicy, Route, Snapshot, Timeouts, WebSocketLimits,
};
use super::units::HumanDuration;
use super::{ConfigError, DynamicSources, ReloadSettings, ServerSettings, StaticConfig};
use crate::metrics::{ClusterMetrics, Metrics};
use crate::mock::MockBackend;
use crate::proxy::route::{PathMatch, RouteMatcher, Router};
use crate::upstream::health::BackendState;
use crate::upstream::tls::TlsTarget;
use crate::upstream::{ClientSettings, HttpBackend, Target};

/// Collects errors against one file.
struct Errors<'a> {
    file: &'a Path,
    list: &'a mut Vec<ConfigError>,
}

impl Errors<'_> {
    fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.to_owned(),
            key: key.into(),
            reason: reason.into(),
        });
    }
}

/// Checks the static part of the main file.
pub fn static_config(
    path: &Path,
    main: &MainFile,
    list: &mut Vec<ConfigError>,
) -> Option<StaticConfig> {
    let before = list.len();
    let mut errors = Errors { file: path, list };
    let s = &main.server;
    if s.max_connections == 0 {
        errors.push("server.max_connections", "must be at least 1");
    }
    if s.max_headers == 0 {
        errors.push("server.max_headers", "must be at least 1");
    }
    if s.max_header_size.0 < 8192 || s.max_header_size.0 > u64::from(u32::MAX) {
        errors.push("server.max_header_size", "must be between 8KiB and 4GiB");
    }
    if s.header_read_timeout.0.is_zero() {
        errors.push("server.header_read_timeout", "must be longer than 0s");
    }
    let (http, monitor) = (main.listen.http, main.listen.monitor);
    let overlap =
        http.ip() == monitor.ip() || http.ip().is_unspecified() || monitor.ip().is_unspecified();
    if http.port() != 0 && http.port() == monitor.port() && overlap {
        errors.push(
            "listen.monitor",
            format!("`{monitor}` takes the same port as listen.http `{http}`"),
        );
    }
    let mut trusted_proxies = Vec::new();
    for (i, text) in s.trusted_proxies.iter().enumerate() {
        match parse_net(text) {
            Some(net) => trusted_proxies.push(net),
            None => errors.push(
                format!("server.trusted_proxies[{i}]"),
                format!("`{text}` is not an IP address or CIDR network"),
            ),
        }
    }
    if main.upstream.pool_max_idle_per_host > MAX_IDLE_PER_HOST {
        errors.push(
            "upstream.pool_max_idle_per_host",
            format!("must be at most {MAX_IDLE_PER_HOST}"),
        );
    }
    if let Err(reason) = check_log_filter(&main.log.level) {
        errors.push("log.level", reason);
    }
    let reload = reload_settings(&main.reload, &mut errors);
    let (redis, ratelimit) = limits::static_settings(main, &mut errors);
    if list.len() > before {
        return None;
    }
    Some(StaticConfig {
        http_addr: main.listen.http,
        https_addr: main.listen.https,
        monitor_addr: main.listen.monitor,
        server: ServerSettings {
            workers: s.workers,
            max_connections: s.max_connections,
            header_read_timeout: s.header_read_timeout.0,
            send_timeout: Some(s.send_timeout.0).filter(|d| !d.is_zero()),
            body_read_timeout: Some(s.body_read_timeout.0).filter(|d| !d.is_zero()),
            max_header_size: s.max_header_size.as_usize(),
            max_headers: s.max_headers,
            max_request_body: s.max_request_body.0,
            // Never more than a request may carry.
            max_buffered_body: s.max_buffered_body.0.min(s.max_request_body.0),
            http2: s.http2,
            shutdown_delay: s.shutdown_delay.0,
            drain_timeout: s.drain_timeout.0,
            trusted_proxies,
        },
        upstream: main.upstream.clone(),
        log: main.log.clone(),
        reload,
        redis,
        ratelimit,
    })
}

/// `[reload]`: a token that fits in an `Authorization` header, a debounce that neither spins
/// nor stalls.
fn reload_settings(r: &file::Reload, errors: &mut Errors) -> ReloadSettings {
    if let Some(token) = &r.token {
        let printable = token.bytes().all(|b| b.is_ascii_graphic());
        if token.is_empty() || !printable {
            errors.push(
                "reload.token",
                "must be 1 or more printable ASCII characters without spaces",
            );
        }
    }
    let debounce = r.watch_debounce.0;
    if debounce < Duration::from_millis(10) || debounce > Duration::from_secs(60) {
        errors.push("reload.watch_debounce", "must be between 10ms and 1m");
    }
    ReloadSettings {
        token: r.token.clone(),
        watch: r.watch,
        watch_debounce: debounce,
    }
}

/// A `tracing` filter whose bare words are level names: `tracing` would read `inof` as a
/// target and log nothing, so a typo must not pass. Targets take `target=level`.
fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("invalid filter `{filter}`: {e}"))?;
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=') && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{directive}` is not a level (trace, debug, info, warn, error, off); \
                 filter a target with `target=level`"
            ));
        }
    }
    Ok(())
}

fn parse_net(text: &str) -> Option<IpNet> {
    IpNet::from_str(text)
        .ok()
        .or_else(|| std::net::IpAddr::from_str(text).ok().map(IpNet::from))
}

/// Checks the dynamic sections of every file together and compiles them into a snapshot.
pub fn snapshot(
    sources: &DynamicSources,
    defaults: &UpstreamDefaults,
    metrics: &Metrics,
) -> Result<Snapshot, Vec<ConfigError>> {
    snapshot_with(sources, defaults, metrics, &mut Previous::none())
}

/// [`snapshot`], for a reload: what did not change is taken over from `previous`, the
/// running snapshot (see `config::carry`).
pub fn snapshot_with(
    sources: &DynamicSources,
    defaults: &UpstreamDefaults,
    metrics: &Metrics,
    previous: &mut Previous,
) -> Result<Snapshot, Vec<ConfigError>> {
    let mut list = Vec::new();
    let mut notes = tls::Notes::new();
    let mut clusters: Vec<Arc<Cluster>> = Vec::new();
    let mut cluster_files: HashMap<&str, &PathBuf> = HashMap::new();
    for (path, file) in &sources.files {
        let mut errors = Errors {
            file: path,
            list: &mut list,
        };
        for (i, c) in file.clusters.iter().enumerate() {
            let key = format!("clusters[{i}]");
            if let Some(first) = cluster_files.get(c.name.as_str()) {
                errors.push(
                    format!("{key}.name"),
                    format!(
                        "cluster `{}` is already defined in {}",
                        c.name,
                        first.display()
                    ),
                );
                continue;
            }
            cluster_files.insert(&c.name, path);
            let built = cluster(
                &key,
                c,
                defaults,
                metrics,
                &mut errors,
                &mut notes,
                previous,
            );
            if let Some(cluster) = built {
                clusters.push(Arc::new(cluster));
            }
        }
    }

    let access = limits::compile(sources, metrics, &mut list);
    let by_name: HashMap<&str, &Arc<Cluster>> =
        clusters.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut routes = Vec::new();
    let mut route_files: HashMap<&str, &PathBuf> = HashMap::new();
    for (path, file) in &sources.files {
        let mut errors = Errors {
            file: path,
            list: &mut list,
        };
        for (i, r) in file.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            if let Some(first) = route_files.get(r.name.as_str()) {
                errors.push(
                    format!("{key}.name"),
                    format!(
                        "route `{}` is already defined in {}",
                        r.name,
                        first.display()
                    ),
                );
                continue;
            }
            route_files.insert(&r.name, path);
            let targets = models::targets(&key, r, &by_name, &cluster_files, metrics, &mut errors);
            if let Some(route) = route(&key, r, targets, &access, metrics, &mut errors) {
                routes.push(route);
            }
        }
    }
    let tls = tls::listener(sources, &mut list, &mut notes);
    if !list.is_empty() {
        return Err(list);
    }
    let model_names = models::public_names(&routes, &clusters);
    Ok(Snapshot {
        models_json: crate::llm::models::list_json(&model_names),
        model_names,
        version: sources.version.clone(),
        router: Router::new(routes.iter().map(|r| &r.matcher)),
        routes,
        clusters,
        unmatched: metrics.route("", ""),
        tls,
        cert_expiry: notes.cert_expiry,
        warnings: notes.warnings,
        consumers: access.consumers,
    })
}

fn check_name(kind: &str, key: &str, name: &str, errors: &mut Errors) {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        errors.push(
            format!("{key}.name"),
            format!("{kind} name `{name}` must be 1 to 128 letters, digits, `-`, `_` or `.`"),
        );
    }
}

/// Backends per cluster; bounds the cost of building the round-robin schedule.
const MAX_BACKENDS: usize = 1024;
/// Idle connections per backend; the pool's queue is allocated up front.
const MAX_IDLE_PER_HOST: usize = 65536;

fn cluster(
    key: &str,
    c: &file::Cluster,
    defaults: &UpstreamDefaults,
    metrics: &Metrics,
    errors: &mut Errors,
    notes: &mut tls::Notes,
    previous: &mut Previous,
) -> Option<Cluster> {
    let before = errors.list.len();
    check_name("cluster", key, &c.name, errors);
    if c.backends.is_empty() {
        errors.push(
            format!("{key}.backends"),
            "a cluster needs at least one backend",
        );
    }
    if c.backends.len() > MAX_BACKENDS {
        errors.push(
            format!("{key}.backends"),
            format!("a cluster has at most {MAX_BACKENDS} backends"),
        );
    }
    let pick = |own: Option<HumanDuration>, default: HumanDuration| {
        Some(own.unwrap_or(default).0).filter(|d| !d.is_zero())
    };
    let timeouts = Timeouts {
        connect: pick(c.connect_timeout, defaults.connect_timeout),
        response_header: pick(c.response_header_timeout, defaults.response_header_timeout),
        first_byte: pick(c.first_byte_timeout, defaults.first_byte_timeout),
        idle: pick(c.idle_timeout, defaults.idle_timeout),
        total: pick(c.total_timeout, defaults.total_timeout),
    };
    let settings = ClientSettings {
        protocol: c.protocol,
        connect_timeout: timeouts.connect,
        pool_idle_timeout: pick(c.pool_idle_timeout, defaults.pool_idle_timeout),
        pool_max_idle_per_host: c
            .pool_max_idle_per_host
            .unwrap_or(defaults.pool_max_idle_per_host),
    };
    if c.pool_max_idle_per_host
        .is_some_and(|n| n > MAX_IDLE_PER_HOST)
    {
        errors.push(
            format!("{key}.pool_max_idle_per_host"),
            format!("must be at most {MAX_IDLE_PER_HOST}"),
        );
    }
    if settings.pool_max_idle_per_host > MAX_IDLE_PER_HOST {
        // Reported once, above or for [upstream]; no pool is built at that size.
        return None;
    }
    let cluster_metrics = metrics.cluster(&c.name);
    let has_https = c
        .backends
        .iter()
        .any(|b| Uri::from_str(&b.url).is_ok_and(|u| u.scheme_str() == Some("https")));
    let cluster_tls = tls::cluster(key, c, has_https, errors, notes);
    let mut backends = Vec::new();
    for (i, b) in c.backends.iter().enumerate() {
        let key = format!("{key}.backends[{i}]");
        if b.weight == 0 {
            errors.push(format!("{key}.weight"), "must be at least 1");
        }
        // The running backend this one continues; its state carries over (config::carry).
        let old = previous.take_backend(&c.name, &b.url);
        let client = Client {
            settings: &settings,
            tls: cluster_tls.as_ref(),
            metrics: &cluster_metrics,
        };
        match backend_target(&b.url, &client, old, previous) {
            Ok(Some((target, authority))) => backends.push(Backend {
                url: b.url.clone(),
                weight: b.weight,
                state: match &target {
                    Target::Http(http) => Arc::clone(http.state()),
                    Target::Mock(_) => Arc::new(BackendState::new()),
                },
                target,
                authority,
            }),
            Ok(None) => {}
            Err(reason) => errors.push(format!("{key}.url"), reason),
        }
    }
    let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
    let names: Vec<&str> = backends.iter().map(|b| b.url.as_str()).collect();
    let extras = resilience::cluster(key, c, &names, &weights, metrics, errors);
    if errors.list.len() > before {
        return None;
    }
    let extras = extras?;
    Some(Cluster {
        name: c.name.clone(),
        protocol: c.protocol,
        balancer: extras.balancer,
        hash_on: extras.hash_on,
        panic_mode: extras.panic_mode,
        health_check: extras.health_check,
        outlier: extras.outlier,
        retry: extras.retry,
        credentials: extras.credentials,
        concurrency: extras.concurrency,
        model_rewrite: extras.model_rewrite,
        handles: extras.handles,
        backends,
        timeouts,
        metrics: cluster_metrics,
    })
}

/// What a cluster's HTTP backends are built with.
struct Client<'a> {
    settings: &'a ClientSettings,
    tls: Option<&'a tls::ClusterTls>,
    metrics: &'a ClusterMetrics,
}

/// Parses a backend URL into where it lives and its `host:port`. `Ok(None)`: an `https://`
/// backend whose cluster's TLS settings failed (those errors are reported already). An HTTP
/// backend built exactly as `old` was reuses `old`'s, connections and all.
fn backend_target<'a>(
    url: &str,
    client: &Client,
    old: Option<&'a Backend>,
    previous: &mut Previous<'a>,
) -> Result<Option<(Target, HeaderValue)>, String> {
    let Client {
        settings,
        tls: cluster_tls,
        metrics,
    } = *client;
    let uri = Uri::from_str(url).map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if scheme == "mock" {
        let mock = MockBackend::from_uri(&uri).map_err(|e| format!("`{url}`: {e}"))?;
        let authority = HeaderValue::from_str(mock.name())
            .map_err(|_| format!("`{url}`: the mock name is not a valid host"))?;
        return Ok(Some((Target::Mock(mock), authority)));
    }
    let https = match scheme {
        "http" => false,
        "https" => true,
        _ => {
            return Err(format!(
                "`{url}`: the scheme must be `http`, `https` or `mock`"
            ))
        }
    };
    match (https, settings.protocol) {
        (true, UpstreamProtocol::H2c) => {
            return Err(format!(
                "`{url}`: protocol `h2c` is HTTP/2 without TLS; use `http2` or `auto` for https backends"
            ))
        }
        (false, UpstreamProtocol::Http2) => {
            return Err(format!(
                "`{url}`: protocol `http2` is HTTP/2 over TLS; use `h2c` for HTTP/2 to http backends"
            ))
        }
        _ => {}
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("`{url}` has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!("`{url}`: a backend URL cannot carry a user name"));
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(format!(
            "`{url}` has a path or query; a backend is `http://host:port` (use a route's rewrite_prefix for paths)"
        ));
    }
    let host = HeaderValue::from_str(authority.as_str())
        .map_err(|_| format!("`{url}`: the host is not a valid header value"))?;
    let tls = match (https, cluster_tls) {
        (false, _) => None,
        (true, None) => return Ok(None),
        (true, Some(cluster_tls)) => {
            let server_name = match &cluster_tls.server_name {
                Some(name) => name.clone(),
                None => crate::upstream::tls::server_name(authority.host())
                    .map_err(|reason| format!("`{url}`: {reason}"))?,
            };
            Some(TlsTarget {
                config: Arc::clone(&cluster_tls.config),
                server_name,
                fingerprint: cluster_tls.fingerprint,
            })
        }
    };
    if let Some(kept) = previous.reuse_http(old, settings, tls.as_ref()) {
        return Ok(Some((Target::Http(kept), host)));
    }
    let backend = HttpBackend::new(authority.clone(), settings.clone(), tls, metrics.clone());
    Ok(Some((Target::Http(Arc::new(backend)), host)))
}

fn route(
    key: &str,
    r: &file::Route,
    targets: Option<(Vec<crate::config::snapshot::RouteTarget>, usize)>,
    access: &limits::Access,
    metrics: &Metrics,
    errors: &mut Errors,
) -> Option<Route> {
    let before = errors.list.len();
    check_name("route", key, &r.name, errors);
    let matcher = matcher(&format!("{key}.match"), &r.matcher, errors);
    if let Some(prefix) = &r.rewrite_prefix {
        let path_kind = matcher.as_ref().map(|m| &m.path);
        if matches!(path_kind, Some(PathMatch::Regex(_))) {
            errors.push(
                format!("{key}.rewrite_prefix"),
                "needs match.path or match.path_prefix, not match.path_regex",
            );
        }
        let is_path = prefix.starts_with('/')
            && !prefix.contains('?')
            && PathAndQuery::from_str(prefix).is_ok();
        if !(prefix.is_empty() || is_path) {
            errors.push(
                format!("{key}.rewrite_prefix"),
                format!("`{prefix}` must be empty or a path starting with `/`"),
            );
        }
    }
    let host = match (&r.host_rewrite, r.preserve_host) {
        (Some(_), true) => {
            errors.push(
                format!("{key}.host_rewrite"),
                "cannot be combined with preserve_host = true",
            );
            HostPolicy::Backend
        }
        (Some(host), false) => match HeaderValue::from_str(host) {
            Ok(v) if !host.is_empty() => HostPolicy::Rewrite(v),
            _ => {
                errors.push(
                    format!("{key}.host_rewrite"),
                    format!("`{host}` is not a valid host"),
                );
                HostPolicy::Backend
            }
        },
        (None, true) => HostPolicy::Preserve,
        (None, false) => HostPolicy::Backend,
    };
    if !r.websocket {
        for (set, name) in [
            (r.websocket_idle_timeout.is_some(), "websocket_idle_timeout"),
            (r.websocket_max_duration.is_some(), "websocket_max_duration"),
        ] {
            if set {
                errors.push(
                    format!("{key}.{name}"),
                    "needs websocket = true on the route",
                );
            }
        }
    }
    let request_headers = header_edits(
        &format!("{key}.request_headers"),
        &r.request_headers,
        errors,
    );
    let response_headers = header_edits(
        &format!("{key}.response_headers"),
        &r.response_headers,
        errors,
    );
    let (auth, limits) = limits::route_access(key, r, access, errors);
    let model_rewrite =
        models::model_rewrite(&format!("{key}.model_rewrite"), &r.model_rewrite, errors);
    if errors.list.len() > before {
        return None;
    }
    let (targets, split_len) = targets?;
    let cluster = &targets[0].cluster;
    let own = |value: Option<HumanDuration>, inherited: Option<Duration>| match value {
        Some(d) if d.0.is_zero() => None,
        Some(d) => Some(d.0),
        None => inherited,
    };
    let inherited = cluster.timeouts;
    let timeouts = Timeouts {
        connect: inherited.connect,
        response_header: own(r.response_header_timeout, inherited.response_header),
        first_byte: own(r.first_byte_timeout, inherited.first_byte),
        idle: own(r.idle_timeout, inherited.idle),
        total: own(r.total_timeout, inherited.total),
    };
    let websocket = r.websocket.then(|| WebSocketLimits {
        idle: own(r.websocket_idle_timeout, Some(Duration::from_secs(300))),
        max_duration: own(r.websocket_max_duration, Some(Duration::from_secs(3600))),
    });
    Some(Route {
        name: r.name.clone(),
        matcher: matcher?,
        metrics: metrics.route(&r.name, &cluster.name),
        cluster: Arc::clone(cluster),
        split: models::split(&targets, split_len),
        targets,
        split_len,
        model_rewrite,
        models_endpoint: r.models_endpoint,
        rewrite_prefix: r.rewrite_prefix.clone(),
        host,
        request_headers,
        response_headers,
        timeouts,
        llm: r.llm,
        include_usage: r.include_usage,
        sse_error_event: r.sse_error_event,
        websocket,
        auth,
        limits,
    })
}

fn matcher(key: &str, m: &file::Match, errors: &mut Errors) -> Option<RouteMatcher> {
    let before = errors.list.len();
    let path = match (&m.path, &m.path_prefix, &m.path_regex) {
        (None, None, None) => PathMatch::Prefix("/".to_owned()),
        (Some(p), None, None) => PathMatch::Exact(check_path(&format!("{key}.path"), p, errors)),
        (None, Some(p), None) => {
            PathMatch::Prefix(check_path(&format!("{key}.path_prefix"), p, errors))
        }
        (None, None, Some(re)) => match Regex::new(re) {
            Ok(re) => PathMatch::Regex(re),
            Err(e) => {
                // The parser's message spans lines and draws a caret; keep its last line.
                let text = e.to_string();
                let detail = text
                    .lines()
                    .rev()
                    .find_map(|line| line.trim().strip_prefix("error: "))
                    .unwrap_or(text.trim());
                errors.push(
                    format!("{key}.path_regex"),
                    format!("`{re}` is not a valid regex: {detail}"),
                );
                PathMatch::Prefix("/".to_owned())
            }
        },
        _ => {
            errors.push(
                key.to_owned(),
                "set only one of path, path_prefix and path_regex",
            );
            PathMatch::Prefix("/".to_owned())
        }
    };
    let mut hosts = Vec::new();
    for (i, text) in m.hosts.iter().enumerate() {
        let host = text.to_ascii_lowercase();
        if valid_host_pattern(&host) {
            hosts.push(host);
        } else {
            errors.push(
                format!("{key}.hosts[{i}]"),
                format!("`{text}` is not a host name or a `*.example.com` wildcard (no port)"),
            );
        }
    }
    let mut methods = Vec::new();
    for (i, method) in m.methods.iter().enumerate() {
        match Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
            Ok(method) => methods.push(method),
            Err(_) => errors.push(
                format!("{key}.methods[{i}]"),
                format!("`{method}` is not an HTTP method"),
            ),
        }
    }
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        let name = HeaderName::from_bytes(h.name.as_bytes());
        let value = h.value.as_deref().map(HeaderValue::from_str).transpose();
        match (name, value) {
            (Ok(name), Ok(value)) => headers.push((name, value)),
            (Err(_), _) => errors.push(
                format!("{key}.headers[{i}].name"),
                format!("`{}` is not a valid header name", h.name),
            ),
            (_, Err(_)) => errors.push(
                format!("{key}.headers[{i}].value"),
                "is not a valid header value",
            ),
        }
    }
    let models = models::model_match(&format!("{key}.models"), m.models.as_ref(), errors);
    (errors.list.len() == before).then_some(RouteMatcher {
        hosts,
        path,
        methods,
        headers,
        models,
    })
}

fn check_path(key: &str, path: &str, errors: &mut Errors) -> String {
    if !path.starts_with('/') || PathAndQuery::from_str(path).is_err() || path.contains('?') {
        errors.push(
            key.to_owned(),
            format!("`{path}` must be a path starting with `/`"),
        );
    }
    path.to_owned()
}

/// `api.example.com` or `*.example.com`: letters, digits, `-` and `.`, no port.
fn valid_host_pattern(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && !name.starts_with('.')
        && !name.ends_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn header_edits(key: &str, ops: &file::HeaderOps, errors: &mut Errors) -> HeaderEdits {
    let mut edits = HeaderEdits::default();
    for (name, value) in &ops.set {
        match (HeaderName::from_str(name), HeaderValue::from_str(value)) {
            (Ok(name), Ok(value)) => edits.set.push((name, value)),
            (Err(_), _) => errors.push(
                format!("{key}.set.{name}"),
                format!("`{name}` is not a valid header name"),
            ),
            (_, Err(_)) => errors.push(format!("{key}.set.{name}"), "is not a valid header value"),
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        match HeaderName::from_str(name) {
            Ok(name) => edits.remove.push(name),
            Err(_) => errors.push(
                format!("{key}.remove[{i}]"),
                format!("`{name}` is not a valid header name"),
            ),
        }
    }
    edits
}

//! Checks and builds API-key consumers and rate limits, a route's auth and limits, and the
//! static `[redis]` and `[ratelimit]` sections.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use super::{check_name, Errors};
use crate::config::file::{self, LimitBackend, MainFile};
use crate::config::{ConfigError, DynamicSources};
use crate::metrics::Metrics;
use crate::proxy::auth::{self, Consumer, Consumers, KeyHash, ModelList, RouteAuth};
use crate::ratelimit::bucket::Rate;
use crate::ratelimit::key::KeyPart;
use crate::ratelimit::redis::{check_url, RedisSettings};
use crate::ratelimit::{Backend, Estimate, Kind, Limit, OnRedisError, StoreSettings};

/// The period of `requests` and `tokens` when `per` is not set.
const DEFAULT_PER: Duration = Duration::from_secs(60);
/// Prompt bytes per token of the token estimate.
const DEFAULT_BYTES_PER_TOKEN: f64 = 4.0;
/// Output tokens assumed for a request that sets no maximum.
const DEFAULT_MAX_TOKENS: u64 = 256;
/// Limits one route or consumer may name; bounds the work of one decision.
const MAX_LIMITS_PER_REQUEST: usize = 16;

/// The consumers and limits of a config.
pub(super) struct Access {
    pub limits: HashMap<String, Arc<Limit>>,
    /// Every limit name written, valid or not (an invalid one is reported once, not again
    /// by each route that names it).
    pub defined: HashSet<String>,
    pub consumers: Consumers,
}

/// Checks `[redis]` and `[ratelimit]` of the main file.
pub(super) fn static_settings(
    main: &MainFile,
    errors: &mut Errors,
) -> (Option<RedisSettings>, StoreSettings) {
    let r = &main.ratelimit;
    if r.max_keys == 0 {
        errors.push("ratelimit.max_keys", "must be at least 1");
    }
    if r.sweep_interval.0.is_zero() {
        errors.push("ratelimit.sweep_interval", "must be longer than 0s");
    }
    let store = StoreSettings {
        max_keys: r.max_keys.max(1),
        sweep_interval: r.sweep_interval.0,
    };
    let Some(redis) = &main.redis else {
        return (None, store);
    };
    if let Err(reason) = check_url(&redis.url) {
        errors.push("redis.url", reason);
    }
    if redis.timeout.0.is_zero() {
        errors.push("redis.timeout", "must be longer than 0s");
    }
    if redis.connect_timeout.0.is_zero() {
        errors.push("redis.connect_timeout", "must be longer than 0s");
    }
    let settings = RedisSettings {
        url: redis.url.clone(),
        timeout: redis.timeout.0,
        connect_timeout: redis.connect_timeout.0,
        retry_interval: redis.retry_interval.0,
        key_prefix: redis.key_prefix.clone(),
    };
    (Some(settings), store)
}

/// Checks and builds every file's `[[limits]]` and `[[consumers]]`.
pub(super) fn compile(
    sources: &DynamicSources,
    metrics: &Metrics,
    list: &mut Vec<ConfigError>,
) -> Access {
    let mut limits: HashMap<String, Arc<Limit>> = HashMap::new();
    let mut limit_files: HashMap<&str, &Path> = HashMap::new();
    for (path, file) in &sources.files {
        let mut errors = Errors { file: path, list };
        for (i, l) in file.limits.iter().enumerate() {
            let key = format!("limits[{i}]");
            if let Some(first) = limit_files.get(l.name.as_str()) {
                errors.push(
                    format!("{key}.name"),
                    format!(
                        "limit `{}` is already defined in {}",
                        l.name,
                        first.display()
                    ),
                );
                continue;
            }
            limit_files.insert(&l.name, path);
            if let Some(limit) = limit(&key, l, sources.redis, metrics, &mut errors) {
                limits.insert(l.name.clone(), Arc::new(limit));
            }
        }
    }

    let defined: HashSet<String> = limit_files.keys().map(|n| (*n).to_owned()).collect();
    let route_names: HashSet<&str> = sources
        .files
        .iter()
        .flat_map(|(_, f)| f.routes.iter().map(|r| r.name.as_str()))
        .collect();
    let mut by_key: HashMap<KeyHash, Arc<Consumer>> = HashMap::new();
    let mut consumer_files: HashMap<&str, &Path> = HashMap::new();
    for (path, file) in &sources.files {
        let mut errors = Errors { file: path, list };
        for (i, c) in file.consumers.iter().enumerate() {
            let key = format!("consumers[{i}]");
            if let Some(first) = consumer_files.get(c.name.as_str()) {
                errors.push(
                    format!("{key}.name"),
                    format!(
                        "consumer `{}` is already defined in {}",
                        c.name,
                        first.display()
                    ),
                );
                continue;
            }
            consumer_files.insert(&c.name, path);
            let Some((consumer, keys)) =
                consumer(&key, c, path, &limits, &defined, &route_names, &mut errors)
            else {
                continue;
            };
            let consumer = Arc::new(consumer);
            for hash in keys {
                if let Some(other) = by_key.get(&hash) {
                    // Says whose key it is, never the key.
                    errors.push(
                        key.clone(),
                        format!(
                            "a key of consumer `{}` is also a key of consumer `{}`",
                            c.name, other.name
                        ),
                    );
                    continue;
                }
                by_key.insert(hash, Arc::clone(&consumer));
            }
        }
    }
    Access {
        limits,
        defined,
        consumers: Consumers::new(by_key),
    }
}

fn limit(
    key: &str,
    l: &file::Limit,
    redis: bool,
    metrics: &Metrics,
    errors: &mut Errors,
) -> Option<Limit> {
    let before = errors.list.len();
    check_name("limit", key, &l.name, errors);
    let per = l.per.map_or(DEFAULT_PER, |p| p.0);
    let mut rate = |amount: u64, what: &str| {
        if amount == 0 {
            errors.push(format!("{key}.{what}"), "must be at least 1");
        }
        if per.is_zero() {
            errors.push(format!("{key}.per"), "must be longer than 0s");
        }
        let burst = l.burst.unwrap_or(amount);
        if burst == 0 {
            errors.push(format!("{key}.burst"), "must be at least 1");
        }
        Rate::new(amount, per, burst).ok()
    };
    let kind = match (l.requests, l.tokens, l.concurrent) {
        (Some(n), None, None) => rate(n, "requests").map(Kind::Requests),
        (None, Some(n), None) => {
            let rate = rate(n, "tokens");
            let bytes_per_token = l.bytes_per_token.unwrap_or(DEFAULT_BYTES_PER_TOKEN);
            if !(bytes_per_token.is_finite() && bytes_per_token > 0.0) {
                errors.push(format!("{key}.bytes_per_token"), "must be a number above 0");
            }
            rate.map(|rate| {
                Kind::Tokens(
                    rate,
                    Estimate {
                        bytes_per_token,
                        default_max_tokens: l.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
                    },
                )
            })
        }
        (None, None, Some(n)) => {
            if n == 0 {
                errors.push(format!("{key}.concurrent"), "must be at least 1");
            }
            for (set, what) in [(l.per.is_some(), "per"), (l.burst.is_some(), "burst")] {
                if set {
                    errors.push(
                        format!("{key}.{what}"),
                        "applies to requests and tokens limits, not to concurrent",
                    );
                }
            }
            Some(Kind::Concurrent(n))
        }
        _ => {
            errors.push(
                key.to_owned(),
                "set exactly one of requests, tokens and concurrent",
            );
            None
        }
    };
    if l.tokens.is_none() {
        for (set, what) in [
            (l.bytes_per_token.is_some(), "bytes_per_token"),
            (l.default_max_tokens.is_some(), "default_max_tokens"),
        ] {
            if set {
                errors.push(format!("{key}.{what}"), "applies to tokens limits only");
            }
        }
    }
    let mut parts = Vec::new();
    for (i, text) in l.key.iter().enumerate() {
        match KeyPart::parse(text) {
            Ok(part) if parts.contains(&part) => errors.push(
                format!("{key}.key[{i}]"),
                format!("`{text}` is listed twice"),
            ),
            Ok(part) => parts.push(part),
            Err(reason) => errors.push(format!("{key}.key[{i}]"), reason),
        }
    }
    let backend = match (l.backend, l.on_redis_error) {
        (LimitBackend::Local, None) => Backend::Local,
        (LimitBackend::Local, Some(_)) => {
            errors.push(
                format!("{key}.on_redis_error"),
                "applies to backend = \"redis\" only",
            );
            Backend::Local
        }
        (LimitBackend::Redis, mode) => {
            if !redis {
                errors.push(
                    format!("{key}.backend"),
                    "`redis` needs a [redis] section with its url in the main file",
                );
            }
            if l.concurrent.is_some() {
                errors.push(
                    format!("{key}.backend"),
                    "concurrent limits are kept in each process; use backend = \"local\"",
                );
            }
            Backend::Redis(match mode {
                Some(file::OnRedisError::Closed) => OnRedisError::Closed,
                Some(file::OnRedisError::Open) | None => OnRedisError::Open,
            })
        }
    };
    if errors.list.len() > before {
        return None;
    }
    Some(Limit {
        name: l.name.clone(),
        kind: kind?,
        key: parts,
        backend,
        decisions: metrics.access.decisions(&l.name),
    })
}

fn consumer(
    key: &str,
    c: &file::Consumer,
    path: &Path,
    limits: &HashMap<String, Arc<Limit>>,
    defined: &HashSet<String>,
    route_names: &HashSet<&str>,
    errors: &mut Errors,
) -> Option<(Consumer, Vec<KeyHash>)> {
    let before = errors.list.len();
    check_name("consumer", key, &c.name, errors);
    let mut keys = Vec::new();
    if let Some(hashes) = &c.key_sha256 {
        let many = matches!(hashes, file::OneOrMany::Many(_));
        for (i, text) in hashes.as_slice().iter().enumerate() {
            let at = if many {
                format!("{key}.key_sha256[{i}]")
            } else {
                format!("{key}.key_sha256")
            };
            match KeyHash::from_hex(text.trim()) {
                Some(hash) => keys.push(hash),
                None => errors.push(at, "must be 64 hex digits: the SHA-256 of the key"),
            }
        }
    }
    if let Some(var) = &c.key_env {
        match std::env::var_os(var) {
            None => errors.push(
                format!("{key}.key_env"),
                format!("environment variable `{var}` is not set"),
            ),
            Some(value) if value.as_encoded_bytes().trim_ascii().is_empty() => errors.push(
                format!("{key}.key_env"),
                format!("environment variable `{var}` is empty"),
            ),
            Some(value) => keys.push(KeyHash::of(value.as_encoded_bytes().trim_ascii())),
        }
    }
    if let Some(name) = &c.key_file {
        let full = path.parent().unwrap_or(Path::new(".")).join(name);
        match std::fs::read(&full) {
            Err(e) => errors.push(
                format!("{key}.key_file"),
                format!("cannot read {}: {e}", full.display()),
            ),
            Ok(bytes) if bytes.trim_ascii().is_empty() => errors.push(
                format!("{key}.key_file"),
                format!("{} is empty", full.display()),
            ),
            Ok(bytes) => keys.push(KeyHash::of(bytes.trim_ascii())),
        }
    }
    if c.key_sha256.is_none() && c.key_env.is_none() && c.key_file.is_none() {
        errors.push(
            key.to_owned(),
            "a consumer needs a key: set key_sha256, key_env or key_file",
        );
    }
    for (field, models) in [("models", &c.models), ("blocked_models", &c.blocked_models)] {
        for (i, model) in models.iter().enumerate() {
            let stem = model.strip_suffix('*').unwrap_or(model);
            if model.is_empty() || stem.contains('*') {
                errors.push(
                    format!("{key}.{field}[{i}]"),
                    format!("`{model}` must be a model name, or a prefix followed by `*`"),
                );
            }
        }
    }
    for (i, route) in c.routes.iter().enumerate() {
        if !route_names.contains(route.as_str()) {
            errors.push(
                format!("{key}.routes[{i}]"),
                format!("route `{route}` is not defined"),
            );
        }
    }
    let own = resolve_limits(&format!("{key}.limits"), &c.limits, limits, defined, errors);
    if errors.list.len() > before {
        return None;
    }
    let consumer = Consumer {
        name: c.name.as_str().into(),
        models: ModelList::new(c.models.iter().map(String::as_str)),
        blocked_models: ModelList::new(c.blocked_models.iter().map(String::as_str)),
        routes: (!c.routes.is_empty()).then(|| c.routes.iter().cloned().collect()),
        limits: own,
    };
    Some((consumer, keys))
}

/// The limits named by `names`: each must exist (or have failed its own checks, already
/// reported) and appear once.
fn resolve_limits(
    key: &str,
    names: &[String],
    limits: &HashMap<String, Arc<Limit>>,
    defined: &HashSet<String>,
    errors: &mut Errors,
) -> Vec<Arc<Limit>> {
    if names.len() > MAX_LIMITS_PER_REQUEST {
        errors.push(
            key.to_owned(),
            format!("at most {MAX_LIMITS_PER_REQUEST} limits"),
        );
    }
    let mut out: Vec<Arc<Limit>> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            errors.push(
                format!("{key}[{i}]"),
                format!("limit `{name}` is listed twice"),
            );
            continue;
        }
        match limits.get(name) {
            Some(limit) => out.push(Arc::clone(limit)),
            None if defined.contains(name) => {}
            None => errors.push(
                format!("{key}[{i}]"),
                format!("limit `{name}` is not defined"),
            ),
        }
    }
    out
}

/// A route's `auth`, `auth_header` and `limits`.
pub(super) fn route_access(
    key: &str,
    r: &file::Route,
    access: &Access,
    errors: &mut Errors,
) -> (RouteAuth, Vec<Arc<Limit>>) {
    let mode = match r.auth {
        file::AuthMode::Off => auth::AuthMode::Off,
        file::AuthMode::Optional => auth::AuthMode::Optional,
        file::AuthMode::Required => auth::AuthMode::Required,
    };
    let header = r.auth_header.as_deref().and_then(|name| {
        if mode == auth::AuthMode::Off {
            errors.push(
                format!("{key}.auth_header"),
                "needs auth = \"optional\" or \"required\"",
            );
        }
        match HeaderName::from_str(name) {
            Ok(header) => Some(header),
            Err(_) => {
                errors.push(
                    format!("{key}.auth_header"),
                    format!("`{name}` is not a valid header name"),
                );
                None
            }
        }
    });
    let limits = resolve_limits(
        &format!("{key}.limits"),
        &r.limits,
        &access.limits,
        &access.defined,
        errors,
    );
    (RouteAuth { mode, header }, limits)
}

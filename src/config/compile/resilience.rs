//! Compiling a cluster's balancing, health, retry, credential and concurrency settings into
//! their runtime objects, checking each where it is built.

use std::str::FromStr;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderName, StatusCode};

use super::models::model_rewrite;
use super::Errors;
use crate::config::file::{self, LbPolicy, PanicMode};
use crate::llm::models::ModelRewrite;
use crate::metrics::Metrics;
use crate::proxy::balance::hash::HashOn;
use crate::proxy::balance::{Balancer, LbKind};
use crate::proxy::retry::{RetryBudget, RetryPolicy};
use crate::upstream::check::ActiveCheck;
use crate::upstream::credentials::{self, Key, KeyPool};
use crate::upstream::health::{CheckPolicy, Concurrency, OutlierPolicy};
use crate::upstream::metrics::ClusterHandles;

/// Attempts per request, at most: each is a full upstream exchange.
const MAX_ATTEMPTS: u32 = 10;
/// Bytes of the prompt that `hash_on = "prompt"` may hash.
const MAX_PROMPT_BYTES: usize = 1024 * 1024;

/// Everything of a cluster beside its backends and timeouts.
pub(super) struct Extras {
    pub balancer: Balancer,
    pub hash_on: Option<HashOn>,
    pub panic_mode: PanicMode,
    pub health_check: Option<ActiveCheck>,
    pub outlier: OutlierPolicy,
    pub retry: RetryPolicy,
    pub credentials: Option<KeyPool>,
    pub concurrency: Option<Concurrency>,
    pub model_rewrite: ModelRewrite,
    pub handles: ClusterHandles,
}

/// Builds the extras of cluster `c`, whose backends have these URLs and weights. `None`
/// when something is wrong (each problem is pushed to `errors`).
pub(super) fn cluster(
    key: &str,
    c: &file::Cluster,
    names: &[&str],
    weights: &[u32],
    metrics: &Metrics,
    errors: &mut Errors,
) -> Option<Extras> {
    let before = errors.list.len();
    let hash_on = hash_on(key, c, errors);
    let balance_factor = c.balance_factor.unwrap_or(1.25);
    if !(balance_factor.is_finite() && balance_factor >= 1.0) {
        errors.push(
            format!("{key}.balance_factor"),
            "must be a number of at least 1.0",
        );
    }
    if c.balance_factor.is_some() && c.lb != LbPolicy::ConsistentHash {
        errors.push(
            format!("{key}.balance_factor"),
            "applies only to lb = \"consistent_hash\"",
        );
    }
    let slow_start = c.slow_start.map(|d| d.0).filter(|d| !d.is_zero());
    let health_check = c
        .health_check
        .as_ref()
        .and_then(|h| health_check(&format!("{key}.health_check"), h, errors));
    let outlier = outlier(&format!("{key}.outlier"), &c.outlier, errors);
    let retry = retry(&format!("{key}.retry"), &c.retry, errors);
    let credentials = c
        .credentials
        .as_ref()
        .and_then(|k| key_pool(&format!("{key}.credentials"), k, errors));
    let concurrency = concurrency(key, c, errors);
    let model_rewrite = model_rewrite(&format!("{key}.model_rewrite"), &c.model_rewrite, errors);
    if errors.list.len() > before {
        return None;
    }
    let kind = match c.lb {
        LbPolicy::RoundRobin => LbKind::RoundRobin,
        LbPolicy::LeastRequest => LbKind::LeastRequest,
        LbPolicy::ConsistentHash => LbKind::ConsistentHash,
        LbPolicy::Random => LbKind::Random,
    };
    Some(Extras {
        balancer: Balancer::new(kind, weights, names, balance_factor, slow_start),
        hash_on,
        panic_mode: c.panic_mode,
        health_check,
        outlier,
        retry,
        credentials,
        concurrency,
        model_rewrite,
        handles: metrics.upstream.cluster(&c.name),
    })
}

/// `hash_on`, which only consistent hashing reads; it defaults to the client's address.
fn hash_on(key: &str, c: &file::Cluster, errors: &mut Errors) -> Option<HashOn> {
    let hashing = c.lb == LbPolicy::ConsistentHash;
    if !hashing {
        for (set, name) in [
            (c.hash_on.is_some(), "hash_on"),
            (c.hash_prompt_bytes.is_some(), "hash_prompt_bytes"),
        ] {
            if set {
                errors.push(
                    format!("{key}.{name}"),
                    "applies only to lb = \"consistent_hash\"",
                );
            }
        }
        return None;
    }
    let bytes = c.hash_prompt_bytes.unwrap_or(1024);
    if bytes == 0 || bytes > MAX_PROMPT_BYTES {
        errors.push(
            format!("{key}.hash_prompt_bytes"),
            format!("must be from 1 to {MAX_PROMPT_BYTES}"),
        );
    }
    let text = c.hash_on.as_deref().unwrap_or("client_ip");
    let on = match text {
        "api_key" => HashOn::ApiKey,
        "client_ip" => HashOn::ClientIp,
        "prompt" => HashOn::Prompt(bytes),
        other => match other.strip_prefix("header:").map(HeaderName::from_str) {
            Some(Ok(name)) => HashOn::Header(name),
            _ => {
                errors.push(
                    format!("{key}.hash_on"),
                    format!(
                        "`{text}` is not one of \"header:NAME\", \"api_key\", \"client_ip\", \"prompt\""
                    ),
                );
                return None;
            }
        },
    };
    if c.hash_prompt_bytes.is_some() && !matches!(on, HashOn::Prompt(_)) {
        errors.push(
            format!("{key}.hash_prompt_bytes"),
            "applies only to hash_on = \"prompt\"",
        );
    }
    Some(on)
}

fn statuses(key: &str, codes: &[u16], errors: &mut Errors) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for (i, &code) in codes.iter().enumerate() {
        match StatusCode::from_u16(code) {
            Ok(status) if (100..600).contains(&code) => out.push(status),
            _ => errors.push(
                format!("{key}[{i}]"),
                format!("`{code}` is not an HTTP status"),
            ),
        }
    }
    out
}

fn health_check(key: &str, h: &file::HealthCheck, errors: &mut Errors) -> Option<ActiveCheck> {
    let before = errors.list.len();
    let path = match PathAndQuery::from_str(&h.path) {
        Ok(path) if h.path.starts_with('/') => Some(path),
        _ => {
            errors.push(
                format!("{key}.path"),
                format!("`{}` must be a path starting with `/`", h.path),
            );
            None
        }
    };
    if h.interval.0 < Duration::from_millis(10) {
        errors.push(format!("{key}.interval"), "must be at least 10ms");
    }
    if h.timeout.0.is_zero() {
        errors.push(format!("{key}.timeout"), "must be longer than 0s");
    }
    for (value, name) in [
        (h.healthy_threshold, "healthy_threshold"),
        (h.unhealthy_threshold, "unhealthy_threshold"),
    ] {
        if value == 0 {
            errors.push(format!("{key}.{name}"), "must be at least 1");
        }
    }
    if h.expected_status.is_empty() {
        errors.push(
            format!("{key}.expected_status"),
            "needs at least one status",
        );
    }
    let expected_status = statuses(
        &format!("{key}.expected_status"),
        &h.expected_status,
        errors,
    );
    if errors.list.len() > before {
        return None;
    }
    Some(ActiveCheck {
        path: path?,
        interval: h.interval.0,
        timeout: h.timeout.0,
        policy: CheckPolicy {
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
        },
        expected_status,
    })
}

fn outlier(key: &str, o: &file::Outlier, errors: &mut Errors) -> OutlierPolicy {
    if o.consecutive_failures > 0 && o.base_ejection.0.is_zero() {
        errors.push(format!("{key}.base_ejection"), "must be longer than 0s");
    }
    if o.max_ejection.0 < o.base_ejection.0 {
        errors.push(
            format!("{key}.max_ejection"),
            "must be at least base_ejection",
        );
    }
    OutlierPolicy {
        consecutive_failures: o.consecutive_failures,
        base_ejection: o.base_ejection.0,
        max_ejection: o.max_ejection.0,
    }
}

fn retry(key: &str, r: &file::Retry, errors: &mut Errors) -> RetryPolicy {
    if r.attempts == 0 || r.attempts > MAX_ATTEMPTS {
        errors.push(
            format!("{key}.attempts"),
            format!("must be from 1 (no retry) to {MAX_ATTEMPTS}"),
        );
    }
    if !(r.budget_ratio.is_finite() && (0.0..=1.0).contains(&r.budget_ratio)) {
        errors.push(format!("{key}.budget_ratio"), "must be from 0.0 to 1.0");
    }
    let per_try_timeout = match r.per_try_timeout {
        Some(d) if d.0.is_zero() => {
            errors.push(format!("{key}.per_try_timeout"), "must be longer than 0s");
            None
        }
        other => other.map(|d| d.0),
    };
    RetryPolicy {
        attempts: r.attempts,
        on_status: statuses(&format!("{key}.on_status"), &r.on_status, errors),
        per_try_timeout,
        budget: RetryBudget::new(r.budget_ratio, r.budget_min_per_second),
    }
}

fn key_pool(key: &str, k: &file::Credentials, errors: &mut Errors) -> Option<KeyPool> {
    let before = errors.list.len();
    let header = match HeaderName::from_str(&k.header) {
        Ok(header) => Some(header),
        Err(_) => {
            errors.push(
                format!("{key}.header"),
                format!("`{}` is not a valid header name", k.header),
            );
            None
        }
    };
    if k.keys.is_empty() {
        errors.push(format!("{key}.keys"), "needs at least one key");
    }
    let prefix = k.prefix.clone().unwrap_or_else(|| {
        header
            .as_ref()
            .map_or("", credentials::default_prefix)
            .to_owned()
    });
    let dir = errors
        .file
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_owned();
    let mut keys = Vec::new();
    for (i, source) in k.keys.iter().enumerate() {
        let key = format!("{key}.keys[{i}]");
        if source.weight == 0 {
            errors.push(format!("{key}.weight"), "must be at least 1");
        }
        // The errors name where the key is, never what it is.
        let (origin, read) = match (&source.env, &source.file) {
            (Some(var), None) => (
                format!("env:{var}"),
                std::env::var(var)
                    .map_err(|_| format!("environment variable `{var}` is not set or not text")),
            ),
            (None, Some(path)) => {
                let full = dir.join(path);
                (
                    format!("file:{}", full.display()),
                    std::fs::read_to_string(&full)
                        .map_err(|e| format!("cannot read {}: {e}", full.display())),
                )
            }
            _ => {
                errors.push(key, "set exactly one of `env` and `file`");
                continue;
            }
        };
        match read.and_then(|text| credentials::header_value(&prefix, &text)) {
            Ok(value) => keys.push(Key::new(origin, source.weight, value)),
            Err(reason) => errors.push(key, format!("{origin}: {reason}")),
        }
    }
    if errors.list.len() > before {
        return None;
    }
    Some(KeyPool::new(header?, keys, k.cooldown.0))
}

fn concurrency(key: &str, c: &file::Cluster, errors: &mut Errors) -> Option<Concurrency> {
    let queue_timeout = c.queue_timeout.map_or(Duration::from_secs(10), |d| d.0);
    if c.max_in_flight == 0 {
        if c.max_queue > 0 || c.queue_timeout.is_some() {
            errors.push(
                format!("{key}.max_queue"),
                "max_queue and queue_timeout need max_in_flight",
            );
        }
        return None;
    }
    if queue_timeout.is_zero() {
        errors.push(format!("{key}.queue_timeout"), "must be longer than 0s");
    }
    Some(Concurrency {
        max_in_flight: c.max_in_flight,
        max_queue: c.max_queue,
        queue_timeout,
    })
}

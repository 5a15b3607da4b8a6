//! The metrics of API-key auth and rate limiting.
//!
//! Per-limit counters are resolved when a config is compiled ([`Decisions`]), so a decision
//! bumps plain counters and never hashes label values.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::local::StoreMetrics;

/// Redis round-trip buckets in seconds: from a local Redis (~100 µs) to the timeout.
const REDIS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Auth and rate-limit metrics.
#[derive(Debug, Clone)]
pub struct AccessMetrics {
    /// `sluice_ratelimit_decisions_total{limit,result}`.
    decisions: IntCounterVec,
    /// `sluice_auth_failures_total{reason}`: missing_key, invalid_key, model_not_allowed,
    /// route_not_allowed.
    auth_failures: IntCounterVec,
    /// `sluice_ratelimit_redis_errors_total{reason}`: timeout, error, skipped.
    pub redis_timeout: IntCounter,
    pub redis_error: IntCounter,
    /// Calls not sent because Redis failed less than `retry_interval` ago.
    pub redis_skipped: IntCounter,
    /// `sluice_ratelimit_redis_duration_seconds`: one script call, sent to answered.
    pub redis_duration: Histogram,
    /// `sluice_ratelimit_redis_up`: 1 after a call succeeded, 0 after one failed.
    pub redis_up: IntGauge,
    /// The local store's gauge and eviction counters.
    pub store: StoreMetrics,
}

/// One limit's decision counters, by result.
#[derive(Debug, Clone)]
pub struct Decisions {
    pub allowed: IntCounter,
    pub limited: IntCounter,
    /// Redis failed and the limit's local fallback bucket allowed the request.
    pub fallback_allowed: IntCounter,
    /// Redis failed and the local fallback bucket refused it.
    pub fallback_limited: IntCounter,
    /// Redis failed and the limit fails closed: refused with 503.
    pub unavailable: IntCounter,
}

impl AccessMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<AccessMetrics> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "sluice_ratelimit_decisions_total",
                "Rate-limit decisions by limit and result: allowed, limited, fallback_allowed, \
                 fallback_limited (Redis failed; decided by the local fallback bucket), \
                 unavailable (Redis failed; the limit fails closed).",
            ),
            &["limit", "result"],
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "sluice_auth_failures_total",
                "Requests refused by API-key auth, by reason: missing_key, invalid_key, \
                 model_not_allowed, route_not_allowed.",
            ),
            &["reason"],
        )?;
        let redis_errors = IntCounterVec::new(
            Opts::new(
                "sluice_ratelimit_redis_errors_total",
                "Redis calls of rate limits that failed, by reason: timeout, error, skipped \
                 (not sent: Redis failed less than retry_interval ago).",
            ),
            &["reason"],
        )?;
        let redis_duration = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_ratelimit_redis_duration_seconds",
                "Time of one rate-limit script call to Redis, answered or failed.",
            )
            .buckets(REDIS_BUCKETS.to_vec()),
        )?;
        let redis_up = IntGauge::new(
            "sluice_ratelimit_redis_up",
            "1 when the last rate-limit call to Redis succeeded, 0 when it failed.",
        )?;
        let keys = IntGauge::new(
            "sluice_ratelimit_local_keys",
            "Token buckets held in this process (bounded by ratelimit.max_keys).",
        )?;
        let evictions = IntCounterVec::new(
            Opts::new(
                "sluice_ratelimit_evictions_total",
                "Local buckets dropped, by reason: idle (refilled to capacity) or capacity \
                 (ratelimit.max_keys reached).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(redis_errors.clone()))?;
        registry.register(Box::new(redis_duration.clone()))?;
        registry.register(Box::new(redis_up.clone()))?;
        registry.register(Box::new(keys.clone()))?;
        registry.register(Box::new(evictions.clone()))?;
        Ok(AccessMetrics {
            decisions,
            auth_failures,
            redis_timeout: redis_errors.with_label_values(&["timeout"]),
            redis_error: redis_errors.with_label_values(&["error"]),
            redis_skipped: redis_errors.with_label_values(&["skipped"]),
            redis_duration,
            redis_up,
            store: StoreMetrics {
                keys,
                evicted_idle: evictions.with_label_values(&["idle"]),
                evicted_capacity: evictions.with_label_values(&["capacity"]),
            },
        })
    }

    /// The decision counters of limit `name`.
    pub fn decisions(&self, name: &str) -> Decisions {
        let result = |r: &str| self.decisions.with_label_values(&[name, r]);
        Decisions {
            allowed: result("allowed"),
            limited: result("limited"),
            fallback_allowed: result("fallback_allowed"),
            fallback_limited: result("fallback_limited"),
            unavailable: result("unavailable"),
        }
    }

    /// Counts one request refused by auth. Reasons are four fixed strings.
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }
}

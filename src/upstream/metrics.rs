//! Metrics of backend health, load and resilience: health and load gauges computed at
//! scrape time from the backends' atomics, and counters of retries, ejections, fallbacks,
//! refusals and key rotations.
//!
//! The gauges are set when `/metrics` is scraped rather than on every change: an ejection
//! ends by the clock, not by an event, and the request path then bumps no labelled metric.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::time::Instant;

use crate::config::Snapshot;

/// Why an attempt was tried again: the `reason` label of `sluice_upstream_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The connection could not be made (refused, reset, timed out, TLS).
    Connect = 0,
    /// An HTTP/2 backend refused the stream before processing it.
    RefusedStream = 1,
    /// No response head within `per_try_timeout`.
    Timeout = 2,
    /// An answer whose status is in `retry.on_status`.
    Status = 3,
    /// The backend was at its concurrency cap and its queue was full or timed out.
    Overloaded = 4,
}

const REASONS: [&str; 5] = [
    "connect",
    "refused_stream",
    "timeout",
    "status",
    "overloaded",
];

/// The metric families; registered once, in [`crate::metrics::Metrics`].
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    /// `sluice_backend_healthy{cluster,backend}`: 1 when the backend may be picked.
    healthy: IntGaugeVec,
    /// `sluice_backend_requests_in_flight{cluster,backend}`.
    in_flight: IntGaugeVec,
    /// `sluice_backend_queued_requests{cluster,backend}`.
    queued: IntGaugeVec,
    /// `sluice_upstream_retries_total{cluster,reason}`.
    retries: IntCounterVec,
    /// `sluice_retry_budget_exhausted_total{cluster}`.
    budget_exhausted: IntCounterVec,
    /// `sluice_backend_ejections_total{cluster,backend}`.
    ejections: IntCounterVec,
    /// `sluice_fallbacks_total{route,cluster}`: requests that a fallback cluster took.
    fallbacks: IntCounterVec,
    /// `sluice_backend_overloaded_total{cluster}`: requests refused by a concurrency cap.
    overloaded: IntCounterVec,
    /// `sluice_upstream_key_rotations_total{cluster}`: 429s that moved to the next key.
    key_rotations: IntCounterVec,
    /// `sluice_health_checks_total{cluster,result}`.
    checks: IntCounterVec,
}

/// Handles of one cluster, resolved when the config is compiled.
#[derive(Debug, Clone)]
pub struct ClusterHandles {
    pub cluster: String,
    retries: [IntCounter; 5],
    pub budget_exhausted: IntCounter,
    pub overloaded: IntCounter,
    pub key_rotations: IntCounter,
    family: UpstreamMetrics,
}

impl UpstreamMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<UpstreamMetrics> {
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["cluster", "backend"])
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let metrics = UpstreamMetrics {
            healthy: gauge(
                "sluice_backend_healthy",
                "1 when the backend may be picked; 0 while it fails its active checks, is \
                 ejected or paused by a Retry-After.",
            )?,
            in_flight: gauge(
                "sluice_backend_requests_in_flight",
                "Requests forwarded to the backend whose response has not ended (streams \
                 count until their end).",
            )?,
            queued: gauge(
                "sluice_backend_queued_requests",
                "Requests waiting for a slot under the cluster's max_in_flight.",
            )?,
            retries: counter(
                "sluice_upstream_retries_total",
                "Attempts tried again on another backend (or with another key), by reason.",
                &["cluster", "reason"],
            )?,
            budget_exhausted: counter(
                "sluice_retry_budget_exhausted_total",
                "Retries not made because the cluster's retry budget was spent.",
                &["cluster"],
            )?,
            ejections: counter(
                "sluice_backend_ejections_total",
                "Backends ejected by passive outlier detection.",
                &["cluster", "backend"],
            )?,
            fallbacks: counter(
                "sluice_fallbacks_total",
                "Requests passed to a fallback cluster, by route and the cluster that took \
                 them.",
                &["route", "cluster"],
            )?,
            overloaded: counter(
                "sluice_backend_overloaded_total",
                "Requests refused because a backend's concurrency cap and queue were full.",
                &["cluster"],
            )?,
            key_rotations: counter(
                "sluice_upstream_key_rotations_total",
                "Provider 429 answers that moved the cluster to its next key.",
                &["cluster"],
            )?,
            checks: counter(
                "sluice_health_checks_total",
                "Active health checks, by result (ok, failed).",
                &["cluster", "result"],
            )?,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 10] = [
            Box::new(metrics.healthy.clone()),
            Box::new(metrics.in_flight.clone()),
            Box::new(metrics.queued.clone()),
            Box::new(metrics.retries.clone()),
            Box::new(metrics.budget_exhausted.clone()),
            Box::new(metrics.ejections.clone()),
            Box::new(metrics.fallbacks.clone()),
            Box::new(metrics.overloaded.clone()),
            Box::new(metrics.key_rotations.clone()),
            Box::new(metrics.checks.clone()),
        ];
        for collector in collectors {
            registry.register(collector)?;
        }
        Ok(metrics)
    }

    /// Handles for `cluster`.
    pub fn cluster(&self, cluster: &str) -> ClusterHandles {
        ClusterHandles {
            cluster: cluster.to_owned(),
            retries: REASONS.map(|reason| self.retries.with_label_values(&[cluster, reason])),
            budget_exhausted: self.budget_exhausted.with_label_values(&[cluster]),
            overloaded: self.overloaded.with_label_values(&[cluster]),
            key_rotations: self.key_rotations.with_label_values(&[cluster]),
            family: self.clone(),
        }
    }

    /// Sets the health and load gauges for exactly the backends of `snapshot`.
    pub fn refresh(&self, snapshot: &Snapshot) {
        self.healthy.reset();
        self.in_flight.reset();
        self.queued.reset();
        let now = Instant::now();
        for cluster in &snapshot.clusters {
            for backend in &cluster.backends {
                let labels = [cluster.name.as_str(), backend.url.as_str()];
                let state = &backend.state;
                let healthy = i64::from(state.is_healthy(now));
                self.healthy.with_label_values(&labels).set(healthy);
                self.in_flight
                    .with_label_values(&labels)
                    .set(i64::from(state.in_flight()));
                self.queued
                    .with_label_values(&labels)
                    .set(i64::from(state.queued()));
            }
        }
    }
}

impl ClusterHandles {
    /// Counts a retry.
    pub fn retry(&self, reason: RetryReason) {
        self.retries[reason as usize].inc();
    }

    /// Counts an ejection of `backend` (rare: the label lookup is not on a hot path).
    pub fn ejected(&self, backend: &str) {
        self.family
            .ejections
            .with_label_values(&[self.cluster.as_str(), backend])
            .inc();
    }

    /// Counts a request that this cluster took as the fallback of `route`.
    pub fn fallback(&self, route: &str) {
        self.family
            .fallbacks
            .with_label_values(&[route, self.cluster.as_str()])
            .inc();
    }

    /// Counts an active health check.
    pub fn check(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.family
            .checks
            .with_label_values(&[self.cluster.as_str(), result])
            .inc();
    }
}

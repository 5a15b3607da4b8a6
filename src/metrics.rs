//! Prometheus metrics, registered into one registry that is handed to constructors.
//!
//! Per-route and per-cluster handles are resolved when a config snapshot is compiled
//! ([`RouteMetrics`], [`ClusterMetrics`]), so the request path bumps plain counters and never
//! hashes label values.

use crate::llm::metrics::LlmMetrics;
use crate::ratelimit::metrics::AccessMetrics;
use crate::upstream::metrics::UpstreamMetrics;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Latency buckets in seconds, from a cached hit to a long generation.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// Every metric sluice exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// `sluice_requests_total{route,cluster,status_class}`.
    requests: IntCounterVec,
    /// `sluice_request_duration_seconds{route}`: first byte in to last byte out.
    request_duration: HistogramVec,
    /// `sluice_upstream_duration_seconds{cluster}`: request sent to response head received.
    upstream_duration: HistogramVec,
    /// `sluice_upstream_connect_errors_total{cluster}`.
    connect_errors: IntCounterVec,
    /// `sluice_upstream_connects_total{cluster}`: upstream connections opened.
    connects: IntCounterVec,
    /// `sluice_open_connections`: downstream connections open now.
    pub open_connections: IntGauge,
    /// `sluice_connections_total`: downstream connections accepted.
    pub connections: IntCounter,
    /// `sluice_requests_in_flight`: requests whose response has not ended.
    pub in_flight: IntGauge,
    /// `sluice_build_info{version}`: always 1.
    pub build_info: IntGaugeVec,
    /// `sluice_config_version_info{version}`: 1 for the running config.
    pub config_version: IntGaugeVec,
    /// The GenAI metrics of LLM routes.
    pub llm: LlmMetrics,
    /// API-key auth and rate-limit metrics.
    pub access: AccessMetrics,
    /// Backend health and load, retries, ejections, fallbacks.
    pub upstream: UpstreamMetrics,
    /// `sluice_websocket_tunnels_open`.
    pub websocket_open: IntGauge,
    /// `sluice_websocket_bytes_total{direction="client_to_upstream"}`.
    pub websocket_bytes_up: IntCounter,
    /// `sluice_websocket_bytes_total{direction="upstream_to_client"}`.
    pub websocket_bytes_down: IntCounter,
    /// `sluice_tls_handshakes_total{result,version,alpn}`: handshakes on the HTTPS listener.
    tls_handshakes: IntCounterVec,
    /// `sluice_tls_cert_expiry_seconds{cert}`: seconds until each certificate expires.
    cert_expiry: IntGaugeVec,
}

/// Counter and histogram handles of one route.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    /// Requests by status class: index 0 is 1xx … index 4 is 5xx.
    by_class: [IntCounter; 5],
    pub duration: Histogram,
}

/// Handles of one cluster.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    pub upstream_duration: Histogram,
    pub connect_errors: IntCounter,
    pub connects: IntCounter,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Metrics {
    /// Creates the metrics and registers them in a fresh registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
            .expect("metric definition is valid")
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition is valid")
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition is valid")
        };
        let gauge =
            |name: &str, help: &str| IntGauge::new(name, help).expect("metric definition is valid");
        let websocket_bytes = counter_vec(
            "sluice_websocket_bytes_total",
            "Bytes copied through WebSocket tunnels, by direction.",
            &["direction"],
        );
        registry
            .register(Box::new(websocket_bytes.clone()))
            .expect("metric names are unique");
        let metrics = Metrics {
            requests: counter_vec(
                "sluice_requests_total",
                "Requests answered, by route, cluster and status class.",
                &["route", "cluster", "status_class"],
            ),
            request_duration: histogram(
                "sluice_request_duration_seconds",
                "Time from the request's arrival to the end of its response body.",
                &["route"],
            ),
            upstream_duration: histogram(
                "sluice_upstream_duration_seconds",
                "Time from forwarding a request to receiving the upstream's response head.",
                &["cluster"],
            ),
            connect_errors: counter_vec(
                "sluice_upstream_connect_errors_total",
                "Upstream connections that could not be made (refused, reset, timed out).",
                &["cluster"],
            ),
            connects: counter_vec(
                "sluice_upstream_connects_total",
                "Upstream connections opened (reused keep-alive connections are not counted).",
                &["cluster"],
            ),
            open_connections: gauge("sluice_open_connections", "Client connections open now."),
            connections: IntCounter::new(
                "sluice_connections_total",
                "Client connections accepted.",
            )
            .expect("metric definition is valid"),
            in_flight: gauge(
                "sluice_requests_in_flight",
                "Requests whose response has not ended yet.",
            ),
            build_info: gauge_vec(
                "sluice_build_info",
                "Build information; the value is always 1.",
                &["version"],
            ),
            config_version: gauge_vec(
                "sluice_config_version_info",
                "The running config's version; the value is always 1.",
                &["version"],
            ),
            llm: LlmMetrics::register(&registry).expect("LLM metric names are unique"),
            access: AccessMetrics::register(&registry).expect("access metric names are unique"),
            upstream: UpstreamMetrics::register(&registry)
                .expect("upstream metric names are unique"),
            websocket_open: gauge(
                "sluice_websocket_tunnels_open",
                "WebSocket tunnels open now.",
            ),
            websocket_bytes_up: websocket_bytes.with_label_values(&["client_to_upstream"]),
            websocket_bytes_down: websocket_bytes.with_label_values(&["upstream_to_client"]),
            tls_handshakes: counter_vec(
                "sluice_tls_handshakes_total",
                "TLS handshakes on the HTTPS listener, by result (ok, error, timeout, \
                 no_certificate), protocol version and ALPN protocol.",
                &["result", "version", "alpn"],
            ),
            cert_expiry: gauge_vec(
                "sluice_tls_cert_expiry_seconds",
                "Seconds until the certificate expires (negative once expired).",
                &["cert"],
            ),
            registry,
        };
        metrics.register_all();
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.requests.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.upstream_duration.clone()),
            Box::new(self.connect_errors.clone()),
            Box::new(self.connects.clone()),
            Box::new(self.open_connections.clone()),
            Box::new(self.connections.clone()),
            Box::new(self.in_flight.clone()),
            Box::new(self.build_info.clone()),
            Box::new(self.config_version.clone()),
            Box::new(self.websocket_open.clone()),
            Box::new(self.tls_handshakes.clone()),
            Box::new(self.cert_expiry.clone()),
        ];
        for collector in collectors {
            self.registry
                .register(collector)
                .expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            // Process metrics are best effort: a sandbox without /proc loses only them.
            let _ = self.registry.register(Box::new(process));
        }
    }

    /// Handles for a route served by `cluster`; `route` is `""` for requests no route matched.
    pub fn route(&self, route: &str, cluster: &str) -> RouteMetrics {
        RouteMetrics {
            by_class: CLASSES
                .map(|class| self.requests.with_label_values(&[route, cluster, class])),
            duration: self.request_duration.with_label_values(&[route]),
        }
    }

    /// Handles for a cluster.
    pub fn cluster(&self, cluster: &str) -> ClusterMetrics {
        ClusterMetrics {
            upstream_duration: self.upstream_duration.with_label_values(&[cluster]),
            connect_errors: self.connect_errors.with_label_values(&[cluster]),
            connects: self.connects.with_label_values(&[cluster]),
        }
    }

    /// Marks `version` as the running config, clearing the previous one.
    pub fn set_config_version(&self, version: &str) {
        self.config_version.reset();
        self.config_version.with_label_values(&[version]).set(1);
    }

    /// Counts one TLS handshake. Labels are a handful of fixed strings, so the lookup is
    /// cheap next to the handshake itself.
    pub fn tls_handshake(&self, result: &str, version: &str, alpn: &str) {
        self.tls_handshakes
            .with_label_values(&[result, version, alpn])
            .inc();
    }

    /// Sets `sluice_tls_cert_expiry_seconds` for exactly these certificates (label, expiry
    /// in seconds since the Unix epoch) as seen at `now`, dropping certificates of an older
    /// config.
    pub fn set_cert_expiry(&self, certs: &[(String, i64)], now: std::time::SystemTime) {
        let now = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.cert_expiry.reset();
        for (cert, not_after) in certs {
            self.cert_expiry
                .with_label_values(&[cert.as_str()])
                .set(not_after.saturating_sub(now));
        }
    }

    /// The registry's contents in the Prometheus text format.
    pub fn encode(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        // Encoding into a Vec cannot fail for I/O reasons; a failure would only drop metrics.
        let _ = encoder.encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl RouteMetrics {
    /// Counts one answered request with `status`.
    pub fn count(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
    }
}

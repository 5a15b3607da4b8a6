//! The compiled, immutable dynamic config that requests read.
//!
//! A request loads one `Arc<Snapshot>` when it arrives and uses it to the end, so a reload
//! never tears a request in half. Everything here is ready to use: header names parsed,
//! metric handles resolved, the balancing schedule computed.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::config::file::{LlmMode, UpstreamProtocol};
use crate::config::ConfigError;
use crate::metrics::{ClusterMetrics, RouteMetrics};
use crate::proxy::auth::{Consumers, RouteAuth};
use crate::proxy::balance::RoundRobin;
use crate::proxy::route::{RouteMatcher, Router};
use crate::ratelimit::Limit;
use crate::upstream::Target;

/// One version of the routing config.
#[derive(Debug)]
pub struct Snapshot {
    /// A digest of the files it was built from.
    pub version: String,
    pub router: Router,
    /// Routes in config order; `Router` answers with indices into this.
    pub routes: Vec<Route>,
    pub clusters: Vec<Arc<Cluster>>,
    /// Metric handles for requests that no route matched.
    pub unmatched: RouteMetrics,
    /// The HTTPS listener's TLS config (certificates by SNI, client-certificate checks);
    /// `None` when no certificate is configured. Read once per handshake, so a new snapshot
    /// reaches the next handshake.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Every certificate's `cert` label and expiry (seconds since the Unix epoch), for
    /// `sluice_tls_cert_expiry_seconds`: the listener's by name, clusters' client
    /// certificates as `cluster/NAME`.
    pub cert_expiry: Vec<(String, i64)>,
    /// Problems that do not stop the config (an expired certificate, verification turned
    /// off): logged at every load and printed by `sluice check`.
    pub warnings: Vec<ConfigError>,
    /// API-key holders by key hash. (Their buckets live in the proxy's `Limiter`, not
    /// here, so that a reload keeps them.)
    pub consumers: Consumers,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatcher,
    pub cluster: Arc<Cluster>,
    /// Replacement for the matched prefix or exact path.
    pub rewrite_prefix: Option<String>,
    pub host: HostPolicy,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub metrics: RouteMetrics,
    /// The cluster's timeouts with the route's overrides.
    pub timeouts: Timeouts,
    pub llm: LlmMode,
    pub include_usage: bool,
    pub sse_error_event: bool,
    /// `Some` when WebSocket upgrades are allowed.
    pub websocket: Option<WebSocketLimits>,
    /// Whether callers need an API key, and where it may come from.
    pub auth: RouteAuth,
    /// Rate limits applied to every request of this route, before the consumer's own.
    pub limits: Vec<Arc<Limit>>,
}

/// Bounds on a WebSocket tunnel; `None` is off.
#[derive(Debug, Clone, Copy)]
pub struct WebSocketLimits {
    pub idle: Option<Duration>,
    pub max_duration: Option<Duration>,
}

/// What the upstream `Host` is.
#[derive(Debug, Clone)]
pub enum HostPolicy {
    /// The backend's `host:port` (the default, as nginx's `proxy_pass` does).
    Backend,
    /// The client's `Host`, unchanged.
    Preserve,
    /// A fixed value.
    Rewrite(HeaderValue),
}

/// Headers to set and remove.
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// Applies the edits: removals first, then sets.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// A compiled cluster.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub protocol: UpstreamProtocol,
    pub backends: Vec<Backend>,
    pub balancer: RoundRobin,
    pub timeouts: Timeouts,
    pub metrics: ClusterMetrics,
}

/// Upstream timeouts; `None` is off.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    pub connect: Option<Duration>,
    pub response_header: Option<Duration>,
    pub first_byte: Option<Duration>,
    pub idle: Option<Duration>,
    pub total: Option<Duration>,
}

/// One backend of a cluster.
#[derive(Debug)]
pub struct Backend {
    /// The URL as written, for logs and `/status`.
    pub url: String,
    pub weight: u32,
    pub target: Target,
    /// `host:port` of the backend, the default upstream `Host`.
    pub authority: HeaderValue,
}

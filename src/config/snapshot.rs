//! The compiled, immutable dynamic config that requests read.
//!
//! A request loads one `Arc<Snapshot>` when it arrives and uses it to the end, so a reload
//! never tears a request in half. Everything here is ready to use: header names parsed,
//! metric handles resolved, the balancing schedule computed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::config::file::{LlmMode, PanicMode, UpstreamProtocol};
use crate::config::ConfigError;
use crate::llm::models::ModelRewrite;
use crate::metrics::{ClusterMetrics, RouteMetrics};
use crate::proxy::auth::{Consumers, RouteAuth};
use crate::proxy::balance::hash::HashOn;
use crate::proxy::balance::{Balancer, RoundRobin};
use crate::proxy::retry::RetryPolicy;
use crate::proxy::route::{RouteMatcher, Router};
use crate::ratelimit::Limit;
use crate::upstream::check::ActiveCheck;
use crate::upstream::credentials::KeyPool;
use crate::upstream::health::{BackendState, Concurrency, OutlierPolicy};
use crate::upstream::metrics::ClusterHandles;
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
    /// The public model names that `models_endpoint` routes list: the exact names of every
    /// route's `match.models` and every alias, sorted.
    pub model_names: Vec<String>,
    /// Their `GET /v1/models` answer, serialized once.
    pub models_json: Bytes,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatcher,
    /// The first cluster of the route: its only one, or the first of its split.
    pub cluster: Arc<Cluster>,
    /// The split's clusters, then the fallbacks in order.
    pub targets: Vec<RouteTarget>,
    /// The weighted order over `targets[..split_len]`; `None` for a single cluster.
    pub split: Option<RoundRobin>,
    pub split_len: usize,
    /// Model names rewritten before the cluster's own rewrite.
    pub model_rewrite: ModelRewrite,
    /// `GET …/models` and `GET …/models/{id}` are answered from the config.
    pub models_endpoint: bool,
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

/// A cluster that a route sends to, with the route's metric handles for it.
#[derive(Debug)]
pub struct RouteTarget {
    pub cluster: Arc<Cluster>,
    pub weight: u32,
    /// `sluice_requests_total{route,cluster}` handles of this route and this cluster.
    pub metrics: RouteMetrics,
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
    pub balancer: Balancer,
    /// The key of consistent hashing; `None` for the other policies.
    pub hash_on: Option<HashOn>,
    pub panic_mode: PanicMode,
    /// Active checks; `None` when off.
    pub health_check: Option<ActiveCheck>,
    pub outlier: OutlierPolicy,
    pub retry: RetryPolicy,
    /// Provider keys that replace the client's credentials.
    pub credentials: Option<KeyPool>,
    /// The per-backend cap on requests in flight; `None` when off.
    pub concurrency: Option<Concurrency>,
    /// Model names rewritten for these backends, after the route's rewrite.
    pub model_rewrite: ModelRewrite,
    pub timeouts: Timeouts,
    pub metrics: ClusterMetrics,
    /// Retry, ejection, fallback, refusal and key-rotation counters.
    pub handles: ClusterHandles,
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
    /// Health and load; for an HTTP backend, the `HttpBackend`'s own, so a reload that
    /// keeps the `HttpBackend` keeps it.
    pub state: Arc<BackendState>,
}

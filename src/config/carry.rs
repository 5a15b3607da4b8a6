//! What a new snapshot takes over from the one it replaces.
//!
//! A reload compiles a whole new [`Snapshot`], but what did not change keeps its state. This
//! module is the one place where the new config looks things up in the running one, so each
//! kind of state that must survive a reload gets its lookup here:
//!
//! - **Connection pools.** Each HTTP backend owns its pool (`upstream::HttpBackend`). A
//!   backend with the same cluster name, URL, client settings and TLS settings as a running
//!   one reuses the running one's `Arc<HttpBackend>`, and with it its idle connections, its
//!   shared HTTP/2 connection and whatever else lives in it. Anything else gets a new one.
//! - **Per-backend state** that belongs to the address rather than to the connections
//!   (health, ejections, in-flight counts) is found by [`Previous::take_backend`]: the old
//!   [`Backend`] with the same cluster name and URL, whether or not its pool is reused.
//! - **Per-cluster and per-route state** (balancer positions, rate-limit buckets) is found by
//!   name with [`Previous::cluster`] and [`Previous::route`].
//!
//! Requests in flight keep the old snapshot and its objects alive until they end, so a
//! backend that was removed drains its open requests and is then dropped with its pool.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::snapshot::{Backend, Cluster, Route, Snapshot};
use crate::upstream::tls::TlsTarget;
use crate::upstream::{ClientSettings, HttpBackend, Target};

/// The running snapshot, indexed for the compile of its successor.
#[derive(Debug, Default)]
pub struct Previous<'a> {
    snapshot: Option<&'a Snapshot>,
    clusters: HashMap<&'a str, &'a Arc<Cluster>>,
    routes: HashMap<&'a str, &'a Route>,
    /// Running backends by cluster name, then URL, in config order. Each is taken at most
    /// once, so a cluster that lists one URL twice maps the first to the first.
    backends: HashMap<&'a str, HashMap<&'a str, VecDeque<&'a Backend>>>,
    /// Backends whose connection pool carried over.
    pub pools_kept: usize,
    /// HTTP backends that got a new pool.
    pub pools_new: usize,
}

impl<'a> Previous<'a> {
    /// Nothing to carry over: the first compile, or `sluice check`.
    pub fn none() -> Previous<'static> {
        Previous::default()
    }

    /// Indexes `snapshot`, the one the next compile replaces.
    pub fn new(snapshot: &'a Snapshot) -> Previous<'a> {
        let mut backends: HashMap<&str, HashMap<&str, VecDeque<&Backend>>> = HashMap::new();
        for cluster in &snapshot.clusters {
            let urls = backends.entry(cluster.name.as_str()).or_default();
            for backend in &cluster.backends {
                urls.entry(backend.url.as_str())
                    .or_default()
                    .push_back(backend);
            }
        }
        Previous {
            snapshot: Some(snapshot),
            clusters: snapshot
                .clusters
                .iter()
                .map(|c| (c.name.as_str(), c))
                .collect(),
            routes: snapshot
                .routes
                .iter()
                .map(|r| (r.name.as_str(), r))
                .collect(),
            backends,
            pools_kept: 0,
            pools_new: 0,
        }
    }

    /// The snapshot being replaced, if any.
    pub fn snapshot(&self) -> Option<&'a Snapshot> {
        self.snapshot
    }

    /// The running cluster of this name.
    pub fn cluster(&self, name: &str) -> Option<&'a Arc<Cluster>> {
        self.clusters.get(name).copied()
    }

    /// The running route of this name.
    pub fn route(&self, name: &str) -> Option<&'a Route> {
        self.routes.get(name).copied()
    }

    /// Takes the running backend that backend `url` of cluster `cluster` continues: the next
    /// one, in config order, with the same cluster name and URL. State that belongs to the
    /// backend's address is carried from it.
    pub fn take_backend(&mut self, cluster: &str, url: &str) -> Option<&'a Backend> {
        self.backends.get_mut(cluster)?.get_mut(url)?.pop_front()
    }

    /// The old backend's connections, when the new one would be built exactly the same way:
    /// same client settings (protocol, timeouts, pool size) and same TLS (server name, CAs,
    /// client certificate). `None` means a new `HttpBackend` with a pool of its own.
    pub fn reuse_http(
        &mut self,
        old: Option<&'a Backend>,
        settings: &ClientSettings,
        tls: Option<&TlsTarget>,
    ) -> Option<Arc<HttpBackend>> {
        let kept = old.and_then(|old| match &old.target {
            Target::Http(http) if same_client(http, settings, tls) => Some(Arc::clone(http)),
            Target::Http(_) | Target::Mock(_) => None,
        });
        match kept {
            Some(_) => self.pools_kept += 1,
            None => self.pools_new += 1,
        }
        kept
    }
}

fn same_client(http: &HttpBackend, settings: &ClientSettings, tls: Option<&TlsTarget>) -> bool {
    let fingerprint = |t: &TlsTarget| (t.server_name.clone(), t.fingerprint);
    http.settings() == settings && http.tls().map(fingerprint) == tls.map(fingerprint)
}

#[cfg(test)]
mod tests;

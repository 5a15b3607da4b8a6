//! Active health checks: a background task per backend that asks `GET path` every
//! `interval` and feeds the answer to the backend's [`BackendState`].
//!
//! One supervisor task ([`supervise`]) watches the running snapshot. When a new snapshot is
//! published (a reload), it stops the checks of the old one and starts those of the new
//! one within a second; a backend that the reload kept keeps its state, so its health
//! carries over and only its check timer starts again.
//!
//! A check goes through the backend's own connection pool, as a request would, with the
//! backend's `host:port` as `Host`. It passes when the answer's status is one of
//! `expected_status` and the whole answer arrives within `timeout`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::health::{BackendState, CheckPolicy};
use crate::body;
use crate::config::file::UpstreamProtocol;
use crate::config::snapshot::{Backend, Cluster, Snapshot};
use crate::listener::stopped;
use crate::upstream::Target;

/// A cluster's active checks.
#[derive(Debug, Clone)]
pub struct ActiveCheck {
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    pub policy: CheckPolicy,
    pub expected_status: Vec<StatusCode>,
}

/// How often the supervisor looks for a new snapshot.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Runs the checks of the running snapshot until `stop` turns true.
pub async fn supervise(state: Arc<ArcSwap<Snapshot>>, mut stop: watch::Receiver<bool>) {
    let mut running: Option<Arc<Snapshot>> = None;
    let mut tasks = JoinSet::new();
    loop {
        let current = state.load_full();
        if !running.as_ref().is_some_and(|r| Arc::ptr_eq(r, &current)) {
            tasks.abort_all();
            for cluster in &current.clusters {
                if cluster.health_check.is_none() {
                    continue;
                }
                for index in 0..cluster.backends.len() {
                    tasks.spawn(check_backend(Arc::clone(cluster), index));
                }
            }
            running = Some(current);
        }
        tokio::select! {
            () = tokio::time::sleep(WATCH_EVERY) => {}
            () = stopped(&mut stop) => {
                tasks.abort_all();
                return;
            }
        }
    }
}

/// Checks backend `index` of `cluster` every interval, for ever (the supervisor aborts it).
async fn check_backend(cluster: Arc<Cluster>, index: usize) {
    let Some(check) = cluster.health_check.as_ref() else {
        return;
    };
    let backend = &cluster.backends[index];
    // Spread the first checks of a large cluster over the first interval.
    let offset = check.interval.mul_f64(fastrand::f64());
    let mut tick = tokio::time::interval_at(Instant::now() + offset, check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = probe(backend, check).await;
        cluster.handles.check(ok);
        record(&cluster, backend, &backend.state, ok, check);
    }
}

fn record(
    cluster: &Cluster,
    backend: &Backend,
    state: &BackendState,
    ok: bool,
    check: &ActiveCheck,
) {
    match state.check(ok, &check.policy, Instant::now()) {
        Some(true) => {
            tracing::info!(cluster = %cluster.name, backend = %backend.url, "backend is healthy again")
        }
        Some(false) => {
            tracing::warn!(cluster = %cluster.name, backend = %backend.url, path = %check.path, "backend failed its health checks")
        }
        None => {}
    }
}

/// One check: `true` when the answer came in time with an expected status.
async fn probe(backend: &Backend, check: &ActiveCheck) -> bool {
    let mut uri = http::uri::Parts::default();
    uri.path_and_query = Some(check.path.clone());
    // HTTP/2 carries the scheme and authority in the request, as `forward::prepare` writes.
    if let Target::Http(http) = &backend.target {
        if http.protocol() != UpstreamProtocol::Http1 {
            uri.scheme = Some(http.scheme());
            uri.authority = Some(http.authority.clone());
        }
    }
    let Ok(uri) = http::Uri::from_parts(uri) else {
        return false;
    };
    let request = Request::get(uri)
        .header(header::HOST, backend.authority.clone())
        .header(header::USER_AGENT, "sluice-health-check")
        .body(body::empty());
    let Ok(request) = request else { return false };
    let exchange = async {
        let response = backend.target.send(request).await.ok()?;
        let status = response.status();
        // Read to the end, so the connection goes back to the pool.
        response.into_body().collect().await.ok()?;
        Some(status)
    };
    match tokio::time::timeout(check.timeout, exchange).await {
        Ok(Some(status)) => check.expected_status.contains(&status),
        Ok(None) | Err(_) => false,
    }
}

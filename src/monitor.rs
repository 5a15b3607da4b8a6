//! The monitor listener (8421): liveness, readiness, metrics and status, in one `match`;
//! the conf-agent's reload endpoints in [`reload`].

pub mod reload;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{self, Body};
use crate::config::snapshot::Snapshot;
use crate::error::json_error;
use crate::listener::stopped;
use crate::metrics::Metrics;
use crate::proxy::route::PathMatch;
use crate::reload::Reloader;

/// What the monitor reports on, shared with the rest of the process.
#[derive(Debug)]
pub struct Monitor {
    pub state: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    /// Set once the listeners are bound and the config is loaded.
    pub ready: AtomicBool,
    /// Set when shutdown begins; readiness fails from then on.
    pub draining: AtomicBool,
    pub started: SystemTime,
    /// Serves `/reload/...` and the `last_reload` of `/status`.
    pub reloader: Arc<Reloader>,
}

impl Monitor {
    /// Answers one monitor request.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "the monitor port answers GET only",
                "invalid_request_error",
                "method_not_allowed",
            );
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if self.draining.load(Ordering::Acquire) {
                    text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                } else if self.ready.load(Ordering::Acquire) {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
                }
            }
            "/metrics" => {
                // Seconds until expiry change with time: computed at each scrape.
                let snapshot = self.state.load();
                self.metrics
                    .set_cert_expiry(&snapshot.cert_expiry, SystemTime::now());
                self.metrics.upstream.refresh(&snapshot);
                let mut response = Response::new(body::full(self.metrics.encode()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            "/status" => {
                let mut response = Response::new(body::full(self.status().to_string()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            path => json_error(
                StatusCode::NOT_FOUND,
                &format!(
                    "no monitor endpoint at {path}; try /healthz, /readyz, /metrics, /status \
                     or /reload/<name>"
                ),
                "invalid_request_error",
                "not_found",
            ),
        }
    }

    /// The `/status` document: version, state, routes, clusters and backends.
    pub fn status(&self) -> serde_json::Value {
        let snapshot = self.state.load();
        let routes: Vec<_> = snapshot
            .routes
            .iter()
            .map(|r| {
                let (kind, path) = match &r.matcher.path {
                    PathMatch::Exact(p) => ("exact", p.clone()),
                    PathMatch::Prefix(p) => ("prefix", p.clone()),
                    PathMatch::Regex(re) => ("regex", re.as_str().to_owned()),
                };
                let mut route = json!({
                    "name": r.name,
                    "cluster": r.cluster.name,
                    "hosts": r.matcher.hosts,
                    "path": { "kind": kind, "value": path },
                    "methods": r.matcher.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                });
                crate::upstream::status::route(r, &mut route);
                route
            })
            .collect();
        let clusters: Vec<_> = snapshot
            .clusters
            .iter()
            .map(|c| {
                let mut cluster = json!({
                    "name": c.name,
                    "protocol": format!("{:?}", c.protocol).to_lowercase(),
                    "backends": c.backends.iter().map(|b| json!({
                        "url": b.url,
                        "weight": b.weight,
                    })).collect::<Vec<_>>(),
                });
                crate::upstream::status::cluster(c, &mut cluster);
                cluster
            })
            .collect();
        let certificates: Vec<_> = snapshot
            .cert_expiry
            .iter()
            .map(|(cert, not_after)| json!({ "cert": cert, "not_after_unix": not_after }))
            .collect();
        let uptime = self.started.elapsed().map(|d| d.as_secs()).unwrap_or(0);
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "config_version": snapshot.version,
            "uptime_seconds": uptime,
            "ready": self.ready.load(Ordering::Acquire),
            "draining": self.draining.load(Ordering::Acquire),
            "last_reload": self.reloader.last().to_json(),
            "routes": routes,
            "clusters": clusters,
            "certificates": certificates,
        })
    }
}

fn text(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serves the monitor endpoints until `shutdown` turns true. Probes stay answerable while
/// the traffic listeners drain, so the monitor stops last.
pub async fn serve(
    listener: TcpListener,
    monitor: Arc<Monitor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "monitor accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => return,
        };
        let monitor = Arc::clone(&monitor);
        let builder = Arc::clone(&builder);
        tokio::spawn(async move {
            let service = service_fn(|req| {
                let monitor = Arc::clone(&monitor);
                async move {
                    // A reload reads files and compiles: the one endpoint that waits.
                    let response = if reload::is_reload_path(req.uri().path()) {
                        reload::handle(&monitor.reloader, &req, peer).await
                    } else {
                        monitor.handle(&req)
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            if let Err(err) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "monitor connection ended with an error");
            }
        });
    }
}

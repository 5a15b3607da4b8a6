//! Connections to backends.
//!
//! Each HTTP backend owns its connections ([`HttpBackend`]): a lock-free queue of idle
//! HTTP/1.1 connections, or one shared HTTP/2 connection for h2c. A request takes an idle
//! connection (or opens one), and its response body puts the connection back when the last
//! byte has been read, so a keep-alive connection serves one request at a time and is never
//! reused half-read. `mock://` backends are answered in process by the built-in mock model
//! server. Either way the caller gets a `Response<Body>` or a [`ProxyError`] saying what
//! failed.
//!
//! Why not hyper-util's pooled `Client`: it keys its pool by authority behind a mutex and
//! routes each request through extra channels; the pool here is per backend, needs no
//! hashing and no lock, and measured faster on the load benchmark (docs/benchmarks.md).

mod connect;
mod pool;

use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};

use crate::body::Body;
use crate::config::file::UpstreamProtocol;
use crate::error::ProxyError;
use crate::metrics::ClusterMetrics;
use crate::mock::MockBackend;
use crate::proxy::limit::{BodyTooLarge, ClientBodyError};
use pool::{Pool, PooledBody};

/// Settings shared by a cluster's backends.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub protocol: UpstreamProtocol,
    /// `None` waits as long as the OS does.
    pub connect_timeout: Option<Duration>,
    /// Idle connections older than this are closed; `None` keeps them.
    pub pool_idle_timeout: Option<Duration>,
    pub pool_max_idle_per_host: usize,
}

/// Where one backend lives.
#[derive(Debug, Clone)]
pub enum Target {
    /// A TCP backend with its connections.
    Http(Arc<HttpBackend>),
    /// The in-process mock model server.
    Mock(MockBackend),
}

impl Target {
    /// Sends `req` and waits for the response head.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        match self {
            Target::Mock(mock) => mock
                .serve(req)
                .await
                .map_err(|e| classify(&*e).unwrap_or_else(|| ProxyError::Upstream(chain(&*e)))),
            Target::Http(backend) => backend.send(req).await,
        }
    }
}

/// A TCP backend (`http://host:port`) and its connections.
#[derive(Debug)]
pub struct HttpBackend {
    pub authority: Authority,
    settings: ClientSettings,
    pool: Pool,
    metrics: ClusterMetrics,
}

impl HttpBackend {
    pub fn new(authority: Authority, settings: ClientSettings, metrics: ClusterMetrics) -> Self {
        HttpBackend {
            authority,
            pool: Pool::new(settings.pool_max_idle_per_host, settings.pool_idle_timeout),
            settings,
            metrics,
        }
    }

    /// The protocol spoken to this backend.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.settings.protocol
    }

    /// Sends an upgrade request on a connection of its own, which becomes the tunnel if the
    /// backend agrees (the caller takes it with `hyper::upgrade::on`).
    pub async fn open_tunnel(
        &self,
        req: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, ProxyError> {
        let mut sender = self.connect_http1().await?;
        sender
            .send_request(req)
            .await
            .map_err(|e| upstream_error(&e))
    }

    /// Closes idle connections past the idle timeout.
    pub fn sweep(&self) {
        self.pool.sweep();
    }

    async fn send(self: &Arc<Self>, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        match self.settings.protocol {
            UpstreamProtocol::Http1 => self.send_http1(req).await,
            UpstreamProtocol::H2c => self.send_h2c(req).await,
        }
    }

    async fn send_http1(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        // Idle connections first. One the backend closed before the request was written
        // gives the request back, and the next connection gets it.
        while let Some(mut sender) = self.pool.checkout() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(PooledBody::wrap(response, sender, self)),
                Err(mut err) => match err.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(upstream_error(&err.into_error())),
                },
            }
        }
        let mut sender = self.connect_http1().await?;
        match sender.send_request(req).await {
            Ok(response) => Ok(PooledBody::wrap(response, sender, self)),
            Err(err) => Err(upstream_error(&err)),
        }
    }

    async fn send_h2c(&self, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let mut sender = match self.pool.shared_h2() {
            Some(sender) => sender,
            None => {
                let sender = self.connect_h2c().await?;
                self.pool.set_shared_h2(sender.clone());
                sender
            }
        };
        match sender.send_request(req).await {
            Ok(response) => Ok(response.map(crate::body::boxed)),
            Err(err) => Err(upstream_error(&err)),
        }
    }

    async fn connect_http1(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Body>, ProxyError> {
        self.metrics.connects.inc();
        connect::http1(&self.authority, self.settings.connect_timeout)
            .await
            .inspect_err(|_| self.metrics.connect_errors.inc())
    }

    async fn connect_h2c(
        &self,
    ) -> Result<hyper::client::conn::http2::SendRequest<Body>, ProxyError> {
        self.metrics.connects.inc();
        connect::h2c(&self.authority, self.settings.connect_timeout)
            .await
            .inspect_err(|_| self.metrics.connect_errors.inc())
    }
}

/// A failed exchange: the client's body if that is what broke, else the upstream.
fn upstream_error(err: &hyper::Error) -> ProxyError {
    classify(err).unwrap_or_else(|| ProxyError::Upstream(chain(err)))
}

/// Finds a failure of the client's own body in an error chain: too large (413) or
/// unreadable (400).
pub(crate) fn classify(err: &(dyn std::error::Error + 'static)) -> Option<ProxyError> {
    let mut source = Some(err);
    while let Some(cause) = source {
        if let Some(too_large) = cause.downcast_ref::<BodyTooLarge>() {
            return Some(ProxyError::BodyTooLarge {
                limit: too_large.limit,
            });
        }
        if let Some(body) = cause.downcast_ref::<ClientBodyError>() {
            return Some(ProxyError::ClientBody(chain(body)));
        }
        source = cause.source();
    }
    None
}

/// The error and its causes in one line: "connection closed before message completed: ...".
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

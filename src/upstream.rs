//! Connections to backends.
//!
//! Each HTTP backend owns its connections ([`HttpBackend`]): a lock-free queue of idle
//! HTTP/1.1 connections, or one shared HTTP/2 connection (h2c, or h2 over TLS). `https://`
//! backends get the same pool, each connection opened through a TLS handshake
//! ([`tls`]); with `protocol = "auto"` the first handshake's ALPN decides which of the two
//! the backend gets. A request takes an idle
//! connection (or opens one), and its response body puts the connection back when the last
//! byte has been read, so a keep-alive connection serves one request at a time and is never
//! reused half-read. `mock://` backends are answered in process by the built-in mock model
//! server. Either way the caller gets a `Response<Body>` or a [`ProxyError`] saying what
//! failed.
//!
//! Why not hyper-util's pooled `Client`: it keys its pool by authority behind a mutex and
//! routes each request through extra channels; the pool here is per backend, needs no
//! hashing and no lock, and measured faster on the load benchmark (docs/benchmarks.md).

pub mod check;
mod connect;
pub mod credentials;
pub mod h1;
pub mod health;
pub mod metrics;
mod pool;
pub mod status;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, Version};

use crate::body::Body;
use crate::config::file::UpstreamProtocol;
use crate::error::ProxyError;
use crate::metrics::ClusterMetrics;
use crate::mock::MockBackend;
use crate::proxy::limit::{BodyTooLarge, ClientBodyError};
use connect::{Conn, Want};
use health::BackendState;
use pool::Pool;
use tls::TlsTarget;

/// Settings shared by a cluster's backends. Compared on reload: a backend whose settings
/// did not change keeps its connections (`config::carry`).
#[derive(Debug, Clone, PartialEq, Eq)]
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
            // Boxed so that the mock's state does not grow the future of every request.
            Target::Mock(mock) => Box::pin(mock.serve(req))
                .await
                .map_err(|e| classify(&*e).unwrap_or_else(|| ProxyError::Upstream(chain(&*e)))),
            Target::Http(backend) => backend.send(req).await,
        }
    }
}

/// A TCP backend (`http://host:port` or `https://host:port`) and its connections.
#[derive(Debug)]
pub struct HttpBackend {
    pub authority: Authority,
    settings: ClientSettings,
    /// Set for `https://` backends.
    tls: Option<TlsTarget>,
    pool: Pool,
    metrics: ClusterMetrics,
    /// Health and load, shared with the snapshot's `Backend`: a reload that keeps this
    /// `HttpBackend` keeps them.
    state: Arc<BackendState>,
}

impl HttpBackend {
    /// A backend at `authority`, reached through TLS when `tls` is set.
    pub fn new(
        authority: Authority,
        settings: ClientSettings,
        tls: Option<TlsTarget>,
        metrics: ClusterMetrics,
    ) -> Self {
        HttpBackend {
            authority,
            pool: Pool::new(settings.pool_max_idle_per_host, settings.pool_idle_timeout),
            settings,
            tls,
            metrics,
            state: Arc::new(BackendState::new()),
        }
    }

    /// The backend's health and load.
    pub fn state(&self) -> &Arc<BackendState> {
        &self.state
    }

    /// The protocol spoken to this backend.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.settings.protocol
    }

    /// The settings it was built with; a reload compares them to reuse it.
    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// How it is reached over TLS; `None` for `http://` backends.
    pub fn tls(&self) -> Option<&TlsTarget> {
        self.tls.as_ref()
    }

    /// Sends an upgrade request on a connection of its own, which becomes the tunnel if the
    /// backend agrees (the caller takes it with `hyper::upgrade::on`).
    pub async fn open_tunnel(
        &self,
        req: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, ProxyError> {
        let Conn::H1(conn) = self.connect(Want::Http1).await? else {
            return Err(ProxyError::Upstream(
                "an HTTP/2 connection where HTTP/1.1 was asked for".to_owned(),
            ));
        };
        connect::tunnel(conn)
            .await?
            .send_request(req)
            .await
            .map_err(|e| upstream_error(&e))
    }

    /// `https` for TLS backends, else `http`: the `:scheme` of HTTP/2 requests.
    pub fn scheme(&self) -> http::uri::Scheme {
        if self.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        }
    }

    /// Closes idle connections past the idle timeout.
    pub fn sweep(&self) {
        self.pool.sweep();
    }

    async fn send(self: &Arc<Self>, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        match self.settings.protocol {
            UpstreamProtocol::Http1 => self.send_http1(req, Want::Http1).await,
            UpstreamProtocol::H2c | UpstreamProtocol::Http2 => self.send_h2(req).await,
            UpstreamProtocol::Auto => match self.pool.shared_h2() {
                Some(sender) => Self::send_on_h2(sender, req).await,
                None => self.send_http1(req, Want::Alpn).await,
            },
        }
    }

    /// Sends on an idle HTTP/1.1 connection or a new one. With `Want::Alpn` the new
    /// connection may turn out to be HTTP/2; it then becomes the shared one.
    async fn send_http1(
        self: &Arc<Self>,
        req: Request<Body>,
        want: Want,
    ) -> Result<Response<Body>, ProxyError> {
        // With `auto`, `prepare` wrote the absolute form that HTTP/2 needs (its `:authority`
        // follows the route's Host policy); the HTTP/1.1 client writes only its origin form.
        // An idle connection first: the pool hands out only those the backend has not
        // closed.
        let conn = match self.pool.checkout() {
            Some(conn) => conn,
            None => match Box::pin(self.connect(want)).await? {
                Conn::H1(conn) => conn,
                Conn::H2(sender) => {
                    self.pool.set_shared_h2(sender.clone());
                    return Self::send_on_h2(sender, req).await;
                }
            },
        };
        conn.send(req, self).await
    }

    /// Sends on the shared HTTP/2 connection, opening it first if there is none.
    async fn send_h2(&self, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let sender = match self.pool.shared_h2() {
            Some(sender) => sender,
            None => match Box::pin(self.connect(Want::Http2)).await? {
                Conn::H2(sender) => {
                    self.pool.set_shared_h2(sender.clone());
                    sender
                }
                // `open` never answers `Want::Http2` with HTTP/1.1; should it, fail cleanly.
                Conn::H1(_) => {
                    return Err(ProxyError::Upstream(
                        "an HTTP/1.1 connection where HTTP/2 was asked for".to_owned(),
                    ))
                }
            },
        };
        Self::send_on_h2(sender, req).await
    }

    async fn send_on_h2(
        mut sender: hyper::client::conn::http2::SendRequest<Body>,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        *req.version_mut() = Version::HTTP_2;
        match sender.send_request(req).await {
            Ok(response) => Ok(response.map(crate::body::boxed)),
            Err(err) => Err(upstream_error(&err)),
        }
    }

    /// Opens a connection. Callers box this future: it holds a resolver and a TLS
    /// handshake, and inlined it would make every request's future as large, to be moved
    /// on each request although connections are opened rarely.
    async fn connect(&self, want: Want) -> Result<Conn, ProxyError> {
        let default_port = if self.tls.is_some() { 443 } else { 80 };
        let opened = connect::open(
            &self.authority,
            default_port,
            self.settings.connect_timeout,
            self.tls.as_ref(),
            want,
        )
        .await;
        // Counted once it is known: a failure is a connect error, not a connection.
        match &opened {
            Ok(_) => self.metrics.connects.inc(),
            Err(_) => self.metrics.connect_errors.inc(),
        }
        opened
    }
}

/// A failed exchange: the client's body if that is what broke, an HTTP/2 stream the backend
/// refused before processing it (safe to retry), else the upstream.
fn upstream_error(err: &hyper::Error) -> ProxyError {
    classify(err).unwrap_or_else(|| {
        if refused_stream(err) {
            ProxyError::RefusedStream(chain(err))
        } else {
            ProxyError::Upstream(chain(err))
        }
    })
}

/// Whether an HTTP/2 `REFUSED_STREAM` is in the error chain.
fn refused_stream(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = cause.source();
    }
    false
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

#[cfg(test)]
mod tests {
    use super::refused_stream;

    #[test]
    fn a_refused_stream_is_told_apart_from_other_resets() {
        // hyper puts h2's error in the source chain of its own.
        assert!(refused_stream(&h2::Error::from(h2::Reason::REFUSED_STREAM)));
        assert!(!refused_stream(&h2::Error::from(h2::Reason::CANCEL)));
        assert!(!refused_stream(&std::io::Error::other("reset")));
    }
}

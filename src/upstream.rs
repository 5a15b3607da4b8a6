//! Connections to backends: one pooled keep-alive client per cluster.
//!
//! A cluster's backends are reached either over TCP (HTTP/1.1 or h2c, through hyper-util's
//! pooled client) or, for `mock://` URLs, by calling the built-in mock model server in process.
//! Either way the caller gets a `Response<Body>` or a [`ProxyError`] that says what failed.

use std::error::Error as _;
use std::io;
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{self, Body};
use crate::config::file::UpstreamProtocol;
use crate::error::ProxyError;
use crate::mock::MockBackend;
use crate::proxy::limit::BodyTooLarge;

/// Settings of one cluster's client.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub protocol: UpstreamProtocol,
    /// `None` waits as long as the OS does.
    pub connect_timeout: Option<Duration>,
    pub pool_idle_timeout: Option<Duration>,
    pub pool_max_idle_per_host: usize,
}

/// Where one backend lives.
#[derive(Debug, Clone)]
pub enum Target {
    /// A TCP backend: `scheme://authority`, to which the request's path is appended.
    Http { base: Uri },
    /// The in-process mock model server.
    Mock(MockBackend),
}

/// The pooled client of one cluster.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    client: Client<HttpConnector, Body>,
    connect_timeout: Option<Duration>,
}

impl UpstreamClient {
    /// Builds the client; no connection is opened until the first request.
    pub fn new(settings: &ClientSettings) -> UpstreamClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(settings.connect_timeout);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            // Small JSON requests: one write of head and body beats a vectored write.
            .http1_writev(false)
            .http2_only(settings.protocol == UpstreamProtocol::H2c);
        UpstreamClient {
            client: builder.build(connector),
            connect_timeout: settings.connect_timeout,
        }
    }

    /// Sends `req` to `target` and waits for the response head.
    pub async fn send(
        &self,
        target: &Target,
        req: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        match target {
            Target::Mock(mock) => Ok(mock.handle(req).await),
            Target::Http { .. } => match self.client.request(req).await {
                Ok(response) => Ok(response.map(body::boxed)),
                Err(err) => Err(self.classify(&err)),
            },
        }
    }

    /// Names what failed: the connection, the client's own body, or the upstream's answer.
    fn classify(&self, err: &hyper_util::client::legacy::Error) -> ProxyError {
        let mut source = err.source();
        while let Some(cause) = source {
            if let Some(too_large) = cause.downcast_ref::<BodyTooLarge>() {
                return ProxyError::BodyTooLarge {
                    limit: too_large.limit,
                };
            }
            if err.is_connect() {
                if let Some(io) = cause.downcast_ref::<io::Error>() {
                    if io.kind() == io::ErrorKind::TimedOut {
                        return ProxyError::ConnectTimeout(
                            self.connect_timeout.unwrap_or_default(),
                        );
                    }
                }
            }
            source = cause.source();
        }
        if err.is_connect() {
            return ProxyError::Connect(chain(err));
        }
        ProxyError::Upstream(chain(err))
    }
}

/// The error and its causes in one line: "client error (Connect): tcp connect error: refused".
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

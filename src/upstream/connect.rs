//! Opening connections to a backend: resolve, connect within the timeout, handshake, and
//! spawn the task that drives the connection.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use http::uri::Authority;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::body::Body;
use crate::error::ProxyError;

/// An HTTP/1.1 connection; its driver task ends when the connection closes.
pub async fn http1(
    authority: &Authority,
    timeout: Option<Duration>,
) -> Result<http1::SendRequest<Body>, ProxyError> {
    let stream = tcp(authority, timeout).await?;
    let (sender, conn) = http1::Builder::new()
        // Small JSON requests: one write of head and body beats a vectored write.
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ProxyError::Connect(super::chain(&e)))?;
    tokio::spawn(async move {
        if let Err(err) = conn.with_upgrades().await {
            tracing::debug!(error = %err, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// An HTTP/2 connection with prior knowledge; shared by many requests.
pub async fn h2c(
    authority: &Authority,
    timeout: Option<Duration>,
) -> Result<http2::SendRequest<Body>, ProxyError> {
    let stream = tcp(authority, timeout).await?;
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ProxyError::Connect(super::chain(&e)))?;
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "upstream h2 connection ended with an error");
        }
    });
    Ok(sender)
}

/// Resolves `authority` and connects to the first address that answers, all within
/// `timeout`.
async fn tcp(authority: &Authority, timeout: Option<Duration>) -> Result<TcpStream, ProxyError> {
    let attempt = async {
        let port = authority.port_u16().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((authority.host(), port))
            .await?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    // Finds a backend that vanished while a pooled connection sat idle.
                    let keepalive = socket2::TcpKeepalive::new()
                        .with_time(Duration::from_secs(60))
                        .with_interval(Duration::from_secs(10));
                    socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
                    return Ok(stream);
                }
                Err(err) => last = err,
            }
        }
        Err(last)
    };
    let result = match timeout {
        Some(limit) => tokio::time::timeout(limit, attempt)
            .await
            .map_err(|_| ProxyError::ConnectTimeout(limit))?,
        None => attempt.await,
    };
    result.map_err(|e| ProxyError::Connect(format!("{authority}: {e}")))
}

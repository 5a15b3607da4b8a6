//! Opening connections to a backend: resolve, connect within the timeout, the TLS handshake
//! for `https://` backends; for HTTP/2 also the handshake and the task that drives the
//! connection (HTTP/1.1 connections are driven by their requests, [`super::h1`]).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use http::uri::Authority;
use hyper::client::conn::{http1, http2};
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::h1::{H1Conn, Io};
use super::tls::{self, TlsTarget};
use crate::body::Body;
use crate::error::ProxyError;

/// A new connection, of the protocol that was agreed.
pub enum Conn {
    H1(H1Conn),
    H2(http2::SendRequest<Body>),
}

/// What to speak on a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Http1,
    Http2,
    /// HTTP/2 if TLS's ALPN agreed to it, else HTTP/1.1.
    Alpn,
}

/// Opens a connection to `authority` (through TLS when `tls` is set). `timeout` bounds the
/// TCP connect and the TLS handshake together.
pub async fn open(
    authority: &Authority,
    default_port: u16,
    timeout: Option<Duration>,
    tls: Option<&TlsTarget>,
    want: Want,
) -> Result<Conn, ProxyError> {
    let connecting = async {
        let tcp = tcp(authority, default_port).await?;
        match tls {
            None => Ok((Io::Plain(tcp), want == Want::Http2)),
            Some(target) => {
                let stream = tls::connect(tcp, target).await?;
                let h2 = match want {
                    Want::Http1 => false,
                    Want::Http2 => true,
                    Want::Alpn => tls::agreed_h2(&stream),
                };
                Ok((Io::Tls(Box::new(stream)), h2))
            }
        }
    };
    let (io, h2) = match timeout {
        Some(limit) => tokio::time::timeout(limit, connecting)
            .await
            .map_err(|_| ProxyError::ConnectTimeout(limit))??,
        None => connecting.await?,
    };
    if !h2 {
        return Ok(Conn::H1(H1Conn::new(io)));
    }
    // Boxed: hyper's HTTP/2 handshake is about 5 KiB, and unboxed every HTTP/1.1 connect
    // would be as large while it runs (thousands of them at once in a burst of streams).
    match io {
        Io::Plain(tcp) => Box::pin(handshake_h2(TokioIo::new(tcp))).await,
        Io::Tls(stream) => Box::pin(handshake_h2(TokioIo::new(*stream))).await,
    }
}

async fn handshake_h2<I>(io: I) -> Result<Conn, ProxyError>
where
    I: Read + Write + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .handshake(io)
        .await
        .map_err(|e| ProxyError::Connect(super::chain(&e)))?;
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "upstream h2 connection ended with an error");
        }
    });
    Ok(Conn::H2(sender))
}

/// Starts hyper's HTTP/1.1 client on `conn` for one request that upgrades the connection
/// (a WebSocket tunnel); the caller takes the upgraded stream with `hyper::upgrade::on`.
pub async fn tunnel(conn: H1Conn) -> Result<http1::SendRequest<Body>, ProxyError> {
    let (sender, conn) = http1::handshake(TokioIo::new(conn.into_io()))
        .await
        .map_err(|e| ProxyError::Connect(super::chain(&e)))?;
    tokio::spawn(async move {
        if let Err(err) = conn.with_upgrades().await {
            tracing::debug!(error = %err, "upstream tunnel connection ended with an error");
        }
    });
    Ok(sender)
}

/// Resolves `authority` and connects to the first address that answers.
async fn tcp(authority: &Authority, default_port: u16) -> Result<TcpStream, ProxyError> {
    let attempt = async {
        let port = authority.port_u16().unwrap_or(default_port);
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
    attempt
        .await
        .map_err(|e: io::Error| ProxyError::Connect(format!("{authority}: {e}")))
}

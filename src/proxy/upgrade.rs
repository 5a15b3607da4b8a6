//! WebSocket tunnels: an HTTP/1.1 `Upgrade: websocket` on a route that allows it is
//! forwarded on a connection of its own; when the backend answers `101`, both connections
//! are upgraded and bytes are copied both ways until either side closes, the tunnel idles
//! past its idle timeout, or it reaches its maximum duration. This is how the OpenAI
//! Realtime API (`/v1/realtime`) passes. HTTP/2 WebSockets (extended CONNECT) are not
//! tunnelled.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::body::{self, Body};
use crate::config::snapshot::{Backend, Route, WebSocketLimits};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::proxy::headers;
use crate::upstream::Target;

/// First size of each direction's copy buffer, and its most. An open tunnel mostly waits,
/// and a waiting read holds its buffer; so each starts small, a read that fills it doubles
/// it for the next, and a read of less than a quarter of it shrinks it to a quarter.
const BUFFER: usize = 1024;
const MAX_BUFFER: usize = 64 * 1024;
/// Stands for "no limit" where a deadline is needed.
const YEAR: Duration = Duration::from_secs(365 * 86400);

/// Whether the request asks to become a WebSocket.
pub fn is_websocket(parts: &Parts) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        parts.headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::UPGRADE, "websocket") && has_token(header::CONNECTION, "upgrade")
}

/// Checks the handshake and takes the client's side of the upgrade.
pub fn client_side(parts: &mut Parts) -> Result<OnUpgrade, ProxyError> {
    if parts.method != Method::GET || parts.version != Version::HTTP_11 {
        return Err(ProxyError::BadHandshake(
            "a WebSocket handshake is an HTTP/1.1 GET",
        ));
    }
    let key = parts.headers.get(header::SEC_WEBSOCKET_KEY);
    if key.is_none_or(|k| k.len() != 24) {
        return Err(ProxyError::BadHandshake(
            "Sec-WebSocket-Key is missing or malformed",
        ));
    }
    if parts
        .headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return Err(ProxyError::BadHandshake("Sec-WebSocket-Version must be 13"));
    }
    parts
        .extensions
        .remove::<OnUpgrade>()
        .ok_or(ProxyError::BadHandshake(
            "this connection cannot be upgraded",
        ))
}

/// Sends the prepared handshake to `backend`. On `101` it spawns the tunnel and returns the
/// `101` for the client; any other answer is returned as it is.
pub async fn forward(
    mut req: Request<Body>,
    route: &Route,
    backend: &Backend,
    client: OnUpgrade,
    limits: WebSocketLimits,
    metrics: &Metrics,
    request_id: Option<HeaderValue>,
) -> Result<Response<Body>, ProxyError> {
    // `prepare` removed the hop-by-hop fields; the handshake needs these two back.
    let headers = req.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let (response, upstream) = match &backend.target {
        Target::Http(http) => {
            // The backend's answer to the handshake is bounded like any response head.
            let opened = http.open_tunnel(req);
            let mut response = match route.timeouts.response_header {
                Some(limit) => tokio::time::timeout(limit, opened)
                    .await
                    .map_err(|_| ProxyError::ResponseHeaderTimeout(limit))??,
                None => opened.await?,
            };
            if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                // A refusal is an ordinary answer: treated as `forward::send` treats one.
                headers::strip_hop_by_hop(response.headers_mut());
                route.response_headers.apply(response.headers_mut());
                return Ok(response.map(body::boxed));
            }
            let upgrade = hyper::upgrade::on(&mut response);
            let upstream: Upstream = Box::pin(async move {
                let io = upgrade.await.map_err(|e| e.to_string())?;
                Ok(Box::new(TokioIo::new(io)) as Box<dyn Io>)
            });
            (response.map(body::boxed), upstream)
        }
        Target::Mock(_) => {
            let Some((response, io)) = crate::mock::websocket::accept(req.headers()) else {
                return Err(ProxyError::BadHandshake("Sec-WebSocket-Key is missing"));
            };
            let upstream: Upstream = Box::pin(async move { Ok(Box::new(io) as Box<dyn Io>) });
            (response, upstream)
        }
    };
    let metrics = metrics.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let (client, upstream) = match tokio::join!(client, upstream) {
            (Ok(client), Ok(upstream)) => (TokioIo::new(client), upstream),
            (Err(err), _) => return tracing::debug!(error = %err, "client upgrade failed"),
            (_, Err(err)) => return tracing::debug!(error = %err, "upstream upgrade failed"),
        };
        metrics.websocket_open.inc();
        let (sent, received, reason) = pump(client, upstream, limits, &metrics).await;
        metrics.websocket_open.dec();
        tracing::info!(
            target: "sluice::access",
            request_id = request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
            tunnel = "websocket",
            bytes_from_client = sent,
            bytes_to_client = received,
            duration_ms = started.elapsed().as_millis() as u64,
            reason,
            "tunnel closed"
        );
    });
    Ok(response)
}

/// Both ends of a tunnel are boxed once per tunnel: a TCP upgrade or an in-memory pipe.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Upstream =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Box<dyn Io>, String>> + Send>>;

/// Copies both ways until both sides are done, or a limit ends it. Returns the bytes each
/// way and why it ended.
async fn pump(
    client: impl AsyncRead + AsyncWrite + Unpin,
    upstream: impl AsyncRead + AsyncWrite + Unpin,
    limits: WebSocketLimits,
    metrics: &Metrics,
) -> (u64, u64, &'static str) {
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let mut up_buf = vec![0u8; BUFFER];
    let mut down_buf = vec![0u8; BUFFER];
    let (mut sent, mut received) = (0u64, 0u64);
    let (mut client_open, mut upstream_open) = (true, true);
    let end = Instant::now() + limits.max_duration.unwrap_or(YEAR);
    let idle = limits.idle.unwrap_or(YEAR);
    let mut idle_at = Instant::now() + idle;
    while client_open || upstream_open {
        tokio::select! {
            read = client_read.read(&mut up_buf), if client_open => match read {
                Ok(0) | Err(_) => {
                    client_open = false;
                    let _ = upstream_write.shutdown().await;
                }
                Ok(n) => {
                    if upstream_write.write_all(&up_buf[..n]).await.is_err() {
                        return (sent, received, "upstream_error");
                    }
                    resize(&mut up_buf, n);
                    sent += n as u64;
                    metrics.websocket_bytes_up.inc_by(n as u64);
                    idle_at = Instant::now() + idle;
                }
            },
            read = upstream_read.read(&mut down_buf), if upstream_open => match read {
                Ok(0) | Err(_) => {
                    upstream_open = false;
                    let _ = client_write.shutdown().await;
                }
                Ok(n) => {
                    if client_write.write_all(&down_buf[..n]).await.is_err() {
                        return (sent, received, "client_gone");
                    }
                    resize(&mut down_buf, n);
                    received += n as u64;
                    metrics.websocket_bytes_down.inc_by(n as u64);
                    idle_at = Instant::now() + idle;
                }
            },
            () = tokio::time::sleep_until(idle_at) => return (sent, received, "idle_timeout"),
            () = tokio::time::sleep_until(end) => {
                return (sent, received, "max_duration");
            }
        }
    }
    (sent, received, "closed")
}

/// Sizes a copy buffer for the next read after one of `read` bytes (see [`BUFFER`]).
fn resize(buf: &mut Vec<u8>, read: usize) {
    if read == buf.len() && buf.len() < MAX_BUFFER {
        *buf = vec![0; buf.len() * 2];
    } else if read < buf.len() / 4 && buf.len() > BUFFER {
        *buf = vec![0; (buf.len() / 4).max(BUFFER)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_buffers_grow_on_full_reads_and_shrink_on_short_ones() {
        let mut buf = vec![0; BUFFER];
        resize(&mut buf, 100);
        assert_eq!(buf.len(), BUFFER);
        let mut full = BUFFER;
        while full < MAX_BUFFER {
            resize(&mut buf, full);
            full *= 2;
            assert_eq!(buf.len(), full);
        }
        resize(&mut buf, MAX_BUFFER);
        assert_eq!(buf.len(), MAX_BUFFER, "no larger than the most");
        resize(&mut buf, MAX_BUFFER / 2);
        assert_eq!(buf.len(), MAX_BUFFER, "a read of half of it keeps it");
        resize(&mut buf, 4096);
        assert_eq!(
            buf.len(),
            MAX_BUFFER / 4,
            "a short read shrinks it to a quarter"
        );
        resize(&mut buf, 10);
        resize(&mut buf, 10);
        assert_eq!(
            buf.len(),
            BUFFER,
            "and short reads bring it back to the start"
        );
    }
}

//! The mock backend's WebSocket echo, for tunnel tests and benchmarks.
//!
//! The proxy hands over one end of an in-memory duplex pipe as if it were the backend's
//! upgraded connection; the other end runs a WebSocket server that echoes every text and
//! binary message.

use futures_util::{SinkExt, StreamExt};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use tokio::io::DuplexStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::body::{self, Body};

/// Buffer of the in-memory pipe, each way.
const PIPE: usize = 16 * 1024;

/// The `101 Switching Protocols` answer to a handshake, and the proxy's end of the pipe
/// whose other end echoes. `None` when the handshake has no `Sec-WebSocket-Key`.
pub fn accept(headers: &HeaderMap) -> Option<(Response<Body>, DuplexStream)> {
    let key = headers.get(SEC_WEBSOCKET_KEY)?;
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes())).ok()?;
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(SEC_WEBSOCKET_ACCEPT, accept);
    let (proxy_end, echo_end) = tokio::io::duplex(PIPE);
    tokio::spawn(echo(echo_end));
    Some((response, proxy_end))
}

async fn echo(io: DuplexStream) {
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    while let Some(Ok(message)) = ws.next().await {
        let reply = match message {
            Message::Text(_) | Message::Binary(_) => message,
            Message::Close(_) => break,
            // tungstenite answers pings itself.
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
    let _ = ws.close(None).await;
}

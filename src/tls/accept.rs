//! The TLS handshake of one HTTPS connection, bounded in time and counted.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;

/// A finished handshake.
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    /// The subject of the client's verified certificate, when it sent one.
    pub client_subject: Option<HeaderValue>,
}

/// Runs the server side of the handshake on `stream` with `config`, within `timeout`, and
/// counts it in `sluice_tls_handshakes_total`. `None` when it failed: the connection is
/// dropped (a plaintext request or garbage gets a TLS alert, or nothing, and a close).
pub async fn handshake(
    stream: TcpStream,
    config: Arc<ServerConfig>,
    timeout: Duration,
    metrics: &Metrics,
    peer: std::net::SocketAddr,
) -> Option<Accepted> {
    let accepted = tokio::time::timeout(timeout, TlsAcceptor::from(config).accept(stream)).await;
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            metrics.tls_handshake("error", "", "");
            tracing::debug!(%peer, error = %err, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            metrics.tls_handshake("timeout", "", "");
            tracing::debug!(%peer, ?timeout, "TLS handshake timed out");
            return None;
        }
    };
    let (_, conn) = stream.get_ref();
    metrics.tls_handshake(
        "ok",
        super::version_label(conn.protocol_version()),
        super::alpn_label(conn.alpn_protocol()),
    );
    let client_subject = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(super::pem::subject)
        .and_then(|subject| HeaderValue::from_bytes(subject.as_bytes()).ok());
    Some(Accepted {
        stream,
        client_subject,
    })
}

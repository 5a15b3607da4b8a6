//! TLS on the traffic side: certificates from PEM files, the SNI resolver, the rustls server
//! config compiled into each [`Snapshot`](crate::config::Snapshot), and the handshake of
//! each HTTPS connection.
//!
//! The server config lives in the snapshot, not in the listener, so a reload that brings new
//! certificates reaches the next handshake: the acceptor reads the current snapshot for every
//! connection. rustls runs with the `ring` provider, TLS 1.2 and 1.3 only.

pub mod accept;
pub mod pem;
pub mod resolver;
pub mod server;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// Why a certificate, key or CA bundle cannot be used. Each names the file it is about; the
/// config compiler adds the config file and key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not valid PEM: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: the certificate cannot be parsed: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{}: the private key cannot be used: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("the private key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{}: no usable CA certificate: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// The crypto provider of every TLS config sluice builds: ring's, with AES-128-GCM first.
///
/// Its SHA-256 runs on the CPU's SHA instructions where they exist; ring's SHA-384 (under
/// AES-256-GCM, rustls' first choice) has no such path and cost a tenth of a full handshake
/// in a profile. The HTTPS listener picks by this order (`ignore_client_order`).
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let mut provider = rustls::crypto::ring::default_provider();
    let first = [
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    let rest = provider
        .cipher_suites
        .iter()
        .filter(|s| !first.iter().any(|f| f.suite() == s.suite()))
        .copied();
    provider.cipher_suites = first.into_iter().chain(rest).collect();
    Arc::new(provider)
}

/// The protocol versions sluice speaks: TLS 1.3 and 1.2, nothing older.
pub static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// `TLSv1_3` → `1.3`, for metric labels.
pub fn version_label(version: Option<rustls::ProtocolVersion>) -> &'static str {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        Some(_) => "other",
        None => "",
    }
}

/// The negotiated ALPN protocol, for metric labels: `h2`, `http/1.1` or `""` (none).
pub fn alpn_label(alpn: Option<&[u8]>) -> &'static str {
    match alpn {
        Some(b"h2") => "h2",
        Some(b"http/1.1") => "http/1.1",
        Some(_) => "other",
        None => "",
    }
}

//! TLS to `https://` backends: the rustls client config of a cluster, the name each backend
//! is verified against, and the handshake.
//!
//! A cluster's client config is built once when the snapshot is compiled and shared by its
//! backends, so opening a connection costs the handshake and nothing else; reused pooled
//! connections cost nothing at all.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::file::UpstreamProtocol;
use crate::error::ProxyError;
use crate::tls::TlsError;

/// How one backend is reached over TLS.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    pub config: Arc<ClientConfig>,
    /// Sent as SNI and checked against the certificate.
    pub server_name: ServerName<'static>,
    /// A digest of what `config` was built from (extra CAs, client certificate, whether
    /// verification is off): equal digests let a reload keep the backend's connections.
    pub fingerprint: u64,
}

/// What a cluster's TLS needs, read from its files.
pub struct ClientTls {
    /// CAs trusted beside Mozilla's roots.
    pub extra_roots: RootCertStore,
    /// Presented to backends that ask for a client certificate.
    pub identity: Option<Arc<CertifiedKey>>,
    pub insecure_skip_verify: bool,
    pub protocol: UpstreamProtocol,
}

/// Builds a cluster's client config: Mozilla's roots plus `extra_roots`, TLS 1.2 and 1.3,
/// ALPN per the cluster's protocol (`http1`: `http/1.1`; `http2`: `h2`; `auto`: both, `h2`
/// preferred).
pub fn client_config(tls: ClientTls) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = crate::tls::provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(crate::tls::VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
    } else {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        roots.roots.extend(tls.extra_roots.roots);
        builder.with_root_certificates(roots)
    };
    let mut config = match tls.identity {
        Some(identity) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
            // `SingleCertAndKey` wants an owned key; the chain and signer inside are shared.
            CertifiedKey::clone(&identity),
        ))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match tls.protocol {
        UpstreamProtocol::Http1 | UpstreamProtocol::H2c => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
        UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok(Arc::new(config))
}

/// The name to verify a backend against: `server_name` if set, else the URL's host (an IPv6
/// literal loses its brackets).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned())
        .map_err(|_| format!("`{host}` is not a DNS name or an IP address"))
}

/// The TLS handshake over an open TCP connection. Whether the backend agreed to HTTP/2 is
/// read from the returned stream's ALPN.
pub async fn connect(
    tcp: TcpStream,
    target: &TlsTarget,
) -> Result<TlsStream<TcpStream>, ProxyError> {
    TlsConnector::from(Arc::clone(&target.config))
        .connect(target.server_name.clone(), tcp)
        .await
        .map_err(|e| {
            let name = target.server_name.to_str();
            ProxyError::UpstreamTls(format!("{name}: {e}"))
        })
}

/// Whether the backend picked HTTP/2 by ALPN.
pub fn agreed_h2(stream: &TlsStream<TcpStream>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(b"h2")
}

/// Accepts any certificate: `insecure_skip_verify = true`. The handshake's signatures are
/// still checked, so the peer must hold the key of the certificate it shows; but anyone can
/// make such a certificate.
#[derive(Debug)]
struct SkipVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

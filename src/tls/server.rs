//! The rustls server config of the HTTPS listener, built once per snapshot.

use std::sync::Arc;

use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};

use super::resolver::SniResolver;
use super::TlsError;
use crate::config::file::ClientAuthMode;

/// TLS 1.2 sessions remembered for resumption by session id; TLS 1.3 resumes with tickets.
const SESSION_CACHE: usize = 4096;

/// Client-certificate checking of the listener.
#[derive(Debug)]
pub struct ClientAuth {
    pub roots: RootCertStore,
    pub mode: ClientAuthMode,
}

/// Builds the listener's config: certificates by SNI, ALPN `h2` then `http/1.1`, TLS 1.2 and
/// 1.3, session resumption by tickets (TLS 1.3) and by a session cache (TLS 1.2), and client
/// certificates when `client_auth` is set.
pub fn config(
    resolver: SniResolver,
    client_auth: Option<ClientAuth>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = super::provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(super::VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(auth.roots), provider);
            let verifier = match auth.mode {
                ClientAuthMode::Required => verifier,
                ClientAuthMode::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The provider's order (AES-128-GCM first, see `tls::provider`), not the client's.
    config.ignore_client_order = true;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

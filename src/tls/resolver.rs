//! Picking the server certificate for a handshake by SNI.
//!
//! An exact name beats a wildcard (`*.example.com` covers one label, as certificates do), and
//! a client without SNI, or with a name no certificate has, gets the default certificate, as
//! nginx's default server does. When several certificates share a name (an RSA and an ECDSA
//! one, say), the first whose key can sign with a scheme the client offers is chosen.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

/// The certificates of one snapshot, by name.
#[derive(Debug, Default)]
pub struct SniResolver {
    exact: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// Keyed by the name after `*.`: `example.com` for `*.example.com`.
    wildcard: HashMap<String, Vec<Arc<CertifiedKey>>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// Serves `key` for each of `names` (lower-case; `*.example.com` is a wildcard). Earlier
    /// certificates win ties.
    pub fn add(&mut self, names: &[String], key: &Arc<CertifiedKey>) {
        for name in names {
            let list = match name.strip_prefix("*.") {
                Some(suffix) => self.wildcard.entry(suffix.to_owned()).or_default(),
                None => self.exact.entry(name.clone()).or_default(),
            };
            list.push(Arc::clone(key));
        }
    }

    /// Serves `key` to clients that no name matches.
    pub fn set_default(&mut self, key: Arc<CertifiedKey>) {
        self.default = Some(key);
    }

    /// The certificate for a client that asked for `name` (or sent no SNI) and can verify
    /// `schemes`.
    pub fn pick(
        &self,
        name: Option<&str>,
        schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = name {
            let name = name.to_ascii_lowercase();
            let name = name.strip_suffix('.').unwrap_or(&name);
            if let Some(found) = self.exact.get(name).and_then(|l| choose(l, schemes)) {
                return Some(found);
            }
            let wildcard = name
                .split_once('.')
                .and_then(|(_, parent)| self.wildcard.get(parent))
                .and_then(|l| choose(l, schemes));
            if let Some(found) = wildcard {
                return Some(found);
            }
        }
        self.default.clone()
    }
}

/// The first certificate whose key can sign for this client; the first one if none can (the
/// handshake then fails with a clear alert rather than a missing certificate).
fn choose(list: &[Arc<CertifiedKey>], schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
    if list.len() > 1 {
        if let Some(found) = list.iter().find(|k| k.key.choose_scheme(schemes).is_some()) {
            return Some(Arc::clone(found));
        }
    }
    list.first().cloned()
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name(), hello.signature_schemes())
    }
}

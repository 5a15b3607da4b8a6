//! Compiling the TLS parts of the config: `[[certificates]]` and `[tls]` into the listener's
//! server config, and each cluster's `tls` into its client config.
//!
//! Files named in the config are read here, relative to the file that names them, so a
//! missing file, bad PEM or a key that does not fit its certificate is reported like any
//! other problem: `file:key: reason`. An expired certificate is a warning, not an error: it
//! is served (clients decide) and shows in `sluice_tls_cert_expiry_seconds`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::{check_name, Errors};
use crate::config::file::{self, UpstreamProtocol};
use crate::config::{ConfigError, DynamicSources};
use crate::tls::pem::{self, CertFacts};
use crate::tls::resolver::SniResolver;
use crate::tls::server::{self, ClientAuth};
use crate::tls::TlsError;
use crate::upstream::tls::{self as upstream_tls, ClientTls};

/// What compiling collects beside errors.
pub(in crate::config) struct Notes {
    pub warnings: Vec<ConfigError>,
    pub cert_expiry: Vec<(String, i64)>,
    /// Now, in seconds since the Unix epoch, for expiry checks.
    pub now: i64,
}

impl Notes {
    pub fn new() -> Notes {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Notes {
            warnings: Vec::new(),
            cert_expiry: Vec::new(),
            now,
        }
    }

    fn warn(&mut self, file: &Path, key: String, reason: String) {
        self.warnings.push(ConfigError {
            file: file.to_owned(),
            key,
            reason,
        });
    }

    /// Warns when the certificate at `path` is expired or not valid yet.
    fn check_validity(&mut self, file: &Path, key: String, path: &Path, facts: &CertFacts) {
        if facts.not_after < self.now {
            let days = (self.now - facts.not_after) / 86_400;
            self.warn(
                file,
                key,
                format!(
                    "the certificate in {} expired on {} ({days} days ago)",
                    path.display(),
                    rfc3339(facts.not_after)
                ),
            );
        } else if facts.not_before > self.now {
            self.warn(
                file,
                key,
                format!(
                    "the certificate in {} is not valid before {}",
                    path.display(),
                    rfc3339(facts.not_before)
                ),
            );
        }
    }
}

fn rfc3339(unix: i64) -> String {
    let time = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(unix).unwrap_or_default());
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `path` as written in `file`: absolute, or relative to `file`'s directory.
fn relative(file: &Path, path: &str) -> PathBuf {
    file.parent().unwrap_or(Path::new(".")).join(path)
}

/// A certificate and key pair, read and checked; errors go to the keys `cert_key` and
/// `key_key`.
fn identity(
    file: &Path,
    (cert_key, cert): (&str, &str),
    (key_key, key): (&str, &str),
    errors: &mut Errors,
) -> Option<(Arc<CertifiedKey>, PathBuf, CertFacts)> {
    let cert_path = relative(file, cert);
    let key_path = relative(file, key);
    let chain = pem::read_chain(&cert_path)
        .map_err(|e| errors.push(cert_key, e.to_string()))
        .ok();
    let private = pem::read_key(&key_path)
        .map_err(|e| errors.push(key_key, e.to_string()))
        .ok();
    let (chain, private) = (chain?, private?);
    // `read_chain` parsed every certificate already; this cannot fail, but need not panic.
    let facts = pem::facts(chain.first()?)
        .map_err(|reason| errors.push(cert_key, reason))
        .ok()?;
    let certified = pem::certified(chain, private, &cert_path, &key_path)
        .map_err(|e| {
            let key = match e {
                TlsError::KeyMismatch { .. } | TlsError::BadKey { .. } => key_key,
                _ => cert_key,
            };
            errors.push(key, e.to_string());
        })
        .ok()?;
    Some((certified, cert_path, facts))
}

/// The HTTPS listener's server config from every file's `[[certificates]]` and `[tls]`;
/// `None` when there is no certificate (the listener is then not started).
pub(super) fn listener(
    sources: &DynamicSources,
    list: &mut Vec<ConfigError>,
    notes: &mut Notes,
) -> Option<Arc<ServerConfig>> {
    let before = list.len();
    let mut resolver = SniResolver::default();
    let mut names: HashMap<&str, &PathBuf> = HashMap::new();
    let mut default: Option<Arc<CertifiedKey>> = None;
    let mut explicit_default: Option<(&str, &PathBuf)> = None;
    let mut count = 0;
    let mut tls: Option<(&file::Tls, &PathBuf)> = None;
    for (path, file) in &sources.files {
        let mut errors = Errors { file: path, list };
        for (i, c) in file.certificates.iter().enumerate() {
            let key = format!("certificates[{i}]");
            check_name("certificate", &key, &c.name, &mut errors);
            if let Some(first) = names.get(c.name.as_str()) {
                errors.push(
                    format!("{key}.name"),
                    format!(
                        "certificate `{}` is already defined in {}",
                        c.name,
                        first.display()
                    ),
                );
                continue;
            }
            names.insert(&c.name, path);
            count += 1;
            if c.default {
                if let Some((name, file)) = explicit_default {
                    errors.push(
                        format!("{key}.default"),
                        format!(
                            "certificate `{name}` in {} is already the default",
                            file.display()
                        ),
                    );
                }
                explicit_default = Some((&c.name, path));
            }
            let Some((certified, cert_path, facts)) = identity(
                path,
                (&format!("{key}.cert"), &c.cert),
                (&format!("{key}.key"), &c.key),
                &mut errors,
            ) else {
                continue;
            };
            notes.check_validity(path, format!("{key}.cert"), &cert_path, &facts);
            if facts.dns_names.is_empty() && !c.default {
                notes.warn(
                    path,
                    format!("{key}.cert"),
                    format!(
                        "the certificate in {} has no DNS name in its subjectAltName, so SNI \
                         never picks it; it can serve only as the default",
                        cert_path.display()
                    ),
                );
            }
            notes.cert_expiry.push((c.name.clone(), facts.not_after));
            resolver.add(&facts.dns_names, &certified);
            if c.default || default.is_none() {
                default = Some(certified);
            }
        }
        if let Some(own) = &file.tls {
            match tls {
                Some((_, first)) => errors.push(
                    "tls",
                    format!("[tls] is already defined in {}", first.display()),
                ),
                None => tls = Some((own, path)),
            }
        }
    }
    let client_auth = tls.and_then(|(tls, path)| {
        let auth = tls.client_auth.as_ref()?;
        let mut errors = Errors { file: path, list };
        if count == 0 {
            errors.push(
                "tls.client_auth",
                "client certificates need an HTTPS listener: define at least one [[certificates]]",
            );
            return None;
        }
        let roots = pem::read_roots(&relative(path, &auth.ca))
            .map_err(|e| errors.push("tls.client_auth.ca", e.to_string()))
            .ok()?;
        Some(ClientAuth {
            roots,
            mode: auth.mode,
        })
    });
    if list.len() > before || count == 0 {
        return None;
    }
    if let Some(default) = default {
        resolver.set_default(default);
    }
    match server::config(resolver, client_auth) {
        Ok(config) => Some(config),
        Err(e) => {
            let file = sources
                .files
                .first()
                .map_or(PathBuf::new(), |f| f.0.clone());
            list.push(ConfigError {
                file,
                key: "certificates".to_owned(),
                reason: e.to_string(),
            });
            None
        }
    }
}

/// A cluster's client config for its `https://` backends, and the name they are verified
/// against when `tls.server_name` overrides the URL's host.
pub(super) struct ClusterTls {
    pub config: Arc<ClientConfig>,
    pub server_name: Option<rustls::pki_types::ServerName<'static>>,
    /// A digest of what `config` was built from, for `TlsTarget::fingerprint`.
    pub fingerprint: u64,
}

/// Compiles a cluster's `tls`. `has_https` says whether any backend needs it; without one,
/// non-default settings earn a warning and nothing is built.
pub(super) fn cluster(
    key: &str,
    c: &file::Cluster,
    has_https: bool,
    errors: &mut Errors,
    notes: &mut Notes,
) -> Option<ClusterTls> {
    let t = &c.tls;
    let configured = t.ca.is_some()
        || t.server_name.is_some()
        || t.client_cert.is_some()
        || t.client_key.is_some()
        || t.insecure_skip_verify;
    if !has_https {
        if configured {
            notes.warn(
                errors.file,
                format!("{key}.tls"),
                format!(
                    "cluster `{}` has no https:// backend, so its tls settings have no effect",
                    c.name
                ),
            );
        }
        return None;
    }
    let before = errors.list.len();
    let mut extra_roots = RootCertStore::empty();
    if let Some(ca) = &t.ca {
        if let Err(e) = pem::add_roots(&mut extra_roots, &relative(errors.file, ca)) {
            errors.push(format!("{key}.tls.ca"), e.to_string());
        }
    }
    let server_name = t.server_name.as_deref().and_then(|name| {
        upstream_tls::server_name(name)
            .map_err(|reason| errors.push(format!("{key}.tls.server_name"), reason))
            .ok()
    });
    let identity = match (&t.client_cert, &t.client_key) {
        (Some(cert), Some(private)) => identity(
            errors.file,
            (&format!("{key}.tls.client_cert"), cert),
            (&format!("{key}.tls.client_key"), private),
            errors,
        )
        .map(|(certified, cert_path, facts)| {
            notes.check_validity(
                errors.file,
                format!("{key}.tls.client_cert"),
                &cert_path,
                &facts,
            );
            notes
                .cert_expiry
                .push((format!("cluster/{}", c.name), facts.not_after));
            certified
        }),
        (Some(_), None) => {
            errors.push(
                format!("{key}.tls.client_key"),
                "is required with client_cert",
            );
            None
        }
        (None, Some(_)) => {
            errors.push(
                format!("{key}.tls.client_cert"),
                "is required with client_key",
            );
            None
        }
        (None, None) => None,
    };
    if t.insecure_skip_verify {
        notes.warn(
            errors.file,
            format!("{key}.tls.insecure_skip_verify"),
            format!(
                "certificates of cluster `{}`'s backends are not verified: anyone on the path \
                 can read and change its traffic",
                c.name
            ),
        );
    }
    if errors.list.len() > before {
        return None;
    }
    let protocol = match c.protocol {
        UpstreamProtocol::H2c => UpstreamProtocol::Http1,
        other => other,
    };
    let fingerprint = fingerprint(&extra_roots, identity.as_deref(), t.insecure_skip_verify);
    let config = upstream_tls::client_config(ClientTls {
        extra_roots,
        identity,
        insecure_skip_verify: t.insecure_skip_verify,
        protocol,
    })
    .map_err(|e| errors.push(format!("{key}.tls"), e.to_string()))
    .ok()?;
    Some(ClusterTls {
        config,
        server_name,
        fingerprint,
    })
}

/// A digest of the inputs of a cluster's client config that come from files: the extra CAs
/// and the client certificate chain (which pins its key), plus the verification switch.
/// The protocol and server name are compared on their own.
fn fingerprint(roots: &RootCertStore, identity: Option<&CertifiedKey>, insecure: bool) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for anchor in &roots.roots {
        anchor.subject.as_ref().hash(&mut hasher);
        anchor.subject_public_key_info.as_ref().hash(&mut hasher);
        anchor
            .name_constraints
            .as_ref()
            .map(|d| d.as_ref())
            .hash(&mut hasher);
    }
    for cert in identity.map(|i| i.cert.as_slice()).unwrap_or_default() {
        cert.as_ref().hash(&mut hasher);
    }
    insecure.hash(&mut hasher);
    hasher.finish()
}

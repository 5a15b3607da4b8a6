//! Unit tests of certificate loading and SNI selection, with certificates made by rcgen.

use std::sync::Arc;

use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::pem;
use super::resolver::SniResolver;

/// A self-signed ECDSA certificate for `names`.
fn identity(names: &[&str]) -> Arc<CertifiedKey> {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = super::provider()
        .key_provider
        .load_private_key(der)
        .unwrap();
    Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signing,
    ))
}

fn names_of(key: &CertifiedKey) -> Vec<String> {
    pem::facts(&key.cert[0]).unwrap().dns_names
}

const ECDSA: &[SignatureScheme] = &[SignatureScheme::ECDSA_NISTP256_SHA256];

#[test]
fn exact_beats_wildcard_and_unknown_names_get_the_default() {
    let exact = identity(&["api.example.com"]);
    let wildcard = identity(&["*.example.com"]);
    let fallback = identity(&["default.test"]);
    let mut resolver = SniResolver::default();
    resolver.add(&names_of(&exact), &exact);
    resolver.add(&names_of(&wildcard), &wildcard);
    resolver.set_default(Arc::clone(&fallback));

    let pick = |name: Option<&str>| resolver.pick(name, ECDSA).unwrap();
    assert!(Arc::ptr_eq(&pick(Some("api.example.com")), &exact));
    assert!(Arc::ptr_eq(&pick(Some("API.Example.COM.")), &exact));
    assert!(Arc::ptr_eq(&pick(Some("chat.example.com")), &wildcard));
    // A wildcard covers one label, as it does in certificates.
    assert!(Arc::ptr_eq(&pick(Some("a.b.example.com")), &fallback));
    assert!(Arc::ptr_eq(&pick(Some("example.com")), &fallback));
    assert!(Arc::ptr_eq(&pick(None), &fallback));
}

#[test]
fn no_default_means_no_certificate_for_unknown_names() {
    let exact = identity(&["api.example.com"]);
    let mut resolver = SniResolver::default();
    resolver.add(&names_of(&exact), &exact);
    assert!(resolver.pick(Some("other.org"), ECDSA).is_none());
    assert!(resolver.pick(None, ECDSA).is_none());
}

#[test]
fn facts_read_names_subject_and_validity() {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["a.test".to_owned(), "*.b.test".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "team-a");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let facts = pem::facts(&CertificateDer::from(cert.der().to_vec())).unwrap();
    assert_eq!(facts.dns_names, ["a.test", "*.b.test"]);
    assert_eq!(facts.subject, "CN=team-a");
    assert_eq!(facts.not_before, 1_577_836_800);
    assert_eq!(facts.not_after, 1_609_459_200);
}

#[test]
fn labels_for_metrics() {
    use rustls::ProtocolVersion;
    assert_eq!(super::version_label(Some(ProtocolVersion::TLSv1_3)), "1.3");
    assert_eq!(super::version_label(Some(ProtocolVersion::TLSv1_2)), "1.2");
    assert_eq!(super::version_label(None), "");
    assert_eq!(super::alpn_label(Some(b"h2")), "h2");
    assert_eq!(super::alpn_label(Some(b"http/1.1")), "http/1.1");
    assert_eq!(super::alpn_label(None), "");
}

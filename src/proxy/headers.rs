//! Header work on the way through: hop-by-hop removal, `X-Forwarded-*`, the request id.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The request-id header, read from clients and set when absent.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The subject of the client's verified TLS certificate. Set by sluice only; a client's own
/// is always removed, so routes and backends can trust it.
pub static CLIENT_SUBJECT: HeaderName = HeaderName::from_static("x-sluice-client-subject");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The fixed hop-by-hop fields of RFC 9110 §7.6.1, besides those `Connection` names.
static HOP_BY_HOP: [&HeaderName; 6] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

/// The index of `name` in [`HOP_BY_HOP`]: one string match, cheaper than six comparisons
/// of `HeaderName`s.
fn hop_index(name: &str) -> Option<usize> {
    match name {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "te" => Some(3),
        "transfer-encoding" => Some(4),
        "upgrade" => Some(5),
        _ => None,
    }
}

/// Whether a `Connection` token names a field left to remove: not empty, not `close`, and
/// not one of the fixed hop-by-hop fields.
fn names_another_field(token: &[u8]) -> bool {
    // `keep-alive` first: nearly every backend's answer says it.
    !token.is_empty()
        && !token.eq_ignore_ascii_case(b"keep-alive")
        && !token.eq_ignore_ascii_case(b"close")
        && !HOP_BY_HOP
            .iter()
            .any(|hop| token.eq_ignore_ascii_case(hop.as_str().as_bytes()))
}

/// The tokens of a `Connection` value that name fields left to remove.
fn other_fields(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    let tokens = value.as_bytes().split(|b| *b == b',');
    tokens
        .map(<[u8]>::trim_ascii)
        .filter(|t| names_another_field(t))
}

/// Removes the hop-by-hop fields of RFC 9110 §7.6.1: `Connection` and every field it names,
/// `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding` and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which of them are there; most messages carry none, or
    // only `Connection: keep-alive`, so only those present pay a hashed removal.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = hop_index(name.as_str()) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // The usual tokens (`keep-alive`, `close`, `upgrade`) name nothing left to remove, so
    // the common case builds no list.
    let connection = headers.get_all(header::CONNECTION);
    if present & 1 != 0 && connection.iter().any(|v| other_fields(v).next().is_some()) {
        let named: Vec<HeaderName> = connection
            .iter()
            .flat_map(other_fields)
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
}

/// Sets `X-Forwarded-For`, `-Proto` and `-Host`. From a trusted proxy, incoming values are
/// kept and the peer is appended to `X-Forwarded-For`; from anyone else they are replaced.
/// `peer` is the client's address as header text, made once per connection.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: &HeaderValue,
    trusted: bool,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    // Looked up only from a trusted proxy: from anyone else the value is replaced unread.
    let prior = trusted
        .then(|| headers.get_all(&X_FORWARDED_FOR))
        .filter(|prior| prior.iter().next().is_some());
    let xff = if let Some(prior) = prior {
        // Every prior line, in order, then the peer.
        let mut joined = Vec::with_capacity(64);
        for line in prior {
            joined.extend_from_slice(line.as_bytes());
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(peer.as_bytes());
        HeaderValue::from_bytes(&joined).ok()
    } else {
        Some(peer.clone())
    };
    if let Some(xff) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), xff);
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
}

/// Replaces any `x-sluice-client-subject` the client sent with the subject its TLS
/// certificate proved, or with nothing.
pub fn set_client_subject(headers: &mut HeaderMap, subject: Option<&HeaderValue>) {
    match subject {
        Some(subject) => {
            headers.insert(CLIENT_SUBJECT.clone(), subject.clone());
        }
        // Looked for before it is removed: a removal hashes the name even when it is absent,
        // which costs more than a look at the few names a request has.
        None if headers.keys().any(|name| name == CLIENT_SUBJECT) => {
            headers.remove(&CLIENT_SUBJECT);
        }
        None => {}
    }
}

/// Longest client-chosen request id kept; longer or odd ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// The request id of `headers`, generating one when absent or unusable (too long, or not
/// printable ASCII, so it cannot break log lines).
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&REQUEST_ID) {
        let usable = !id.is_empty()
            && id.len() <= MAX_REQUEST_ID
            && id.as_bytes().iter().all(|b| b.is_ascii_graphic());
        if usable {
            return id.clone();
        }
    }
    let id = new_request_id();
    headers.insert(REQUEST_ID.clone(), id.clone());
    id
}

/// A random 128-bit id as 32 hex digits. The digits stay in the one allocation that shares
/// them (`Bytes::from_owner`), so the copies for the record and the upstream request cost no
/// second one, as a copied-in value's first clone would.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = fastrand::u128(..);
    let mut text = [0u8; 32];
    for digit in text.iter_mut().rev() {
        *digit = HEX[(bits & 0xf) as usize];
        bits >>= 4;
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .expect("hex digits are a valid header value")
}

/// A client address as header text, for `X-Forwarded-For`.
pub fn peer_value(peer: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.to_string()).expect("an IP address is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(*k, HeaderValue::from_static(v));
        }
        headers
    }

    #[test]
    fn strips_connection_and_the_fields_it_names() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn usual_connection_tokens_remove_only_the_hop_by_hop_fields() {
        let mut h = map(&[
            ("connection", "Keep-Alive"),
            ("connection", "close, X-Trace"),
            ("x-trace", "1"),
            ("close", "a field that happens to be named close"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["close", "x-kept"]);
        let mut none = map(&[("content-type", "application/json")]);
        strip_hop_by_hop(&mut none);
        assert_eq!(none.len(), 1);
    }

    #[test]
    fn forwarded_headers_from_untrusted_peers_are_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ]);
        let host = HeaderValue::from_static("api.example.com");
        set_forwarded(
            &mut h,
            &peer_value([10, 0, 0, 1].into()),
            false,
            "http",
            Some(&host),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
    }

    #[test]
    fn forwarded_headers_from_trusted_peers_are_appended() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "public.example.com"),
        ]);
        set_forwarded(
            &mut h,
            &peer_value([10, 0, 0, 1].into()),
            true,
            "http",
            None,
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "public.example.com");
    }

    #[test]
    fn every_prior_forwarded_for_line_is_kept_from_trusted_peers() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        set_forwarded(
            &mut h,
            &peer_value([10, 0, 0, 1].into()),
            true,
            "http",
            None,
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
    }

    #[test]
    fn client_subject_comes_from_tls_only() {
        let mut h = map(&[
            ("x-sluice-client-subject", "CN=forged"),
            ("x-kept", "yes"),
            ("x-sluice-client-subject", "CN=again"),
        ]);
        set_client_subject(&mut h, None);
        assert!(!h.contains_key("x-sluice-client-subject"));
        assert_eq!(h["x-kept"], "yes");
        let mut h = map(&[("x-sluice-client-subject", "CN=forged")]);
        set_client_subject(&mut h, Some(&HeaderValue::from_static("CN=real")));
        assert_eq!(h.get_all("x-sluice-client-subject").iter().count(), 1);
        assert_eq!(h["x-sluice-client-subject"], "CN=real");
    }

    #[test]
    fn odd_request_ids_are_replaced() {
        let long = "x".repeat(200);
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_str(&long).unwrap());
        assert_eq!(ensure_request_id(&mut h).len(), 32);
        let mut h = map(&[("x-request-id", "has space")]);
        assert_eq!(ensure_request_id(&mut h).len(), 32);
    }

    #[test]
    fn request_id_is_kept_or_made() {
        let mut h = map(&[("x-request-id", "abc")]);
        assert_eq!(ensure_request_id(&mut h), "abc");
        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h);
        assert_eq!(id.len(), 32);
        assert_eq!(h["x-request-id"], id);
    }
}

//! What a bucket is keyed by, and the key's bytes.
//!
//! A limit's key is a list of parts, each taken from the request: the consumer, the route,
//! the model, the client's address, a header's value. `[]` gives one bucket for everyone.
//! The bytes are `<limit name>` then, per part, `|<length>:<value>`, so no two different
//! lists of values make the same key whatever bytes the values hold. A value longer than
//! [`MAX_PART`] bytes is replaced by its SHA-256, so a key stays small however large a
//! header or a model name a client sends.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

/// Longest value kept as it is in a key.
pub const MAX_PART: usize = 128;

/// One part of a limit's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The consumer's name; empty for a request without an API key.
    Consumer,
    /// The route's name.
    Route,
    /// The request's `model`; empty when it names none.
    Model,
    /// The client's address: the peer, or from `X-Forwarded-For` when the peer is a trusted
    /// proxy.
    ClientIp,
    /// A request header's value; empty when absent.
    Header(HeaderName),
}

impl KeyPart {
    /// Parses `consumer`, `route`, `model`, `client_ip` or `header:NAME`.
    pub fn parse(text: &str) -> Result<KeyPart, String> {
        match text {
            "consumer" => Ok(KeyPart::Consumer),
            "route" => Ok(KeyPart::Route),
            "model" => Ok(KeyPart::Model),
            "client_ip" => Ok(KeyPart::ClientIp),
            _ => match text.strip_prefix("header:") {
                Some(name) => HeaderName::from_bytes(name.as_bytes())
                    .map(KeyPart::Header)
                    .map_err(|_| format!("`{name}` is not a valid header name")),
                None => Err(format!(
                    "`{text}` is not a key part: use consumer, route, model, client_ip or \
                     header:NAME"
                )),
            },
        }
    }
}

/// The request values a key may be made of.
#[derive(Debug, Clone, Copy)]
pub struct KeyValues<'a> {
    pub consumer: Option<&'a str>,
    pub route: &'a str,
    pub model: Option<&'a str>,
    pub client: IpAddr,
    pub headers: &'a HeaderMap,
}

/// The key of limit `name` with `parts` for one request.
pub fn build(name: &str, parts: &[KeyPart], values: &KeyValues<'_>) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 16 * parts.len() + 8);
    key.extend_from_slice(name.as_bytes());
    let mut ip = String::new();
    for part in parts {
        let value: &[u8] = match part {
            KeyPart::Consumer => values.consumer.unwrap_or("").as_bytes(),
            KeyPart::Route => values.route.as_bytes(),
            KeyPart::Model => values.model.unwrap_or("").as_bytes(),
            KeyPart::ClientIp => {
                ip.clear();
                let _ = write!(ip, "{}", values.client);
                ip.as_bytes()
            }
            KeyPart::Header(h) => values.headers.get(h).map_or(&b""[..], |v| v.as_bytes()),
        };
        push_part(&mut key, value);
    }
    key
}

fn push_part(key: &mut Vec<u8>, value: &[u8]) {
    if value.len() > MAX_PART {
        let digest = ring::digest::digest(&ring::digest::SHA256, value);
        key.extend_from_slice(b"|#");
        key.extend_from_slice(hex::encode(digest.as_ref()).as_bytes());
        return;
    }
    key.push(b'|');
    key.extend_from_slice(value.len().to_string().as_bytes());
    key.push(b':');
    key.extend_from_slice(value);
}

/// The client's address. From a trusted proxy, `X-Forwarded-For` is read from the right:
/// the first address that is not itself a trusted proxy is the client. Anyone else is the
/// client themselves, whatever they claim. An entry that is not an address stops the walk:
/// the last trusted hop is the best that is known.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: impl Fn(IpAddr) -> bool) -> IpAddr {
    if !trusted(peer) {
        return peer;
    }
    let mut client = peer;
    let lines: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for entry in lines.iter().rev().flat_map(|line| line.rsplit(',')) {
        let Some(ip) = parse_hop(entry.trim()) else {
            return client;
        };
        client = ip;
        if !trusted(ip) {
            return ip;
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1` or `[::1]:80`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    text.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn values(headers: &HeaderMap) -> KeyValues<'_> {
        KeyValues {
            consumer: Some("team-a"),
            route: "chat",
            model: None,
            client: "10.0.0.7".parse().unwrap(),
            headers,
        }
    }

    #[test]
    fn keys_name_every_part_unambiguously() {
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", HeaderValue::from_static("acme"));
        let parts = [
            KeyPart::Consumer,
            KeyPart::Route,
            KeyPart::Model,
            KeyPart::ClientIp,
            KeyPart::parse("header:x-tenant").unwrap(),
        ];
        let key = build("rpm", &parts, &values(&headers));
        assert_eq!(key, b"rpm|6:team-a|4:chat|0:|8:10.0.0.7|4:acme");
        assert_eq!(build("global", &[], &values(&headers)), b"global");
        // Values that hold the separator cannot collide.
        let mut a = values(&headers);
        a.consumer = Some("x|1:y");
        let mut b = values(&headers);
        b.consumer = Some("x");
        b.route = "y";
        assert_ne!(
            build("l", &[KeyPart::Consumer, KeyPart::Route], &a),
            build("l", &[KeyPart::Consumer, KeyPart::Route], &b),
        );
    }

    #[test]
    fn long_values_are_hashed() {
        let mut headers = HeaderMap::new();
        let long = "x".repeat(10_000);
        headers.insert("x-tenant", HeaderValue::from_str(&long).unwrap());
        let key = build(
            "l",
            &[KeyPart::Header(HeaderName::from_static("x-tenant"))],
            &values(&headers),
        );
        assert_eq!(key.len(), 1 + 2 + 64);
    }

    #[test]
    fn key_parts_parse() {
        assert_eq!(KeyPart::parse("model"), Ok(KeyPart::Model));
        assert!(KeyPart::parse("header:bad name").is_err());
        assert!(KeyPart::parse("user").is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.");
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 1.2.3.4"),
        );
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(peer, &headers, trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // An untrusted peer is the client, whatever it says.
        let outsider: IpAddr = "8.8.8.8".parse().unwrap();
        assert_eq!(client_ip(outsider, &headers, trusted), outsider);
        // A broken entry stops the walk at the last trusted hop.
        let mut broken = HeaderMap::new();
        broken.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, junk, 10.0.0.9"),
        );
        assert_eq!(
            client_ip(peer, &broken, trusted),
            "10.0.0.9".parse::<IpAddr>().unwrap()
        );
        // Ports and brackets are understood; no header leaves the peer.
        let mut ported = HeaderMap::new();
        ported.insert(
            "x-forwarded-for",
            HeaderValue::from_static("[2001:db8::1]:443"),
        );
        assert_eq!(
            client_ip(peer, &ported, trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, &HeaderMap::new(), trusted), peer);
    }
}

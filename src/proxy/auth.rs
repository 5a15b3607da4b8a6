//! API-key auth: who is calling, and what they may use.
//!
//! A route with `auth = "required"` or `"optional"` reads an API key from, in order: the
//! route's `auth_header`, `Authorization: Bearer <key>`, `x-api-key`. The key is hashed with
//! SHA-256 and looked up in the snapshot's [`Consumers`], a `HashMap` from hash to
//! consumer: no lock, and the map's equality check on the 32-byte hashes runs in constant
//! time ([`KeyHash`]), so the lookup's timing does not tell how close a guess came.
//!
//! Keys are never logged, shown or forwarded: every header a key may come in is removed
//! from the request before it goes upstream, and logs and metrics carry the consumer's
//! name. A backend that needs credentials of its own gets them from the route's
//! `request_headers` (applied after this removal).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName};
use subtle::ConstantTimeEq;

use crate::error::ProxyError;
use crate::ratelimit::metrics::AccessMetrics;
use crate::ratelimit::Limit;

/// The `x-api-key` header, read when there is no bearer token.
pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Whether a route asks for an API key, from the weakest to the strongest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum AuthMode {
    /// Keys are not read; `Authorization` passes through untouched.
    #[default]
    Off,
    /// A key, if sent, must be valid and names the consumer; no key is an anonymous caller.
    Optional,
    /// A valid key is required: 401 without one.
    Required,
}

/// A route's auth settings.
#[derive(Debug, Clone, Default)]
pub struct RouteAuth {
    pub mode: AuthMode,
    /// A further header the key may come in, read before the standard ones.
    pub header: Option<HeaderName>,
}

/// The SHA-256 of an API key. Its equality runs in constant time.
#[derive(Debug, Clone, Copy, Eq)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// The hash of `key` as presented.
    pub fn of(key: &[u8]) -> KeyHash {
        let digest = ring::digest::digest(&ring::digest::SHA256, key);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        KeyHash(out)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<KeyHash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(KeyHash(out))
    }
}

impl PartialEq for KeyHash {
    fn eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Hash for KeyHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// A list of model names; `prefix*` matches every name that starts with `prefix`.
#[derive(Debug, Clone, Default)]
pub struct ModelList {
    exact: HashSet<String>,
    prefixes: Vec<String>,
}

impl ModelList {
    /// Builds a list from config entries.
    pub fn new<'a>(entries: impl IntoIterator<Item = &'a str>) -> ModelList {
        let mut list = ModelList::default();
        for entry in entries {
            match entry.strip_suffix('*') {
                Some(prefix) => list.prefixes.push(prefix.to_owned()),
                None => {
                    list.exact.insert(entry.to_owned());
                }
            }
        }
        list
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    pub fn contains(&self, model: &str) -> bool {
        self.exact.contains(model) || self.prefixes.iter().any(|p| model.starts_with(p))
    }
}

/// A named caller.
#[derive(Debug)]
pub struct Consumer {
    /// Its name, the only thing logs and metrics say about it.
    pub name: Arc<str>,
    /// Models it may use; empty means any.
    pub models: ModelList,
    /// Models it may not use, whatever `models` says.
    pub blocked_models: ModelList,
    /// Route names it may use; `None` means any.
    pub routes: Option<HashSet<String>>,
    /// Its own limits, applied after the route's.
    pub limits: Vec<Arc<Limit>>,
}

impl Consumer {
    /// Whether model rules apply, so a request's body must be read for its model.
    pub fn checks_models(&self) -> bool {
        !self.models.is_empty() || !self.blocked_models.is_empty()
    }

    /// Whether it may use `model`. A request that names no model passes only when the
    /// consumer has no allow-list; a body-less request (`GET /v1/models`) is not checked.
    pub fn may_use(&self, model: Option<&str>) -> bool {
        match model {
            Some(model) => {
                !self.blocked_models.contains(model)
                    && (self.models.is_empty() || self.models.contains(model))
            }
            None => self.models.is_empty(),
        }
    }
}

/// Every consumer, by key hash.
#[derive(Debug, Default)]
pub struct Consumers {
    by_key: HashMap<KeyHash, Arc<Consumer>>,
}

impl Consumers {
    /// A table of `keys`, each naming its consumer.
    pub fn new(keys: HashMap<KeyHash, Arc<Consumer>>) -> Consumers {
        Consumers { by_key: keys }
    }

    /// The consumer whose key hashes to `hash`.
    pub fn find(&self, hash: &KeyHash) -> Option<&Arc<Consumer>> {
        self.by_key.get(hash)
    }

    /// How many keys are known.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Who is calling: the consumer of the key the request carries (and removes every header a
/// key may come in), or `None` for an anonymous caller on an `optional` route.
pub fn authenticate(
    consumers: &Consumers,
    route_name: &str,
    auth: &RouteAuth,
    headers: &mut HeaderMap,
    metrics: &AccessMetrics,
) -> Result<Option<Arc<Consumer>>, ProxyError> {
    if auth.mode == AuthMode::Off {
        return Ok(None);
    }
    let hash = presented_key(headers, auth.header.as_ref()).map(KeyHash::of);
    if let Some(name) = &auth.header {
        headers.remove(name);
    }
    headers.remove(header::AUTHORIZATION);
    headers.remove(&X_API_KEY);
    let Some(hash) = hash else {
        if auth.mode == AuthMode::Optional {
            return Ok(None);
        }
        metrics.auth_failure("missing_key");
        return Err(ProxyError::MissingApiKey {
            route: route_name.to_owned(),
        });
    };
    match consumers.find(&hash) {
        Some(consumer) => Ok(Some(Arc::clone(consumer))),
        None => {
            metrics.auth_failure("invalid_key");
            Err(ProxyError::InvalidApiKey)
        }
    }
}

/// Refuses, before the body of a request is read, what every route the request could still
/// end on would refuse: no key where each of them requires one, or a key that is no
/// consumer's where each of them reads keys. `routes` are those routes, with their names;
/// when they read keys from different headers, nothing is judged here and each is left to
/// [`authenticate`] once the route is known.
pub fn precheck<'a>(
    consumers: &Consumers,
    mut routes: impl Iterator<Item = (&'a str, &'a RouteAuth)>,
    headers: &HeaderMap,
    metrics: &AccessMetrics,
) -> Result<(), ProxyError> {
    let Some((first_name, first)) = routes.next() else {
        return Ok(());
    };
    let mut weakest = first.mode;
    for (_, auth) in routes {
        if auth.header != first.header {
            return Ok(());
        }
        weakest = weakest.min(auth.mode);
    }
    if weakest == AuthMode::Off {
        return Ok(());
    }
    match presented_key(headers, first.header.as_ref()) {
        None if weakest == AuthMode::Required => {
            metrics.auth_failure("missing_key");
            Err(ProxyError::MissingApiKey {
                route: first_name.to_owned(),
            })
        }
        Some(key) if consumers.find(&KeyHash::of(key)).is_none() => {
            metrics.auth_failure("invalid_key");
            Err(ProxyError::InvalidApiKey)
        }
        _ => Ok(()),
    }
}

/// The key a request presents, if any: the route's header, `Authorization: Bearer`, or
/// `x-api-key`, first found first served. Empty values count as absent.
fn presented_key<'a>(headers: &'a HeaderMap, own: Option<&HeaderName>) -> Option<&'a [u8]> {
    let nonempty = |v: &'a [u8]| Some(v.trim_ascii()).filter(|v| !v.is_empty());
    if let Some(value) = own.and_then(|name| headers.get(name)) {
        let value = value.as_bytes();
        // A custom header may carry the key bare or as a bearer token.
        return nonempty(strip_bearer(value).unwrap_or(value));
    }
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        if let Some(token) = strip_bearer(value.as_bytes()).and_then(nonempty) {
            return Some(token);
        }
    }
    headers.get(&X_API_KEY).and_then(|v| nonempty(v.as_bytes()))
}

/// The token of `Bearer <token>` (the scheme is case-insensitive).
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
}

/// Checks that `consumer` may use this route.
pub fn check_route(
    consumer: &Consumer,
    route_name: &str,
    metrics: &AccessMetrics,
) -> Result<(), ProxyError> {
    match &consumer.routes {
        Some(routes) if !routes.contains(route_name) => {
            metrics.auth_failure("route_not_allowed");
            Err(ProxyError::RouteNotAllowed {
                consumer: consumer.name.to_string(),
                route: route_name.to_owned(),
            })
        }
        _ => Ok(()),
    }
}

/// Checks that `consumer` may use the model a request with a body names.
pub fn check_model(
    consumer: &Consumer,
    model: Option<&str>,
    metrics: &AccessMetrics,
) -> Result<(), ProxyError> {
    if consumer.may_use(model) {
        return Ok(());
    }
    metrics.auth_failure("model_not_allowed");
    Err(ProxyError::ModelNotAllowed {
        consumer: consumer.name.to_string(),
        model: model.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn consumer(name: &str) -> Arc<Consumer> {
        Arc::new(Consumer {
            name: name.into(),
            models: ModelList::new(["gpt-4o", "llama-*"]),
            blocked_models: ModelList::new(["llama-guard"]),
            routes: None,
            limits: Vec::new(),
        })
    }

    fn metrics() -> AccessMetrics {
        AccessMetrics::register(&prometheus::Registry::new()).unwrap()
    }

    #[test]
    fn keys_are_found_by_their_hash_in_any_header() {
        let mut keys = HashMap::new();
        keys.insert(KeyHash::of(b"sk-alpha"), consumer("alpha"));
        let consumers = Consumers::new(keys);
        let required = RouteAuth {
            mode: AuthMode::Required,
            header: Some(HeaderName::from_static("api-key")),
        };
        let metrics = metrics();
        for (name, value) in [
            ("authorization", "Bearer sk-alpha"),
            ("authorization", "bearer   sk-alpha "),
            ("x-api-key", "sk-alpha"),
            ("api-key", "sk-alpha"),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static(value));
            headers.insert("x-other", HeaderValue::from_static("kept"));
            let found = authenticate(&consumers, "r", &required, &mut headers, &metrics)
                .unwrap()
                .unwrap();
            assert_eq!(&*found.name, "alpha", "{name}: {value}");
            assert_eq!(headers.len(), 1, "the key header was not removed");
        }
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer sk-beta"));
        assert!(matches!(
            authenticate(&consumers, "r", &required, &mut headers, &metrics),
            Err(ProxyError::InvalidApiKey)
        ));
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static("Basic Zm9vOmJhcg=="),
        );
        assert!(matches!(
            authenticate(&consumers, "r", &required, &mut headers, &metrics),
            Err(ProxyError::MissingApiKey { .. })
        ));
        // Optional: no key is anonymous, a bad key is still refused.
        let optional = RouteAuth {
            mode: AuthMode::Optional,
            header: None,
        };
        let found = authenticate(&consumers, "r", &optional, &mut HeaderMap::new(), &metrics);
        assert!(found.unwrap().is_none());
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static("nope"));
        assert!(authenticate(&consumers, "r", &optional, &mut headers, &metrics).is_err());
        // Off: nothing is read or removed.
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer upstream"));
        let off = RouteAuth::default();
        assert!(authenticate(&consumers, "r", &off, &mut headers, &metrics)
            .unwrap()
            .is_none());
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn hashes_parse_and_compare() {
        let hash = KeyHash::of(b"sk-alpha");
        let text = hex::encode(hash.0);
        assert_eq!(KeyHash::from_hex(&text), Some(hash));
        assert_eq!(KeyHash::from_hex(&text.to_uppercase()), Some(hash));
        assert_eq!(KeyHash::from_hex("abc"), None);
        assert_ne!(KeyHash::of(b"sk-alphb"), hash);
    }

    #[test]
    fn model_rules() {
        let c = consumer("c");
        assert!(c.may_use(Some("gpt-4o")));
        assert!(c.may_use(Some("llama-3-70b")));
        assert!(!c.may_use(Some("llama-guard")));
        assert!(!c.may_use(Some("gpt-4o-mini")));
        assert!(!c.may_use(None));
        let open = Consumer {
            name: "o".into(),
            models: ModelList::default(),
            blocked_models: ModelList::new(["x"]),
            routes: None,
            limits: Vec::new(),
        };
        assert!(open.may_use(None));
        assert!(open.may_use(Some("y")));
        assert!(!open.may_use(Some("x")));
    }
}

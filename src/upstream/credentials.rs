//! Provider keys: a cluster that has them replaces the client's credentials with one of its
//! own keys, picked by weight, and moves to the next key when the provider answers 429.
//!
//! Keys come from environment variables or files, read when the config is compiled; the
//! config names only where a key is (`env:OPENAI_API_KEY`, `file:/run/secrets/key`), and
//! that name is all that `/status`, the logs and config errors ever show. The header values
//! are marked sensitive, so hyper's HPACK encoder never indexes them either.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use crate::proxy::balance::RoundRobin;

/// The client headers that carry credentials, all removed when a cluster has keys.
const CLIENT_CREDENTIALS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

/// A cluster's provider keys.
#[derive(Debug)]
pub struct KeyPool {
    /// The header each key is sent in.
    pub header: HeaderName,
    keys: Vec<Key>,
    order: RoundRobin,
    /// How long a key rests after a 429 that says nothing of when to come back.
    pub cooldown: Duration,
    base: Instant,
}

/// One provider key.
#[derive(Debug)]
pub struct Key {
    /// Where the key comes from (`env:NAME` or `file:PATH`); never the key itself.
    pub source: String,
    pub weight: u32,
    value: HeaderValue,
    /// Milliseconds since the pool's `base` until which the key rests; 0: not resting.
    resting_until: AtomicU64,
}

impl Key {
    /// `value` is the whole header value (`Bearer sk-...`).
    pub fn new(source: String, weight: u32, mut value: HeaderValue) -> Key {
        value.set_sensitive(true);
        Key {
            source,
            weight,
            value,
            resting_until: AtomicU64::new(0),
        }
    }
}

impl KeyPool {
    pub fn new(header: HeaderName, keys: Vec<Key>, cooldown: Duration) -> KeyPool {
        let weights: Vec<u32> = keys.iter().map(|k| k.weight).collect();
        KeyPool {
            header,
            order: RoundRobin::new(&weights),
            keys,
            cooldown,
            base: Instant::now(),
        }
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How long key `i` still rests; `None` when it is usable.
    pub fn resting(&self, i: usize) -> Option<Duration> {
        let until = self.keys.get(i)?.resting_until.load(Ordering::Relaxed);
        let now = self.now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// The next key by weight that is not resting and not in `skip`; when every key rests,
    /// the one whose rest ends first (the provider decides).
    pub fn pick(&self, skip: &[usize]) -> Option<usize> {
        let usable = |i: usize| !skip.contains(&i) && self.resting(i).is_none();
        self.order.pick_where(usable).or_else(|| {
            (0..self.keys.len())
                .filter(|i| !skip.contains(i))
                .min_by_key(|&i| self.keys[i].resting_until.load(Ordering::Relaxed))
        })
    }

    /// Replaces the client's credentials with key `i`.
    pub fn apply(&self, i: usize, headers: &mut HeaderMap) {
        for name in CLIENT_CREDENTIALS {
            headers.remove(name);
        }
        if let Some(key) = self.keys.get(i) {
            headers.insert(self.header.clone(), key.value.clone());
        }
    }

    /// Key `i` got a 429: it rests for `retry_after`, or the pool's cooldown.
    pub fn throttled(&self, i: usize, retry_after: Option<Duration>) {
        let Some(key) = self.keys.get(i) else { return };
        let rest = retry_after.unwrap_or(self.cooldown);
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(rest.as_millis()).unwrap_or(u64::MAX));
        key.resting_until.fetch_max(until, Ordering::Relaxed);
    }
}

/// The header value for a key: `prefix` then the key (`Bearer ` + `sk-...`). `Err` says why
/// without showing the key.
pub fn header_value(prefix: &str, key: &str) -> Result<HeaderValue, String> {
    let key = key.trim();
    if key.is_empty() {
        return Err("the key is empty".to_owned());
    }
    HeaderValue::from_str(&format!("{prefix}{key}"))
        .map_err(|_| "the key has characters a header cannot carry".to_owned())
}

/// The default header prefix for `header`: `Bearer ` for `Authorization`, none otherwise.
pub fn default_prefix(header: &HeaderName) -> &'static str {
    if header == header::AUTHORIZATION {
        "Bearer "
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> KeyPool {
        let key = |name: &str, weight| {
            Key::new(
                format!("env:{name}"),
                weight,
                header_value("Bearer ", name).unwrap(),
            )
        };
        KeyPool::new(
            header::AUTHORIZATION,
            vec![key("a", 1), key("b", 1)],
            Duration::from_secs(60),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_key_rests_and_the_next_takes_over() {
        let pool = pool();
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer client".parse().unwrap());
        headers.insert("x-api-key", "client".parse().unwrap());
        pool.apply(0, &mut headers);
        assert_eq!(headers["authorization"], "Bearer a");
        assert!(headers["authorization"].is_sensitive());
        assert!(!headers.contains_key("x-api-key"));

        pool.throttled(0, None);
        for _ in 0..10 {
            assert_eq!(pool.pick(&[]), Some(1));
        }
        // Skipping the only usable key leaves the resting one.
        assert_eq!(pool.pick(&[1]), Some(0));
        tokio::time::advance(Duration::from_secs(60)).await;
        let picks: Vec<_> = (0..4).map(|_| pool.pick(&[]).unwrap()).collect();
        assert!(picks.contains(&0) && picks.contains(&1), "{picks:?}");

        // Both resting: the one that comes back first.
        pool.throttled(0, Some(Duration::from_secs(5)));
        pool.throttled(1, Some(Duration::from_secs(9)));
        assert_eq!(pool.pick(&[]), Some(0));
    }

    #[test]
    fn key_values_are_checked_without_being_shown() {
        let err = header_value("Bearer ", "sk-\nsecret").unwrap_err();
        assert!(!err.contains("secret"));
        assert!(header_value("", "  ").is_err());
        assert_eq!(header_value("", "k\n").unwrap(), "k");
    }
}

//! Consistent hashing with bounded load, and the request keys it hashes.
//!
//! The ring holds virtual nodes placed by hashing each backend's URL with a node number, so
//! a backend's points do not depend on the other backends: removing one moves only the keys
//! that were on it. A request's key is hashed onto the ring and the ring is walked clockwise
//! to the first backend that is accepted (healthy, not tried) and not above
//! `balance_factor` × the mean load ("consistent hashing with bounded loads", Mirrokni,
//! Thorup and Zadimoghaddam, 2016), so one hot key cannot bury its backend.
//!
//! The hash is written here rather than taken from `std`: `DefaultHasher`'s algorithm may
//! change between Rust releases, and two sluice builds that place keys differently would
//! send the same conversation to different KV caches during a rolling upgrade.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName};

/// Points on the ring per unit of weight. A backend's count depends only on its own
/// weight, so adding or removing another backend moves no point of this one.
const POINTS_PER_WEIGHT: u64 = 160;
/// The most points in a ring; larger rings are scaled down (and then lose that stability).
const MAX_RING: u64 = 65536;

/// A 64-bit hash of `bytes`, the same on every build and platform: a multiply-rotate over
/// 8-byte words and splitmix64's finalizer.
pub fn hash64(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = 0xCBF2_9CE4_8422_2325 ^ (bytes.len() as u64).wrapping_mul(K);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    mix(h)
}

/// splitmix64's finalizer: every input bit moves every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A ring of virtual nodes: `(point, backend index)`, sorted by point.
#[derive(Debug)]
pub struct Ring {
    points: Box<[(u64, u16)]>,
}

impl Ring {
    /// Places each backend's points; `names[i]` (its URL) and `weights[i]` belong to backend
    /// `i`. At most `u16::MAX` backends (the config allows 1,024).
    pub fn new(names: &[&str], weights: &[u32]) -> Ring {
        let total: u64 = weights
            .iter()
            .map(|&w| u64::from(w) * POINTS_PER_WEIGHT)
            .sum();
        let scale = |n: u64| match total > MAX_RING {
            true => n * MAX_RING / total,
            false => n,
        };
        let mut points = Vec::with_capacity(total.min(MAX_RING) as usize + names.len());
        for (i, (name, &weight)) in names.iter().zip(weights).enumerate() {
            let Ok(index) = u16::try_from(i) else { break };
            let share = scale(u64::from(weight) * POINTS_PER_WEIGHT);
            let mut node = Vec::with_capacity(name.len() + 9);
            for n in 0..share.max(1) {
                node.clear();
                node.extend_from_slice(name.as_bytes());
                node.push(b'#');
                node.extend_from_slice(&n.to_le_bytes());
                points.push((hash64(&node), index));
            }
        }
        points.sort_unstable();
        Ring {
            points: points.into_boxed_slice(),
        }
    }

    /// The backend for `key`: the first accepted one clockwise whose load is at most
    /// `factor` × the mean (plus this request). If every accepted backend is above that,
    /// the first accepted one. `load(i)` is backend `i`'s requests in flight.
    pub fn pick(
        &self,
        key: u64,
        count: usize,
        accept: &dyn Fn(usize) -> bool,
        load: impl Fn(usize) -> u32,
        factor: f64,
    ) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        // The bound: ceil(factor × (total load + 1) / accepted backends), at least 1, so an
        // idle backend is always within it; computed only when a loaded one is met.
        let mut limit: Option<u64> = None;
        let mut within = |i: usize| {
            let own = u64::from(load(i));
            own == 0
                || own
                    < *limit.get_or_insert_with(|| {
                        let (mut total, mut accepted) = (0u64, 0u64);
                        for j in (0..count).filter(|&j| accept(j)) {
                            total += u64::from(load(j));
                            accepted += 1;
                        }
                        (factor * (total + 1) as f64 / accepted.max(1) as f64).ceil() as u64
                    })
        };
        let start = self.points.partition_point(|&(point, _)| point < key);
        let mut seen = Seen::default();
        let mut first = None;
        let (mut distinct, len) = (0, self.points.len());
        for k in 0..len {
            let i = usize::from(self.points[(start + k) % len].1);
            if i >= count || !seen.insert(i) {
                continue;
            }
            distinct += 1;
            if accept(i) {
                if within(i) {
                    return Some(i);
                }
                first.get_or_insert(i);
            }
            if distinct == count {
                break;
            }
        }
        first
    }
}

/// Backends already looked at in one walk (at most 1,024, the config's bound; larger
/// indices count as seen, so a walk still ends).
#[derive(Default)]
struct Seen([u64; 16]);

impl Seen {
    fn insert(&mut self, i: usize) -> bool {
        let Some(word) = self.0.get_mut(i / 64) else {
            return false;
        };
        let bit = 1u64 << (i % 64);
        let new = *word & bit == 0;
        *word |= bit;
        new
    }
}

/// What a consistent-hash cluster hashes to place a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The value of a request header (a session or user id).
    Header(HeaderName),
    /// The client's API key: `Authorization`, else `x-api-key`, else `api-key`.
    ApiKey,
    /// The client's IP address: the peer's, or, from a peer in `server.trusted_proxies`,
    /// the one its `X-Forwarded-For` names (as for rate-limit keys).
    ClientIp,
    /// The first `n` bytes of the prompt (`messages`, `prompt` or `input` as sent), so that
    /// requests that share a system prompt and history reach the backend whose KV cache
    /// holds it.
    Prompt(usize),
}

impl HashOn {
    /// The request's key; `None` when it has none (no such header, no JSON prompt): such
    /// requests go to a random backend. `peer` is the client's IP as text; `consumer` is the
    /// authenticated caller, whose key sluice has already removed from the headers.
    pub fn key(
        &self,
        headers: &HeaderMap,
        client: &[u8],
        consumer: Option<&str>,
        prompt: Option<&Bytes>,
    ) -> Option<u64> {
        match self {
            HashOn::Header(name) => headers.get(name).map(|v| hash64(v.as_bytes())),
            HashOn::ApiKey => match consumer {
                Some(consumer) => Some(hash64(consumer.as_bytes())),
                None => [
                    header::AUTHORIZATION,
                    HeaderName::from_static("x-api-key"),
                    HeaderName::from_static("api-key"),
                ]
                .iter()
                .find_map(|name| headers.get(name))
                .map(|v| hash64(v.as_bytes())),
            },
            HashOn::ClientIp => Some(hash64(client)),
            HashOn::Prompt(n) => prompt.map(|p| hash64(&p[..p.len().min(*n)])),
        }
    }
}

#[cfg(test)]
mod tests;

//! Buckets and in-flight counters held in this process, in sharded maps of bounded size.
//!
//! # Locking
//!
//! There is no global lock on the request path. A key's hash picks one of [`SHARDS`] shards,
//! each a `std::sync::Mutex<HashMap>`; a decision locks that one shard for a hash lookup and
//! a few float operations (tens of nanoseconds), never across an `.await`. Two requests
//! contend only when their keys fall in the same shard at the same instant.
//!
//! # Memory
//!
//! A full bucket is the same as no bucket, so nothing is lost by dropping it:
//!
//! - [`LocalStore::sweep`], run every `ratelimit.sweep_interval`, removes the buckets that
//!   have refilled to capacity (idle ones), one shard at a time.
//! - Each shard holds at most `max_keys / SHARDS` buckets. A new key in a full shard first
//!   removes the shard's full buckets; if that frees less than an eighth of the shard, the
//!   least recently used buckets go until an eighth is free. Making room in batches keeps the
//!   cost per new key constant under a flood of distinct keys. A bucket evicted before it
//!   refilled is forgiven what it owed: this happens only at the cap, and the flood's own
//!   keys, being the least recently used, go first.
//!
//! In-flight counters need no cap: an entry exists only while a request holds it, so there
//! are never more of them than requests in flight.
//!
//! # Keys
//!
//! A bucket is stored under a 64-bit SipHash of its key's bytes, keyed with a random
//! per-process secret, not under the bytes themselves: one hash per decision instead of two
//! (one to pick the shard, one inside the map), and about 60 bytes per bucket whatever the
//! key's length. Two keys share a bucket only if their hashes collide: with 100,000 keys
//! the chance that any two do is about 3 in 10^10, and without the process's secret nobody
//! can aim for a collision.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use tokio::time::Instant;

use super::bucket::{Bucket, Rate};

/// Shards per map: enough that two cores rarely meet on one lock.
pub const SHARDS: usize = 64;

/// A key's hash, as [`Sharded::locate`] computes it.
type Key = u64;

/// Passes a `u64` that is already a keyed hash through unchanged, so the map does not hash
/// it a second time.
#[derive(Debug, Default, Clone, Copy)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is ever called, by `u64`'s `Hash`; fold anything else in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map<V> = HashMap<Key, V, BuildHasherDefault<Prehashed>>;

/// One bucket and the rate it was last used with (the sweep needs the rate to tell whether
/// it is full).
#[derive(Debug)]
struct Slot {
    bucket: Bucket,
    rate: Rate,
}

/// A map split into [`SHARDS`] locked parts by key hash.
#[derive(Debug)]
struct Sharded<V> {
    hasher: RandomState,
    shards: Box<[Mutex<Map<V>>]>,
}

impl<V> Sharded<V> {
    fn new() -> Self {
        Sharded {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
        }
    }

    /// The hash `key` is stored under, and its shard, locked. The shard comes from bits
    /// 32 to 37 of the hash, which the map uses for neither its slot (low bits) nor its
    /// tag (top bits). A poisoned lock (a panic while it was held) is taken over: the map
    /// holds plain numbers that no panic leaves half-written.
    fn locate(&self, key: &[u8]) -> (Key, MutexGuard<'_, Map<V>>) {
        let hash = self.hasher.hash_one(key);
        (hash, self.lock((hash >> 32) as usize % SHARDS))
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Map<V>> {
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counters of what the store drops, and how many buckets it holds.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// `sluice_ratelimit_local_keys`.
    pub keys: IntGauge,
    /// `sluice_ratelimit_evictions_total{reason="idle"}`.
    pub evicted_idle: IntCounter,
    /// `sluice_ratelimit_evictions_total{reason="capacity"}`.
    pub evicted_capacity: IntCounter,
}

/// The local buckets and in-flight counters.
#[derive(Debug)]
pub struct LocalStore {
    buckets: Sharded<Slot>,
    in_flight: Sharded<u32>,
    per_shard: usize,
    metrics: StoreMetrics,
}

impl LocalStore {
    /// A store of at most `max_keys` buckets (rounded up to a multiple of [`SHARDS`]).
    pub fn new(max_keys: usize, metrics: StoreMetrics) -> LocalStore {
        LocalStore {
            buckets: Sharded::new(),
            in_flight: Sharded::new(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            metrics,
        }
    }

    /// The most buckets this store keeps.
    pub fn max_keys(&self) -> usize {
        self.per_shard * SHARDS
    }

    /// Takes `cost` tokens from the bucket of `key`: `Ok(level after)` or `Err(time until
    /// the bucket holds enough)`.
    pub fn try_take(&self, key: &[u8], rate: Rate, cost: f64) -> Result<f64, Duration> {
        let now = Instant::now();
        let (id, mut shard) = self.buckets.locate(key);
        if let Some(slot) = shard.get_mut(&id) {
            slot.rate = rate;
            return slot.bucket.try_take(&rate, cost, now);
        }
        let mut bucket = Bucket::full(&rate, now);
        let taken = bucket.try_take(&rate, cost, now);
        if taken.is_ok() {
            self.insert(&mut shard, id, Slot { bucket, rate }, now);
        }
        taken
    }

    /// Charges `delta` more tokens to the bucket of `key`, or gives `-delta` back. A bucket
    /// that was evicted meanwhile starts again from full.
    pub fn adjust(&self, key: &[u8], rate: Rate, delta: f64) -> f64 {
        let now = Instant::now();
        let (id, mut shard) = self.buckets.locate(key);
        if let Some(slot) = shard.get_mut(&id) {
            slot.rate = rate;
            return slot.bucket.adjust(&rate, delta, now);
        }
        let mut bucket = Bucket::full(&rate, now);
        let level = bucket.adjust(&rate, delta, now);
        if level < rate.capacity {
            self.insert(&mut shard, id, Slot { bucket, rate }, now);
        }
        level
    }

    fn insert(&self, shard: &mut Map<Slot>, id: Key, slot: Slot, now: Instant) {
        if shard.len() >= self.per_shard {
            self.make_room(shard, now);
        }
        shard.insert(id, slot);
        self.metrics.keys.inc();
    }

    /// Frees at least an eighth of a full shard: full buckets first, then the least
    /// recently used.
    fn make_room(&self, shard: &mut Map<Slot>, now: Instant) {
        let before = shard.len();
        shard.retain(|_, slot| !slot.bucket.is_full(&slot.rate, now));
        let idle = before - shard.len();
        self.metrics.evicted_idle.inc_by(idle as u64);
        let want = (self.per_shard / 8).max(1);
        if idle < want {
            let extra = want - idle;
            let mut times: Vec<Instant> = shard.values().map(|s| s.bucket.updated()).collect();
            if extra < times.len() {
                let (_, &mut cutoff, _) = times.select_nth_unstable(extra - 1);
                // Everything older than the cutoff goes, then as many of its ties as needed.
                let older = times.iter().filter(|&&t| t < cutoff).count();
                let mut ties = extra - older;
                shard.retain(|_, slot| {
                    let t = slot.bucket.updated();
                    if t < cutoff {
                        false
                    } else if t == cutoff && ties > 0 {
                        ties -= 1;
                        false
                    } else {
                        true
                    }
                });
            } else {
                shard.clear();
            }
        }
        let removed = before - shard.len();
        self.metrics
            .evicted_capacity
            .inc_by((removed - idle) as u64);
        self.metrics.keys.sub(removed as i64);
    }

    /// Removes every bucket that has refilled to capacity, one shard at a time. Returns how
    /// many went.
    pub fn sweep(&self) -> usize {
        let mut removed = 0;
        for index in 0..SHARDS {
            let now = Instant::now();
            let mut shard = self.buckets.lock(index);
            let before = shard.len();
            shard.retain(|_, slot| !slot.bucket.is_full(&slot.rate, now));
            removed += before - shard.len();
        }
        self.metrics.evicted_idle.inc_by(removed as u64);
        self.metrics.keys.sub(removed as i64);
        removed
    }

    /// Buckets held now (locks each shard in turn; for tests and the sweep's report).
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.buckets.lock(i).len()).sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The level of `key`'s bucket now; `None` when it holds none (it is full).
    pub fn level(&self, key: &[u8]) -> Option<f64> {
        let (id, shard) = self.buckets.locate(key);
        shard
            .get(&id)
            .map(|slot| slot.bucket.level(&slot.rate, Instant::now()))
    }

    /// Counts one more request in flight under `key` if fewer than `max` are.
    pub fn acquire(&self, key: &[u8], max: u32) -> bool {
        let (id, mut shard) = self.in_flight.locate(key);
        match shard.get_mut(&id) {
            Some(count) if *count >= max => false,
            Some(count) => {
                *count += 1;
                true
            }
            None => {
                shard.insert(id, 1);
                true
            }
        }
    }

    /// Counts one request under `key` out again.
    pub fn release(&self, key: &[u8]) {
        let (id, mut shard) = self.in_flight.locate(key);
        if let Some(count) = shard.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                shard.remove(&id);
            }
        }
    }

    /// Requests in flight under `key`.
    pub fn in_flight(&self, key: &[u8]) -> u32 {
        let (id, shard) = self.in_flight.locate(key);
        shard.get(&id).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max_keys: usize) -> LocalStore {
        let metrics = StoreMetrics {
            keys: IntGauge::new("keys", "keys").unwrap(),
            evicted_idle: IntCounter::new("idle", "idle").unwrap(),
            evicted_capacity: IntCounter::new("capacity", "capacity").unwrap(),
        };
        LocalStore::new(max_keys, metrics)
    }

    fn per_minute(n: u64) -> Rate {
        Rate::new(n, Duration::from_secs(60), n).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_are_kept_per_key() {
        let s = store(1000);
        let rate = per_minute(2);
        assert_eq!(s.try_take(b"a", rate, 1.0), Ok(1.0));
        assert_eq!(s.try_take(b"a", rate, 1.0), Ok(0.0));
        assert_eq!(s.try_take(b"a", rate, 1.0), Err(Duration::from_secs(30)));
        assert_eq!(s.try_take(b"b", rate, 1.0), Ok(1.0));
        assert_eq!(s.len(), 2);
        // A refund goes back to the same bucket.
        assert_eq!(s.adjust(b"a", rate, -1.0), 1.0);
        // A refused first take stores nothing.
        assert!(s.try_take(b"c", rate, 5.0).is_err());
        assert_eq!(s.len(), 2);
        assert_eq!(s.metrics.keys.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_removes_buckets_that_refilled() {
        let s = store(1000);
        let slow = per_minute(1);
        let fast = Rate::new(1, Duration::from_secs(1), 1).unwrap();
        s.try_take(b"slow", slow, 1.0).unwrap();
        s.try_take(b"fast", fast, 1.0).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(s.sweep(), 1);
        assert_eq!(s.level(b"fast"), None);
        assert!(s.level(b"slow").is_some());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(s.sweep(), 1);
        assert!(s.is_empty());
        assert_eq!(s.metrics.keys.get(), 0);
        assert_eq!(s.metrics.evicted_idle.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_distinct_keys_stays_within_the_cap() {
        let s = store(6400);
        let rate = per_minute(10);
        // A steady key that keeps being used.
        s.try_take(b"steady", rate, 1.0).unwrap();
        for i in 0..200_000u32 {
            s.try_take(&i.to_be_bytes(), rate, 1.0).unwrap();
            if i % 1000 == 0 {
                s.try_take(b"steady", rate, 0.0).unwrap();
                tokio::time::advance(Duration::from_millis(1)).await;
            }
            if i % 10_000 == 0 {
                assert!(s.len() <= 6400);
            }
        }
        let held = s.len();
        assert!(held <= 6400, "{held} buckets held");
        assert_eq!(s.metrics.keys.get(), held as i64);
        assert!(
            s.level(b"steady").is_some(),
            "the recently used key was evicted before the flood's own"
        );
        assert!(s.metrics.evicted_capacity.get() >= 200_000 - 6400);
    }

    #[test]
    fn in_flight_counts_stop_at_the_maximum_and_leave_no_trace() {
        let s = store(10);
        assert!(s.acquire(b"k", 2));
        assert!(s.acquire(b"k", 2));
        assert!(!s.acquire(b"k", 2));
        assert_eq!(s.in_flight(b"k"), 2);
        s.release(b"k");
        assert!(s.acquire(b"k", 2));
        s.release(b"k");
        s.release(b"k");
        assert_eq!(s.in_flight(b"k"), 0);
        assert!((0..SHARDS).all(|i| s.in_flight.lock(i).is_empty()));
    }

    #[test]
    fn keys_spread_over_every_shard() {
        let s = store(SHARDS * 1000);
        let rate = per_minute(10);
        for i in 0..SHARDS as u32 * 100 {
            s.try_take(&i.to_be_bytes(), rate, 1.0).unwrap();
        }
        for i in 0..SHARDS {
            let n = s.buckets.lock(i).len();
            assert!((40..=200).contains(&n), "shard {i} holds {n} of 6,400");
        }
    }
}

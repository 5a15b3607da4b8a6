//! Backend choice, per cluster, without a lock: smooth weighted round-robin, least request
//! (power of two choices), consistent hashing with bounded load, and weighted random.
//!
//! Every policy picks among the backends that a caller's `accept` allows (healthy, not tried
//! yet, not at its concurrency cap), so health, retries and caps are the caller's business
//! and each policy stays small. A backend in slow start is accepted with a probability that
//! ramps up over the window (least request scales its weight instead).
//!
//! - [`RoundRobin`] (here): nginx's smooth WRR order, precomputed when the config is
//!   compiled; a pick is one atomic increment and an index into that schedule.
//! - [`p2c`]: two random candidates, the one with fewer requests in flight per unit of
//!   weight wins; open streams count until they end.
//! - [`hash`]: a ring of virtual nodes keyed by backend URL, walked clockwise from the
//!   request's key, skipping backends above `balance_factor` × the mean load.
//! - [`random`]: weighted random.

pub mod hash;
pub mod p2c;
pub mod random;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::snapshot::Backend;
use hash::Ring;
use random::WeightedRandom;

/// How a cluster spreads requests over its backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LbKind {
    #[default]
    RoundRobin,
    LeastRequest,
    ConsistentHash,
    Random,
}

/// A cluster's balancer: its policy, precomputed from the backends' weights.
#[derive(Debug)]
pub struct Balancer {
    policy: Policy,
    weights: Box<[u32]>,
    /// Bounded load for consistent hashing: no backend above this × the mean.
    balance_factor: f64,
    /// Slow start window; `None` when off.
    slow_start: Option<Duration>,
}

#[derive(Debug)]
enum Policy {
    RoundRobin(RoundRobin),
    LeastRequest,
    ConsistentHash(Ring),
    Random(WeightedRandom),
}

impl Balancer {
    /// A balancer of `kind` over backends with these weights and names (the names place
    /// a consistent-hash ring's points, so a backend keeps them when others come and go).
    pub fn new(
        kind: LbKind,
        weights: &[u32],
        names: &[&str],
        balance_factor: f64,
        slow_start: Option<Duration>,
    ) -> Balancer {
        let policy = match kind {
            LbKind::RoundRobin => Policy::RoundRobin(RoundRobin::new(weights)),
            LbKind::LeastRequest => Policy::LeastRequest,
            LbKind::ConsistentHash => Policy::ConsistentHash(Ring::new(names, weights)),
            LbKind::Random => Policy::Random(WeightedRandom::new(weights)),
        };
        Balancer {
            policy,
            weights: weights.into(),
            balance_factor,
            slow_start,
        }
    }

    /// The policy's name, for `/status`.
    pub fn kind(&self) -> LbKind {
        match self.policy {
            Policy::RoundRobin(_) => LbKind::RoundRobin,
            Policy::LeastRequest => LbKind::LeastRequest,
            Policy::ConsistentHash(_) => LbKind::ConsistentHash,
            Policy::Random(_) => LbKind::Random,
        }
    }

    /// Picks a backend that `accept` allows; `None` when it allows none. `key` is the
    /// request's hash key (consistent hashing only; without one, a random backend).
    pub fn pick(
        &self,
        backends: &[Backend],
        key: Option<u64>,
        accept: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let count = backends.len().min(self.weights.len());
        if count == 0 {
            return None;
        }
        let now = self.slow_start.map(|window| (window, Instant::now()));
        // A backend in slow start takes a pick with the probability of its ramp.
        let ramped = |i: usize| match now {
            None => true,
            Some((window, now)) => {
                let share = backends[i].state.slow_start(window, now);
                share >= 1.0 || fastrand::f64() < share
            }
        };
        let found = match &self.policy {
            Policy::RoundRobin(rr) => rr.pick_where(|i| i < count && accept(i) && ramped(i)),
            Policy::LeastRequest => {
                let cost = |i: usize| {
                    let share = now.map_or(1.0, |(w, now)| backends[i].state.slow_start(w, now));
                    f64::from(backends[i].state.in_flight() + 1)
                        / (f64::from(self.weights[i]) * share)
                };
                p2c::pick(count, &accept, cost)
            }
            Policy::ConsistentHash(ring) => match key {
                Some(key) => ring.pick(key, count, &accept, |i| backends[i].state.in_flight(), {
                    self.balance_factor
                }),
                None => random::uniform(count, &|i| accept(i) && ramped(i)),
            },
            Policy::Random(weighted) => weighted.pick(|i| i < count && accept(i) && ramped(i)),
        };
        // The fast paths give up after a few tries; a scan finds any accepted backend.
        found.or_else(|| random::scan(count, &accept))
    }
}

/// The longest schedule kept; larger totals are scaled to fit, keeping the ratios to within
/// one part in this many.
pub const MAX_SCHEDULE: usize = 4096;

/// Schedule slots a pick looks at before giving up.
const SCAN: usize = 64;

/// A precomputed smooth weighted round-robin over backend indices.
#[derive(Debug)]
pub struct RoundRobin {
    schedule: Box<[u16]>,
    next: AtomicUsize,
}

impl RoundRobin {
    /// Builds the schedule. Every weight must be positive and there must be at most
    /// `u16::MAX` backends (the config check guarantees both).
    pub fn new(weights: &[u32]) -> RoundRobin {
        let weights = fit(weights);
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        let mut current = vec![0i64; weights.len()];
        let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            let mut best = 0;
            for (i, &w) in weights.iter().enumerate() {
                current[i] += i64::from(w);
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            schedule.push(u16::try_from(best).unwrap_or(u16::MAX));
        }
        RoundRobin {
            schedule: schedule.into_boxed_slice(),
            next: AtomicUsize::new(fastrand::usize(..usize::MAX / 2)),
        }
    }

    /// The index of the next backend, or `None` for an empty cluster.
    pub fn pick(&self) -> Option<usize> {
        self.pick_where(|_| true)
    }

    /// The next backend in the schedule that `accept` allows. Rejected slots pass their
    /// turn to the next ones; after `SCAN` (64) rejections it gives up (the caller scans).
    pub fn pick_where(&self, accept: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len.min(SCAN))
            .map(|step| usize::from(self.schedule[n.wrapping_add(step) % len]))
            .find(|&i| accept(i))
    }
}

/// Divides the weights by their greatest common divisor and scales them so that they sum to
/// at most [`MAX_SCHEDULE`], keeping every weight at least 1.
fn fit(weights: &[u32]) -> Vec<u32> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let mut fitted: Vec<u32> = weights.iter().map(|w| w / divisor).collect();
    let total: u64 = fitted.iter().map(|&w| u64::from(w)).sum();
    if total > MAX_SCHEDULE as u64 {
        for w in &mut fitted {
            let scaled = u64::from(*w) * MAX_SCHEDULE as u64 / total;
            *w = u32::try_from(scaled).unwrap_or(u32::MAX).max(1);
        }
    }
    fitted
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(weights: &[u32], picks: usize) -> Vec<usize> {
        let rr = RoundRobin::new(weights);
        let mut counts = vec![0; weights.len()];
        for _ in 0..picks {
            counts[rr.pick().unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn shares_follow_weights_exactly_over_whole_cycles() {
        assert_eq!(counts(&[5, 1, 1], 700), vec![500, 100, 100]);
        assert_eq!(counts(&[1, 1], 10), vec![5, 5]);
    }

    #[test]
    fn order_is_smooth_not_bursty() {
        // nginx's documented order for weights 5, 1, 1: a a b a c a a.
        let rr = RoundRobin::new(&[5, 1, 1]);
        assert_eq!(&rr.schedule[..], &[0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn huge_weights_are_scaled_into_the_schedule() {
        let rr = RoundRobin::new(&[1_000_000, 3_000_000, 1]);
        assert!(rr.schedule.len() <= MAX_SCHEDULE + 3);
        let c = counts(&[1_000_000, 3_000_000, 1], rr.schedule.len());
        assert!(c[1] > 2 * c[0] && c[2] >= 1, "{c:?}");
    }

    #[test]
    fn empty_cluster_picks_nothing() {
        assert_eq!(RoundRobin::new(&[]).pick(), None);
    }

    /// Mock backends `b0`, `b1`, … with weight 1 each.
    fn backends(n: usize) -> Vec<Backend> {
        use std::str::FromStr;
        use std::sync::Arc;
        (0..n)
            .map(|i| {
                let url = format!("mock://b{i}");
                let uri = http::Uri::from_str(&url).unwrap();
                let mock = crate::mock::MockBackend::from_uri(&uri).unwrap();
                Backend {
                    authority: http::HeaderValue::from_str(mock.name()).unwrap(),
                    url,
                    weight: 1,
                    target: crate::upstream::Target::Mock(mock),
                    state: Arc::new(crate::upstream::health::BackendState::new()),
                }
            })
            .collect()
    }

    #[test]
    fn a_backend_in_slow_start_gets_a_small_share_then_all_of_it() {
        let backends = backends(2);
        // Backend 1 just came back up: its ramp starts at 10% of a 60 s window.
        let policy = crate::upstream::health::CheckPolicy {
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        };
        let now = Instant::now();
        assert_eq!(backends[1].state.check(false, &policy, now), Some(false));
        assert_eq!(backends[1].state.check(true, &policy, now), Some(true));
        let names = ["mock://b0", "mock://b1"];
        for kind in [LbKind::RoundRobin, LbKind::Random, LbKind::LeastRequest] {
            let slow = Balancer::new(kind, &[1, 1], &names, 1.25, Some(Duration::from_secs(60)));
            let mut picks = [0u32; 2];
            for _ in 0..10_000 {
                picks[slow.pick(&backends, None, |_| true).unwrap()] += 1;
            }
            // Round-robin and random: 10% of its half, about 500. Least request: a tenth
            // of the weight loses every comparison at equal load.
            assert!(picks[1] < 1_000, "{kind:?}: {picks:?}");
            assert!(
                kind == LbKind::LeastRequest || picks[1] > 200,
                "{kind:?}: {picks:?}"
            );
            // Without slow start the same backend gets its half.
            let plain = Balancer::new(kind, &[1, 1], &names, 1.25, None);
            let mut picks = [0u32; 2];
            for _ in 0..10_000 {
                picks[plain.pick(&backends, None, |_| true).unwrap()] += 1;
            }
            assert!(picks[1] > 4_000, "{kind:?}: {picks:?}");
        }
    }

    #[test]
    fn every_policy_skips_what_accept_refuses() {
        let backends = backends(4);
        let names: Vec<&str> = backends.iter().map(|b| b.url.as_str()).collect();
        for kind in [
            LbKind::RoundRobin,
            LbKind::Random,
            LbKind::LeastRequest,
            LbKind::ConsistentHash,
        ] {
            let balancer = Balancer::new(kind, &[1; 4], &names, 1.25, None);
            for key in 0..200 {
                let pick = balancer.pick(&backends, Some(key), |i| i == 2);
                assert_eq!(pick, Some(2), "{kind:?}");
            }
            assert_eq!(balancer.pick(&backends, Some(1), |_| false), None);
        }
    }
}

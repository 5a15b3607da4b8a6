//! Backend choice: smooth weighted round-robin without a lock.
//!
//! The smooth WRR order (nginx's algorithm: each pick adds every weight to its backend's
//! current value, takes the largest and subtracts the total) depends only on the weights, so it
//! is computed once when the config is compiled. A pick is then one atomic increment and an
//! index into that schedule. The schedule has one slot per unit of weight after dividing the
//! weights by their common divisor; totals above [`MAX_SCHEDULE`] are scaled down first.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The longest schedule kept; larger totals are scaled to fit, keeping the ratios to within
/// one part in this many.
pub const MAX_SCHEDULE: usize = 4096;

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
        if self.schedule.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Some(usize::from(self.schedule[n % self.schedule.len()]))
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
}

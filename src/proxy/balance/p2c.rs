//! Least request by the power of two choices: two random candidates, and the one with the
//! lower cost (requests in flight per unit of weight) wins.
//!
//! Looking at two backends instead of all of them keeps a pick O(1) and avoids the herd
//! that "always the least loaded" causes when many picks see the same stale counts (Mitzenmacher,
//! "The Power of Two Choices in Randomized Load Balancing"). With two backends both are
//! always compared, so the less loaded one always wins.

use super::random;

/// Picks among `0..count` the backends that `accept` allows; `cost(i)` is the backend's
/// load per unit of weight.
pub fn pick(
    count: usize,
    accept: &dyn Fn(usize) -> bool,
    cost: impl Fn(usize) -> f64,
) -> Option<usize> {
    let first = random::uniform(count, accept)?;
    if count == 1 {
        return Some(first);
    }
    // The second is drawn among the others, so the two differ.
    let other = |k: usize| (first + 1 + k) % count;
    let second = random::uniform(count - 1, &|k| accept(other(k)))
        .map(other)
        .or_else(|| random::scan(count - 1, &|k| accept(other(k))).map(other));
    let Some(second) = second else {
        return Some(first);
    };
    Some(if cost(second) < cost(first) {
        second
    } else {
        first
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_less_loaded_of_two_always_wins() {
        let loads = [5.0, 1.0];
        for _ in 0..100 {
            assert_eq!(pick(2, &|_| true, |i| loads[i]), Some(1));
        }
        // Only one accepted: that one, whatever its load.
        assert_eq!(pick(2, &|i| i == 0, |i| loads[i]), Some(0));
        assert_eq!(pick(2, &|_| false, |i| loads[i]), None);
    }

    #[test]
    fn many_backends_spread_and_avoid_the_loaded_one() {
        let loads = [100.0, 1.0, 1.0, 1.0];
        let mut counts = [0u32; 4];
        for _ in 0..10_000 {
            counts[pick(4, &|_| true, |i| loads[i]).unwrap()] += 1;
        }
        // Backend 0 wins only when drawn twice, which cannot happen: never.
        assert_eq!(counts[0], 0, "{counts:?}");
        for c in &counts[1..] {
            assert!((2_900..3_800).contains(c), "{counts:?}");
        }
    }
}

//! Weighted random choice, and the uniform draws and scans the other policies fall back on.

/// Random draws tried before a scan.
const TRIES: usize = 8;

/// A weighted random pick: cumulative weights and a binary search.
#[derive(Debug)]
pub struct WeightedRandom {
    /// `cumulative[i]` is the sum of the weights of backends `0..=i`.
    cumulative: Box<[u64]>,
}

impl WeightedRandom {
    pub fn new(weights: &[u32]) -> WeightedRandom {
        let mut total = 0u64;
        let cumulative = weights
            .iter()
            .map(|&w| {
                total += u64::from(w);
                total
            })
            .collect();
        WeightedRandom { cumulative }
    }

    /// A backend drawn in proportion to its weight, among those `accept` allows; gives up
    /// after a few draws (the caller scans).
    pub fn pick(&self, accept: impl Fn(usize) -> bool) -> Option<usize> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        (0..TRIES)
            .map(|_| {
                let r = fastrand::u64(..total);
                self.cumulative.partition_point(|&c| c <= r)
            })
            .find(|&i| accept(i))
    }
}

/// A uniformly drawn backend of `0..count` that `accept` allows; gives up after a few draws.
pub fn uniform(count: usize, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
    if count == 0 {
        return None;
    }
    (0..TRIES)
        .map(|_| fastrand::usize(..count))
        .find(|&i| accept(i))
}

/// The first backend that `accept` allows, starting at a random index.
pub fn scan(count: usize, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
    if count == 0 {
        return None;
    }
    let start = fastrand::usize(..count);
    (0..count).map(|k| (start + k) % count).find(|&i| accept(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_follow_weights() {
        let weighted = WeightedRandom::new(&[1, 3]);
        let mut counts = [0u32; 2];
        for _ in 0..40_000 {
            counts[weighted.pick(|_| true).unwrap()] += 1;
        }
        // 10,000 and 30,000 expected; 5 standard deviations is about 430.
        assert!((9_500..10_500).contains(&counts[0]), "{counts:?}");
        assert!(weighted.pick(|i| i == 0).is_none_or(|i| i == 0));
        assert_eq!(scan(3, &|i| i == 2), Some(2));
        assert_eq!(scan(3, &|_| false), None);
    }
}

//! Token-bucket arithmetic: a level that refills at a steady rate up to a capacity.
//!
//! The level is an `f64` and the refill adds `elapsed × rate` to it exactly, so fractions of
//! a token carry over from one refill to the next: a bucket refilled every 10 ms at 1 token
//! per second gains its token after 100 refills, not never. Time is
//! [`tokio::time::Instant`], so tests can pause and advance it.
//!
//! The level may go below zero: the settlement of an LLM answer that used more tokens than
//! were reserved charges the difference, and the caller waits until the debt is refilled.

use std::time::Duration;

use tokio::time::Instant;

/// Slack when comparing a level with a cost: a level refilled in many small steps may fall
/// short of a whole token by a rounding error.
const EPSILON: f64 = 1e-9;

/// The shape of a bucket: how many tokens it holds when full and how fast it refills.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens held when full: the largest burst.
    pub capacity: f64,
    /// Tokens added per second.
    pub per_second: f64,
}

impl Rate {
    /// `amount` tokens every `per`, holding at most `burst` (at least 1).
    pub fn new(amount: u64, per: Duration, burst: u64) -> Result<Rate, String> {
        if amount == 0 {
            return Err("the amount must be at least 1".to_owned());
        }
        if per.is_zero() {
            return Err("the period must be longer than 0s".to_owned());
        }
        if burst == 0 {
            return Err("the burst must be at least 1".to_owned());
        }
        Ok(Rate {
            capacity: burst as f64,
            per_second: amount as f64 / per.as_secs_f64(),
        })
    }

    /// How long the bucket takes to gain `tokens`.
    pub fn time_for(&self, tokens: f64) -> Duration {
        if tokens <= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(tokens / self.per_second).unwrap_or(Duration::MAX)
    }
}

/// One bucket's state: its level when it was last brought up to date.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    level: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket, as a key that was never seen has.
    pub fn full(rate: &Rate, now: Instant) -> Bucket {
        Bucket {
            level: rate.capacity,
            updated: now,
        }
    }

    /// Brings the level up to `now`. A capacity lowered by a reload applies here too.
    fn refill(&mut self, rate: &Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * rate.per_second).min(rate.capacity);
        if now > self.updated {
            self.updated = now;
        }
    }

    /// Takes `cost` tokens if the bucket holds that many: `Ok(level after)`, or
    /// `Err(time until it will)`. A refused take changes nothing but the refill.
    pub fn try_take(&mut self, rate: &Rate, cost: f64, now: Instant) -> Result<f64, Duration> {
        self.refill(rate, now);
        if self.level + EPSILON >= cost {
            self.level -= cost;
            Ok(self.level)
        } else {
            Err(rate.time_for(cost - self.level))
        }
    }

    /// Charges `delta` more tokens (or, when negative, gives them back) whatever the level:
    /// the settlement of a reservation, or the undo of a take. Never above capacity; may go
    /// below zero.
    pub fn adjust(&mut self, rate: &Rate, delta: f64, now: Instant) -> f64 {
        self.refill(rate, now);
        self.level = (self.level - delta).min(rate.capacity);
        self.level
    }

    /// The level at `now`, without changing the bucket.
    pub fn level(&self, rate: &Rate, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.level + elapsed * rate.per_second).min(rate.capacity)
    }

    /// Whether the bucket is full at `now`: then it is the same as no bucket, and can go.
    pub fn is_full(&self, rate: &Rate, now: Instant) -> bool {
        self.level(rate, now) + EPSILON >= rate.capacity
    }

    /// When the bucket was last brought up to date (its last use).
    pub fn updated(&self) -> Instant {
        self.updated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate_of(amount: u64, per_secs: u64, burst: u64) -> Rate {
        Rate::new(amount, Duration::from_secs(per_secs), burst).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_allows_its_burst_then_waits_for_the_refill() {
        let rate = rate_of(2, 1, 5);
        let mut b = Bucket::full(&rate, Instant::now());
        for left in (0..5).rev() {
            assert_eq!(b.try_take(&rate, 1.0, Instant::now()), Ok(left as f64));
        }
        // Empty: one token comes in half a second at 2 per second.
        assert_eq!(
            b.try_take(&rate, 1.0, Instant::now()),
            Err(Duration::from_millis(500))
        );
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(b.try_take(&rate, 1.0, Instant::now()).is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.try_take(&rate, 1.0, Instant::now()), Ok(0.0));
        // A long pause fills it to capacity, not beyond.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(b.level(&rate, Instant::now()), 5.0);
    }

    #[tokio::test(start_paused = true)]
    async fn fractions_of_a_token_are_kept_across_refills() {
        // One token every 3 s, looked at every second: the thirds add up.
        let rate = rate_of(1, 3, 1);
        let mut b = Bucket::full(&rate, Instant::now());
        assert!(b.try_take(&rate, 1.0, Instant::now()).is_ok());
        for _ in 0..2 {
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(b.try_take(&rate, 1.0, Instant::now()).is_err());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.try_take(&rate, 1.0, Instant::now()).is_ok());

        // A refill every millisecond at 1 token per 7 s still yields the token on time.
        let rate = rate_per(1, Duration::from_secs(7));
        let mut b = Bucket::full(&rate, Instant::now());
        b.try_take(&rate, 1.0, Instant::now()).unwrap();
        let mut refused = 0;
        while b.try_take(&rate, 1.0, Instant::now()).is_err() {
            refused += 1;
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(refused, 7000);
    }

    fn rate_per(amount: u64, per: Duration) -> Rate {
        Rate::new(amount, per, amount).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_allowed_rate_over_many_requests_is_the_configured_rate() {
        // 10 per second with a burst of 10, offered 100 requests per second for a minute:
        // the burst plus 10 per second pass, within one token.
        let rate = rate_of(10, 1, 10);
        let mut b = Bucket::full(&rate, Instant::now());
        let mut allowed = 0u32;
        for _ in 0..6000 {
            if b.try_take(&rate, 1.0, Instant::now()).is_ok() {
                allowed += 1;
            }
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert!(
            (609..=611).contains(&allowed),
            "{allowed} allowed, expected 10 + 60 × 10"
        );

        // 100 per minute offered at 7 per second for 10 minutes: 100 + 10 × 100.
        let rate = rate_of(100, 60, 100);
        let mut b = Bucket::full(&rate, Instant::now());
        let mut allowed = 0u32;
        let step = Duration::from_nanos(1_000_000_000 / 7);
        let start = Instant::now();
        while Instant::now() - start < Duration::from_secs(600) {
            if b.try_take(&rate, 1.0, Instant::now()).is_ok() {
                allowed += 1;
            }
            tokio::time::advance(step).await;
        }
        assert!((1099..=1101).contains(&allowed), "{allowed} allowed");
    }

    #[tokio::test(start_paused = true)]
    async fn adjustments_refund_up_to_capacity_and_charge_into_debt() {
        let rate = rate_of(60, 60, 100);
        let now = Instant::now();
        let mut b = Bucket::full(&rate, now);
        assert_eq!(b.try_take(&rate, 80.0, now), Ok(20.0));
        // The answer used 30: 50 come back.
        assert_eq!(b.adjust(&rate, -50.0, now), 70.0);
        // A refund never overfills.
        assert_eq!(b.adjust(&rate, -500.0, now), 100.0);
        // An answer that used 150 more than reserved leaves a debt of 50 ...
        assert_eq!(b.adjust(&rate, 150.0, now), -50.0);
        assert_eq!(
            b.try_take(&rate, 1.0, now),
            Err(Duration::from_secs(51)),
            "the debt and the token are refilled at 1 per second"
        );
        // ... paid back by the refill.
        tokio::time::advance(Duration::from_secs(51)).await;
        assert_eq!(b.try_take(&rate, 1.0, Instant::now()), Ok(0.0));
        assert!(!b.is_full(&rate, Instant::now()));
        tokio::time::advance(Duration::from_secs(100)).await;
        assert!(b.is_full(&rate, Instant::now()));
    }

    #[test]
    fn rates_are_checked() {
        assert!(Rate::new(0, Duration::from_secs(1), 1).is_err());
        assert!(Rate::new(1, Duration::ZERO, 1).is_err());
        assert!(Rate::new(1, Duration::from_secs(1), 0).is_err());
        let r = Rate::new(60, Duration::from_secs(60), 60).unwrap();
        assert_eq!(r.per_second, 1.0);
        assert_eq!(r.time_for(2.5), Duration::from_millis(2500));
        assert_eq!(r.time_for(-1.0), Duration::ZERO);
    }
}

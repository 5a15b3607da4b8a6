//! When a failed attempt is tried again, and the budget that stops retry storms.
//!
//! A retry happens only before anything of the answer has reached the client: the attempt
//! loop in [`super::dispatch`] returns a response head to hyper only once it has decided to
//! keep it, so a retry after the first byte cannot happen by construction.
//!
//! # The budget
//!
//! Retries multiply load exactly when a cluster is least able to take it. Each cluster keeps
//! a sliding window ([`WINDOW`], ten one-second slots) of its requests and retries, and a
//! retry is allowed only while `retries + 1 <= ratio × requests + min_per_second × 10`
//! over that window (Finagle's and linkerd's retry budgets have the same shape). The slots
//! are atomics: counting a request is one load and one `fetch_add`; the window is summed
//! only when a retry is considered. Two threads that roll the same slot over at once may
//! lose a count between them, which a budget can afford.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

/// Seconds in the budget's window, one slot each.
pub const WINDOW: usize = 10;

/// A cluster's retry policy.
#[derive(Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retry.
    pub attempts: u32,
    /// Answers that are tried again on another backend (a 429 also moves to the next
    /// provider key when the cluster has keys).
    pub on_status: Vec<StatusCode>,
    /// Bounds each attempt's wait for its response head; `None`: only the cluster's
    /// timeouts apply.
    pub per_try_timeout: Option<Duration>,
    pub budget: RetryBudget,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            on_status: vec![
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::TOO_MANY_REQUESTS,
            ],
            per_try_timeout: None,
            budget: RetryBudget::new(0.2, 3),
        }
    }
}

impl RetryPolicy {
    /// Whether an answer with `status` is tried again.
    pub fn retries_status(&self, status: StatusCode) -> bool {
        self.on_status.contains(&status)
    }
}

/// A sliding-window ratio of retries to requests.
#[derive(Debug)]
pub struct RetryBudget {
    /// Retries allowed per request, as a fraction.
    ratio: f64,
    /// Retries per second allowed whatever the traffic, so that a quiet cluster can retry.
    min_per_second: u32,
    base: Instant,
    slots: [Slot; WINDOW],
}

#[derive(Debug, Default)]
struct Slot {
    /// The second (since `base`) this slot counts; a slot of an older second is stale.
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget {
            ratio,
            min_per_second,
            base: Instant::now(),
            slots: Default::default(),
        }
    }

    /// The fraction of requests that may be retried.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// The retries per second allowed whatever the traffic.
    pub fn min_per_second(&self) -> u32 {
        self.min_per_second
    }

    /// The current second, counted from 1 so that a fresh slot (0) is stale.
    fn second(&self) -> u64 {
        self.base.elapsed().as_secs() + 1
    }

    /// The slot of `second`, emptied first if it still counts an older second.
    fn slot(&self, second: u64) -> &Slot {
        let slot = &self.slots[(second % WINDOW as u64) as usize];
        let seen = slot.second.load(Ordering::Acquire);
        if seen != second
            && slot
                .second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
        }
        slot
    }

    /// Counts a request (its first attempt).
    pub fn request(&self) {
        self.slot(self.second())
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn try_retry(&self) -> bool {
        let now = self.second();
        let (mut requests, mut retries) = (0u64, 0u64);
        for slot in &self.slots {
            let second = slot.second.load(Ordering::Acquire);
            if second + (WINDOW as u64) > now && second <= now {
                requests += slot.requests.load(Ordering::Relaxed);
                retries += slot.retries.load(Ordering::Relaxed);
            }
        }
        let allowed = self.ratio * requests as f64 + f64::from(self.min_per_second) * WINDOW as f64;
        if (retries + 1) as f64 > allowed {
            return false;
        }
        self.slot(now).retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// The length a `Retry-After` (seconds or an HTTP date) or `retry-after-ms` asks for.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms.min(1e12) / 1000.0));
    }
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_share_of_requests_over_the_window() {
        let budget = RetryBudget::new(0.1, 0);
        assert!(!budget.try_retry(), "no requests, no retries");
        for _ in 0..9 {
            budget.request();
        }
        assert!(!budget.try_retry(), "0.9 of a retry is not one");
        budget.request();
        assert!(budget.try_retry());
        assert!(!budget.try_retry(), "the one retry is spent");
        for _ in 0..20 {
            budget.request();
        }
        assert!(budget.try_retry());
        assert!(budget.try_retry());
        assert!(!budget.try_retry());

        // Ten seconds later the window has forgotten them.
        tokio::time::advance(Duration::from_secs(WINDOW as u64)).await;
        assert!(!budget.try_retry());
        for _ in 0..10 {
            budget.request();
        }
        assert!(budget.try_retry());
    }

    #[tokio::test(start_paused = true)]
    async fn a_minimum_allows_retries_on_a_quiet_cluster() {
        let budget = RetryBudget::new(0.0, 1);
        for _ in 0..WINDOW {
            assert!(budget.try_retry());
        }
        assert!(!budget.try_retry());
        tokio::time::advance(Duration::from_secs(WINDOW as u64 - 1)).await;
        assert!(!budget.try_retry(), "still in the window");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(budget.try_retry(), "the retries left the window");
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_milliseconds() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
    }
}

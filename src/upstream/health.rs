//! What sluice knows of one backend's health and load, kept where a reload can carry it.
//!
//! A [`BackendState`] lives in an `Arc` that the backend's `HttpBackend` owns (and that the
//! snapshot's `Backend` shares), so a reload that keeps an unchanged backend's `HttpBackend`
//! keeps its health, ejection backoff and in-flight count too. It holds state only: the
//! thresholds and durations come from the cluster's config ([`OutlierPolicy`],
//! [`CheckPolicy`]) at each call, so a reload that changes them applies at once.
//!
//! Everything is an atomic: the request path reads health and load without a lock. Times are
//! milliseconds since the state was created, on tokio's clock (paused in tests).
//!
//! # What makes a backend unhealthy
//!
//! - **Active checks** ([`crate::upstream::check`]): `unhealthy_threshold` failed checks in a
//!   row mark it down, `healthy_threshold` good ones mark it up again.
//! - **Passive outlier detection**: `consecutive_failures` connect failures, timeouts or 5xx
//!   answers in a row eject it for `base_ejection`; each further ejection doubles that, up to
//!   `max_ejection`. After an ejection the backend is on probation: its next result decides,
//!   a failure ejects it again at once (for twice as long), a success clears the backoff.
//! - **Retry-After**: a 429 or 503 that carries `Retry-After` pauses it for that long (at
//!   most `max_ejection`).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Passive outlier detection of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Failures in a row that eject a backend; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// The first ejection's length; each further one doubles it.
    pub base_ejection: Duration,
    /// The longest ejection, and the longest pause a `Retry-After` can ask for.
    pub max_ejection: Duration,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        OutlierPolicy {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(300),
        }
    }
}

/// The thresholds of a cluster's active checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckPolicy {
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// A cluster's cap on requests in flight per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    pub max_in_flight: u32,
    /// Requests that may wait for a slot; beyond, 503 at once.
    pub max_queue: u32,
    /// Longest wait for a slot; then 503.
    pub queue_timeout: Duration,
}

/// Why a backend is not picked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down {
    /// Failed its active checks.
    Check,
    /// Ejected by passive outlier detection, for this long still.
    Ejected(Duration),
    /// Paused by a `Retry-After`, for this long still.
    Paused(Duration),
}

/// One backend's health and load.
#[derive(Debug)]
pub struct BackendState {
    base: Instant,
    /// Requests forwarded whose response has not ended (streams count until their end).
    in_flight: AtomicU32,
    /// Requests waiting for a slot under the cluster's `max_in_flight`.
    queued: AtomicU32,
    /// Wakes a queued request when a slot frees.
    released: Notify,
    check_down: AtomicBool,
    /// Active check results in a row that disagree with the current state.
    check_streak: AtomicU32,
    /// When the backend last came back up (active checks or the end of an ejection), for
    /// slow start; 0: never went down.
    up_since: AtomicU64,
    failures: AtomicU32,
    /// Ejections in a row without a success between them: the backoff exponent.
    ejections: AtomicU32,
    ejected_until: AtomicU64,
    paused_until: AtomicU64,
}

impl Default for BackendState {
    fn default() -> Self {
        BackendState::new()
    }
}

impl BackendState {
    pub fn new() -> BackendState {
        BackendState {
            base: Instant::now(),
            in_flight: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            released: Notify::new(),
            check_down: AtomicBool::new(false),
            check_streak: AtomicU32::new(0),
            up_since: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            paused_until: AtomicU64::new(0),
        }
    }

    /// Milliseconds since this state was created, plus 1: 0 means "never".
    fn now_ms(&self, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(self.base).as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX).saturating_add(1)
    }

    /// Whether the backend may be picked now.
    pub fn is_healthy(&self, now: Instant) -> bool {
        self.down(now).is_none()
    }

    /// Whether the backend may be picked now, reading the clock only when it was ejected
    /// or paused at some point (the request path's check: three relaxed loads otherwise).
    pub fn healthy(&self) -> bool {
        if self.check_down.load(Ordering::Relaxed) {
            return false;
        }
        if self.ejected_until.load(Ordering::Relaxed) == 0
            && self.paused_until.load(Ordering::Relaxed) == 0
        {
            return true;
        }
        self.is_healthy(Instant::now())
    }

    /// Why the backend is not picked now; `None` when it is healthy.
    pub fn down(&self, now: Instant) -> Option<Down> {
        if self.check_down.load(Ordering::Relaxed) {
            return Some(Down::Check);
        }
        let ejected = self.ejected_until.load(Ordering::Relaxed);
        let paused = self.paused_until.load(Ordering::Relaxed);
        if ejected == 0 && paused == 0 {
            return None;
        }
        let now = self.now_ms(now);
        if ejected > now {
            return Some(Down::Ejected(Duration::from_millis(ejected - now)));
        }
        if paused > now {
            return Some(Down::Paused(Duration::from_millis(paused - now)));
        }
        None
    }

    /// The share of its normal traffic that a backend in slow start gets: from 0.1 just
    /// after it came back up to 1.0 once `window` has passed.
    pub fn slow_start(&self, window: Duration, now: Instant) -> f64 {
        let up = self
            .up_since
            .load(Ordering::Relaxed)
            .max(self.ejected_until.load(Ordering::Relaxed));
        if up == 0 || window.is_zero() {
            return 1.0;
        }
        let now = self.now_ms(now);
        if now < up {
            // Still ejected: a pick only happens in panic mode.
            return 1.0;
        }
        let elapsed = Duration::from_millis(now - up);
        (elapsed.as_secs_f64() / window.as_secs_f64()).clamp(0.1, 1.0)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests queued now.
    pub fn queued(&self) -> u32 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            state: Arc::clone(self),
        }
    }

    /// Takes a slot under `max` requests in flight, if one is free.
    pub fn try_begin(self: &Arc<Self>, max: u32) -> Option<InFlight> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlight {
                state: Arc::clone(self),
            })
    }

    /// Waits for a slot under `max` requests in flight, in a queue of at most `queue`
    /// waiters, until `deadline`. `Err` when the queue is full or the deadline passed.
    pub async fn begin_queued(
        self: &Arc<Self>,
        max: u32,
        queue: u32,
        deadline: Instant,
    ) -> Result<InFlight, Refused> {
        if let Some(slot) = self.try_begin(max) {
            return Ok(slot);
        }
        let joined = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < queue).then_some(n + 1)
            });
        if joined.is_err() {
            return Err(Refused::QueueFull);
        }
        let _leave = Queued(self);
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before the check, so a release in between is not missed.
            released.as_mut().enable();
            if let Some(slot) = self.try_begin(max) {
                return Ok(slot);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(Refused::Timeout);
            }
        }
    }

    /// Counts a failed exchange (connect failure, timeout, 5xx); `Some` with the ejection's
    /// length when this failure ejects the backend.
    pub fn failure(&self, policy: &OutlierPolicy, now: Instant) -> Option<Duration> {
        if policy.consecutive_failures == 0 {
            return None;
        }
        let now_ms = self.now_ms(now);
        let ejections = self.ejections.load(Ordering::Acquire);
        let ejected_until = self.ejected_until.load(Ordering::Acquire);
        if ejected_until > now_ms {
            // Already out: a request that was in flight when it was ejected.
            return None;
        }
        let on_probation = ejections > 0;
        if !on_probation {
            let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
            if failures < policy.consecutive_failures {
                return None;
            }
        }
        // One ejection per episode, however many requests fail at once.
        if self
            .ejections
            .compare_exchange(
                ejections,
                ejections + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return None;
        }
        self.failures.store(0, Ordering::Release);
        let length = backoff(policy, ejections);
        let until = now_ms.saturating_add(u64::try_from(length.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until.store(until, Ordering::Release);
        Some(length)
    }

    /// Counts a good exchange: clears the failure streak and, after an ejection, the backoff.
    pub fn success(&self) {
        // Loads first: the common case writes nothing, so the line is not bounced between
        // cores.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// Pauses the backend for `for_how_long` (a `Retry-After`), at most `max`.
    pub fn pause(&self, for_how_long: Duration, max: Duration, now: Instant) {
        let length = for_how_long.min(max);
        let until = self
            .now_ms(now)
            .saturating_add(u64::try_from(length.as_millis()).unwrap_or(u64::MAX));
        self.paused_until.fetch_max(until, Ordering::AcqRel);
    }

    /// Counts one active check; `Some(healthy)` when it changes the backend's state.
    pub fn check(&self, ok: bool, policy: &CheckPolicy, now: Instant) -> Option<bool> {
        let down = self.check_down.load(Ordering::Acquire);
        if ok != down {
            // The result agrees with the state: the streak of disagreements ends.
            self.check_streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.check_streak.fetch_add(1, Ordering::AcqRel) + 1;
        let threshold = if down {
            policy.healthy_threshold
        } else {
            policy.unhealthy_threshold
        };
        if streak < threshold.max(1) {
            return None;
        }
        self.check_streak.store(0, Ordering::Relaxed);
        self.check_down.store(!ok, Ordering::Release);
        if ok {
            self.up_since.store(self.now_ms(now), Ordering::Relaxed);
        }
        Some(ok)
    }
}

/// The length of ejection number `previous + 1`: `base × 2^previous`, at most `max`.
fn backoff(policy: &OutlierPolicy, previous: u32) -> Duration {
    let factor = 1u32.checked_shl(previous.min(31)).unwrap_or(u32::MAX);
    policy
        .base_ejection
        .checked_mul(factor)
        .unwrap_or(policy.max_ejection)
        .min(policy.max_ejection)
}

/// Why a request got no slot under the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    QueueFull,
    Timeout,
}

/// One request in flight on a backend; dropping it (at the end of the response body)
/// frees the slot and wakes a queued request.
#[derive(Debug)]
pub struct InFlight {
    state: Arc<BackendState>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.state.released.notify_one();
    }
}

/// Leaves the queue when the waiting request gets a slot, times out or is dropped.
struct Queued<'a>(&'a BackendState);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;

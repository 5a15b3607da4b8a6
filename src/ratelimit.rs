//! Rate limits: token buckets for requests and LLM tokens, and in-flight caps, kept in this
//! process or shared through Redis.
//!
//! The definitions ([`Limit`]) are part of the dynamic config and live in the snapshot; the
//! state (buckets, in-flight counts, the Redis connection) lives in the [`Limiter`], which
//! the proxy owns for the life of the process. A reload therefore keeps every bucket: a
//! limit that keeps its name keeps its buckets, and a changed capacity or rate applies to
//! them from the next decision on.
//!
//! # One decision
//!
//! [`Limiter::admit`] sees every limit that applies to a request (the route's, then the
//! consumer's) and admits the request only if all of them do:
//!
//! 1. In-flight caps and local buckets, in order. Each takes at once; a refusal undoes what
//!    the earlier ones took (take-with-rollback). A limit is never exceeded, even by
//!    requests racing on one bucket; the price is that a request racing with one that is
//!    about to be refused may see the tokens that are about to come back as taken.
//! 2. Redis buckets, all in one script call that checks every bucket and then charges all
//!    or none. A refusal undoes step 1.
//! 3. If Redis cannot answer, each Redis limit follows its `on_redis_error`: `open` decides
//!    with a local bucket of the same shape, `closed` refuses with 503.
//!
//! # Tokens
//!
//! A token limit reserves an estimate ([`limit::Estimate`]) before the request is forwarded
//! and is settled to the real usage when the answer ends ([`Admission::settle`], called from
//! the request's `Record` when it is dropped). An estimate above a bucket's capacity takes
//! the whole capacity, so a large request waits for a full bucket instead of never passing.
//! A request already admitted is never cut: a stream that uses more than it reserved
//! overshoots the limit, and the bucket goes into debt that later requests wait out.

pub mod bucket;
pub mod key;
pub mod limit;
pub mod local;
pub mod metrics;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::watch;

pub use limit::{Backend, Estimate, Kind, Limit, OnRedisError};

use bucket::Rate;
use key::KeyValues;
use local::LocalStore;
use metrics::AccessMetrics;
use redis::{Answer, Item, RedisBackend, RedisSettings};

/// `[ratelimit]` in runtime form: the local store's bounds.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Most buckets held in this process.
    pub max_keys: usize,
    /// How often buckets that refilled to capacity are dropped.
    pub sweep_interval: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            max_keys: 100_000,
            sweep_interval: Duration::from_secs(10),
        }
    }
}

/// The state of every limit: local buckets, in-flight counts, the Redis connection.
#[derive(Debug)]
pub struct Limiter {
    local: LocalStore,
    redis: Option<RedisBackend>,
    metrics: AccessMetrics,
    sweep_interval: Duration,
}

/// What a decision needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub values: KeyValues<'a>,
    /// Bytes of the request body, for the token estimate.
    pub body_len: usize,
    /// The output tokens the request asks for at most.
    pub max_output: Option<u64>,
    /// A WebSocket handshake: only request limits apply (a tunnel has no token usage, and
    /// its handshake answer ends at once).
    pub upgrade: bool,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A limit has no room: 429.
    Limited {
        limit: String,
        /// `requests`, `tokens` or `concurrency`.
        kind: &'static str,
        retry_after: Duration,
    },
    /// Redis cannot answer and the limit fails closed: 503.
    Unavailable {
        limit: String,
        retry_after: Duration,
    },
}

/// A decision and the `x-ratelimit-*` headers that describe it.
#[derive(Debug)]
pub struct Decision {
    pub outcome: Result<Admission, Refusal>,
    pub headers: RateHeaders,
}

/// Where a request's tokens were taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Local,
    Redis,
}

/// Tokens taken from one bucket.
#[derive(Debug)]
struct Taken {
    limit: Arc<Limit>,
    key: Vec<u8>,
    rate: Rate,
    cost: f64,
    place: Place,
}

/// An admitted request's hold on its limits: the tokens to settle and the in-flight slots,
/// released when it is dropped (at the end of the answer's body).
#[derive(Debug)]
pub struct Admission {
    limiter: Arc<Limiter>,
    taken: Vec<Taken>,
    slots: Vec<Vec<u8>>,
}

impl Limiter {
    /// A limiter with an empty local store and, when `[redis]` is set, a Redis connection
    /// made on first use. Must run inside the tokio runtime when `redis` is set.
    pub fn new(
        store: &StoreSettings,
        redis: Option<&RedisSettings>,
        metrics: AccessMetrics,
    ) -> Result<Limiter, String> {
        let redis = match redis {
            Some(settings) => Some(RedisBackend::new(settings.clone(), metrics.clone())?),
            None => None,
        };
        Ok(Limiter {
            local: LocalStore::new(store.max_keys, metrics.store.clone()),
            redis,
            metrics,
            sweep_interval: store.sweep_interval,
        })
    }

    /// The local buckets (for tests and benchmarks).
    pub fn local(&self) -> &LocalStore {
        &self.local
    }

    /// The auth and rate-limit metrics.
    pub fn metrics(&self) -> &AccessMetrics {
        &self.metrics
    }

    /// Takes `cost` from `limit`'s local bucket for `key` and notes its level in `headers`;
    /// a refusal gives the wait until there is room.
    fn take_local(
        &self,
        limit: &Arc<Limit>,
        key: Vec<u8>,
        rate: Rate,
        cost: f64,
        headers: &mut RateHeaders,
    ) -> Result<Taken, Duration> {
        match self.local.try_take(&key, rate, cost) {
            Ok(level) => {
                headers.see(limit, &rate, level);
                Ok(Taken {
                    limit: Arc::clone(limit),
                    key,
                    rate,
                    cost,
                    place: Place::Local,
                })
            }
            Err(wait) => {
                let level = self.local.level(&key).unwrap_or(rate.capacity);
                headers.see(limit, &rate, level);
                Err(wait)
            }
        }
    }

    /// Decides whether `ask` passes every one of `limits`, and takes what it costs if so.
    pub async fn admit(self: &Arc<Self>, limits: &[&Arc<Limit>], ask: &Ask<'_>) -> Decision {
        let mut admission = Admission {
            limiter: Arc::clone(self),
            taken: Vec::with_capacity(limits.len()),
            slots: Vec::new(),
        };
        let mut headers = RateHeaders::default();
        let mut remote: Vec<(&Arc<Limit>, Vec<u8>, Rate, f64)> = Vec::new();

        for &limit in limits {
            if ask.upgrade && !matches!(limit.kind, Kind::Requests(_)) {
                continue;
            }
            let key = key::build(&limit.name, &limit.key, &ask.values);
            let (rate, cost) = match &limit.kind {
                Kind::Concurrent(max) => {
                    if !self.local.acquire(&key, *max) {
                        limit.decisions.limited.inc();
                        return refuse(admission, headers, limited(limit, Duration::from_secs(1)));
                    }
                    admission.slots.push(key);
                    continue;
                }
                Kind::Requests(rate) => (*rate, 1.0),
                Kind::Tokens(rate, estimate) => (
                    *rate,
                    estimate
                        .tokens(ask.body_len, ask.max_output)
                        .min(rate.capacity),
                ),
            };
            if let Backend::Redis(_) = limit.backend {
                if self.redis.is_some() {
                    remote.push((limit, key, rate, cost));
                    continue;
                }
            }
            let taken = self.take_local(limit, key, rate, cost, &mut headers);
            match taken {
                Ok(taken) => admission.taken.push(taken),
                Err(wait) => {
                    limit.decisions.limited.inc();
                    return refuse(admission, headers, limited(limit, wait));
                }
            }
        }

        let mut fallback: Vec<&Arc<Limit>> = Vec::new();
        if let (false, Some(redis)) = (remote.is_empty(), &self.redis) {
            let items: Vec<Item<'_>> = remote
                .iter()
                .map(|(_, key, rate, cost)| Item {
                    key,
                    rate: *rate,
                    cost: *cost,
                })
                .collect();
            match redis.take(&items).await {
                Ok(Answer::Taken(levels)) => {
                    for ((limit, key, rate, cost), level) in remote.into_iter().zip(levels) {
                        headers.see(limit, &rate, level);
                        admission.taken.push(Taken {
                            limit: Arc::clone(limit),
                            key,
                            rate,
                            cost,
                            place: Place::Redis,
                        });
                    }
                }
                Ok(Answer::Refused { index, level, wait }) => {
                    let (limit, _, rate, _) = &remote[index];
                    limit.decisions.limited.inc();
                    headers.see(limit, rate, level);
                    return refuse(admission, headers, limited(limit, wait));
                }
                Err(failure) => {
                    tracing::debug!(error = %failure, "rate limits: Redis could not decide");
                    if let Some((limit, ..)) = remote
                        .iter()
                        .find(|(l, ..)| l.backend == Backend::Redis(OnRedisError::Closed))
                    {
                        limit.decisions.unavailable.inc();
                        let refusal = Refusal::Unavailable {
                            limit: limit.name.clone(),
                            retry_after: Duration::from_secs(1),
                        };
                        return refuse(admission, headers, refusal);
                    }
                    // Every Redis limit fails open: each decides with its local bucket.
                    for (limit, key, rate, cost) in remote {
                        match self.take_local(limit, key, rate, cost, &mut headers) {
                            Ok(taken) => {
                                fallback.push(limit);
                                admission.taken.push(taken);
                            }
                            Err(wait) => {
                                limit.decisions.fallback_limited.inc();
                                return refuse(admission, headers, limited(limit, wait));
                            }
                        }
                    }
                }
            }
        }

        for &limit in limits {
            if ask.upgrade && !matches!(limit.kind, Kind::Requests(_)) {
                continue;
            }
            if fallback.iter().any(|f| Arc::ptr_eq(f, limit)) {
                limit.decisions.fallback_allowed.inc();
            } else {
                limit.decisions.allowed.inc();
            }
        }
        Decision {
            outcome: Ok(admission),
            headers,
        }
    }

    /// Drops the local buckets that refilled to capacity every `sweep_interval`, until
    /// `stop` fires.
    pub async fn sweep_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = crate::listener::stopped(&mut stop) => return,
            }
            self.local.sweep();
        }
    }
}

fn limited(limit: &Limit, wait: Duration) -> Refusal {
    Refusal::Limited {
        limit: limit.name.clone(),
        kind: limit.kind_name(),
        retry_after: wait,
    }
}

/// Undoes what `admission` took and returns the refusal.
fn refuse(mut admission: Admission, headers: RateHeaders, refusal: Refusal) -> Decision {
    for taken in admission.taken.drain(..).rev() {
        let cost = taken.cost;
        admission.limiter.give_back(taken, -cost);
    }
    // Dropping the admission releases its in-flight slots.
    Decision {
        outcome: Err(refusal),
        headers,
    }
}

impl Limiter {
    /// Charges `delta` more tokens to the bucket `taken` came from (a negative delta gives
    /// them back). Redis adjustments run in a task of their own, so this never waits.
    fn give_back(self: &Arc<Self>, taken: Taken, delta: f64) {
        if delta == 0.0 {
            return;
        }
        match taken.place {
            Place::Local => {
                self.local.adjust(&taken.key, taken.rate, delta);
            }
            Place::Redis => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let limiter = Arc::clone(self);
                runtime.spawn(async move {
                    let Some(redis) = &limiter.redis else {
                        return;
                    };
                    let item = Item {
                        key: &taken.key,
                        rate: taken.rate,
                        cost: delta,
                    };
                    if let Err(err) = redis.adjust(&[item]).await {
                        tracing::debug!(limit = %taken.limit.name, error = %err,
                            "rate limits: a token settlement did not reach Redis");
                    }
                });
            }
        }
    }
}

impl Admission {
    /// Settles the token limits to what the answer used: `used` tokens (prompt and output)
    /// when the answer reported them. Without a report, an answer from the upstream
    /// (`answered`) keeps its estimate, and a request sluice answered itself (an error before
    /// or instead of the upstream's answer) gives it back.
    pub fn settle(mut self, used: Option<u64>, answered: bool) {
        for taken in std::mem::take(&mut self.taken) {
            if !matches!(taken.limit.kind, Kind::Tokens(..)) {
                continue;
            }
            let actual = match (used, answered) {
                (Some(used), _) => used as f64,
                (None, true) => taken.cost,
                (None, false) => 0.0,
            };
            let delta = actual - taken.cost;
            self.limiter.give_back(taken, delta);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        for key in &self.slots {
            self.limiter.local.release(key);
        }
    }
}

/// The `x-ratelimit-*` headers of an answer: for requests and for tokens, the limit with the
/// least room left among those the request passed.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateHeaders {
    requests: Option<Shown>,
    tokens: Option<Shown>,
}

/// One limit as the headers show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shown {
    /// The bucket's capacity.
    pub limit: u64,
    /// Whole tokens left (never below 0).
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
}

static LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
static REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
static RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
static LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
static REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
static RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

impl RateHeaders {
    /// Notes `limit` at `level`; keeps the one with the least room of its kind.
    fn see(&mut self, limit: &Limit, rate: &Rate, level: f64) {
        let shown = Shown {
            limit: rate.capacity as u64,
            remaining: level.max(0.0).floor() as u64,
            reset: rate.time_for(rate.capacity - level),
        };
        let slot = match limit.kind {
            Kind::Requests(_) => &mut self.requests,
            Kind::Tokens(..) => &mut self.tokens,
            Kind::Concurrent(_) => return,
        };
        if slot.is_none_or(|s| shown.remaining < s.remaining) {
            *slot = Some(shown);
        }
    }

    /// The request limit shown, if any.
    pub fn requests(&self) -> Option<Shown> {
        self.requests
    }

    /// The token limit shown, if any.
    pub fn tokens(&self) -> Option<Shown> {
        self.tokens
    }

    /// Sets the headers on an answer.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let names = [
            (
                self.requests,
                [&LIMIT_REQUESTS, &REMAINING_REQUESTS, &RESET_REQUESTS],
            ),
            (
                self.tokens,
                [&LIMIT_TOKENS, &REMAINING_TOKENS, &RESET_TOKENS],
            ),
        ];
        for (shown, [limit, remaining, reset]) in names {
            let Some(shown) = shown else { continue };
            headers.insert(limit.clone(), HeaderValue::from(shown.limit));
            headers.insert(remaining.clone(), HeaderValue::from(shown.remaining));
            if let Ok(value) = HeaderValue::from_str(&format_reset(shown.reset)) {
                headers.insert(reset.clone(), value);
            }
        }
    }
}

/// A duration as OpenAI writes its reset headers: `250ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`.
pub fn format_reset(d: Duration) -> String {
    let millis = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    if millis < 1000 {
        return if millis == 0 {
            "0s".to_owned()
        } else {
            format!("{millis}ms")
        };
    }
    let (hours, rest) = (millis / 3_600_000, millis % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let seconds = if rest % 1000 == 0 {
        format!("{}s", rest / 1000)
    } else {
        let text = format!("{}.{:03}", rest / 1000, rest % 1000);
        format!("{}s", text.trim_end_matches('0'))
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

#[cfg(test)]
mod tests;

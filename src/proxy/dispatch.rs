//! Sending a routed request upstream: choose the cluster (the route's split, then its
//! fallbacks), pick a healthy backend, take a concurrency slot, rewrite the model and the
//! credentials for that cluster, forward, and try again on another backend while the
//! cluster's retry policy and budget allow.
//!
//! # Attempts
//!
//! ```text
//! for cluster in [split pick, fallbacks...]:
//!     for attempt in 1..=retry.attempts:
//!         pick a backend not tried yet: healthy, with room under max_in_flight
//!             none healthy → next cluster (the last cluster's panic_mode decides)
//!         take a slot (queue up to queue_timeout) → refused: 503 backend_overloaded
//!         forward within per_try_timeout
//!         connect failure, refused stream, per-try timeout, retry.on_status → next attempt
//!         anything else → the answer
//! ```
//!
//! The response head goes back to the client only once this loop has decided to keep it,
//! so nothing is retried after a byte of the answer has been sent. Only a body held in
//! memory ([`Outgoing::Held`]) can be sent twice; a streamed one gets a single attempt.
//!
//! Every attempt feeds passive health: connect failures, timeouts and 5xx answers count
//! against the backend, anything else clears its streak; a 429 or 503 with `Retry-After`
//! pauses it (or, for a cluster with provider keys, a 429 rests the key instead).

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use smallvec::SmallVec;
use tokio::time::Instant;

use super::forward::{self, Downstream};
use super::record::Entry;
use super::retry::retry_after;
use super::route::Matched;
use crate::body::{self, Body};
use crate::config::file::PanicMode;
use crate::config::snapshot::{Cluster, Route};
use crate::error::ProxyError;
use crate::llm::models::replace_model;
use crate::proxy::balance::hash::HashOn;
use crate::upstream::health::{InFlight, Refused};
use crate::upstream::metrics::RetryReason;

/// What a route's clusters need of the request body beyond forwarding it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// A model rewrite may apply.
    pub rewrite: bool,
    /// It may be sent more than once: retries or fallbacks.
    pub resend: bool,
    /// A cluster hashes the prompt.
    pub prompt: bool,
}

impl Needs {
    pub fn of(route: &Route) -> Needs {
        let mut needs = Needs {
            rewrite: !route.model_rewrite.is_empty(),
            resend: route.targets.len() > route.split_len,
            prompt: false,
        };
        for target in &route.targets {
            let cluster = &target.cluster;
            needs.rewrite |= !cluster.model_rewrite.is_empty();
            needs.resend |= cluster.retry.attempts > 1;
            needs.prompt |= matches!(cluster.hash_on, Some(HashOn::Prompt(_)));
        }
        needs
    }

    /// Whether the body must be read before forwarding.
    pub fn read(&self) -> bool {
        self.rewrite || self.resend || self.prompt
    }
}

/// The request body as it will be sent.
pub enum Outgoing {
    /// In memory: it can be rewritten and sent again.
    Held {
        bytes: Bytes,
        /// The client's model and where its JSON string is in `bytes`.
        model: Option<(Arc<str>, Range<usize>)>,
        /// Where the prompt is in `bytes`.
        prompt: Option<Range<usize>>,
    },
    /// Streamed: sent once.
    Once(Option<Body>),
}

/// A routed request, ready to be sent.
pub struct Call<'a> {
    pub route: &'a Route,
    pub matched: Matched,
    /// The request head; moved into the last possible attempt, cloned for the others.
    pub head: Parts,
    pub body: Outgoing,
    pub downstream: Downstream<'a>,
}

/// One attempt's outcome.
type Outcome = Result<Response<Body>, ProxyError>;

/// Sends `call` upstream and returns the answer to keep.
pub async fn send(call: Call<'_>, record: &mut Entry) -> Result<Response<Body>, ProxyError> {
    let Call {
        route,
        matched,
        head,
        body: mut outgoing,
        downstream,
    } = call;
    let first = match &route.split {
        Some(split) => split.pick().unwrap_or(0),
        None => 0,
    };
    // The split's pick, then the fallbacks in order.
    let fallbacks = route.split_len..route.targets.len();
    let clusters = 1 + fallbacks.len();
    let resendable = matches!(outgoing, Outgoing::Held { .. });
    let mut head = Some(head);
    let mut last: Option<Outcome> = None;
    for (position, target) in std::iter::once(first).chain(fallbacks).enumerate() {
        // A streamed body can go to one backend only; until it has gone, it can go anywhere.
        let sent = record.attempts > 0;
        if sent && !resendable {
            break;
        }
        let more_clusters = position + 1 < clusters && (resendable || !sent);
        let cluster = &route.targets[target].cluster;
        if position > 0 {
            cluster.handles.fallback(&route.name);
            tracing::debug!(route = %route.name, cluster = %cluster.name, "falling back");
        }
        let attempts = if resendable {
            cluster.retry.attempts
        } else {
            1
        };
        cluster.retry.budget.request();
        let key = hash_key(
            cluster,
            &head,
            &downstream,
            record.consumer.as_deref(),
            &outgoing,
        );
        let body = cluster_body(route, cluster, &outgoing);
        // Inline up to four backends: most requests make one attempt, and none allocates.
        let mut tried: SmallVec<[usize; 4]> = SmallVec::new();
        let mut throttled_keys: Vec<usize> = Vec::new();
        // The last attempt got a 429 that rested its key: the same backend may be asked
        // again with the next key.
        let mut rotate = false;
        let mut attempt = 0;
        while attempt < attempts {
            let index = match (pick(cluster, &tried, key), tried.last()) {
                (Some(index), _) => index,
                (None, Some(&previous)) if rotate => previous,
                (None, Some(_)) => break,
                (None, None) if more_clusters => break,
                (None, None) => match panic_pick(cluster, key) {
                    Some(index) => index,
                    None => {
                        last.get_or_insert(Err(ProxyError::NoHealthyBackend {
                            cluster: cluster.name.clone(),
                        }));
                        break;
                    }
                },
            };
            // A retry only once there is somewhere to send it, so no budget is wasted.
            if attempt > 0 && !cluster.retry.budget.try_retry() {
                cluster.handles.budget_exhausted.inc();
                tracing::debug!(cluster = %cluster.name, "retry budget spent");
                break;
            }
            attempt += 1;
            let key_index = match &cluster.credentials {
                None => None,
                Some(keys) => match keys.pick(&throttled_keys) {
                    Some(k) => Some(k),
                    // Every key got a 429: the last answer stands.
                    None => break,
                },
            };
            if !tried.contains(&index) {
                tried.push(index);
            }
            record.target = target;
            record.cluster = Some(Arc::clone(cluster));
            record.backend = Some(index);
            record.attempts += 1;
            record.in_flight = None;
            let last_chance = !more_clusters && attempt == attempts;
            let one = Attempt {
                route,
                cluster,
                index,
                key_index,
                matched,
                downstream: &downstream,
            };
            let outcome = one
                .run(&mut head, last_chance, &mut outgoing, body.as_ref(), record)
                .await;
            let (outcome, retry) = judge(cluster, index, key_index, outcome);
            rotate = false;
            if let (Ok(response), Some(k)) = (&outcome, key_index) {
                if response.status() == StatusCode::TOO_MANY_REQUESTS {
                    throttled_keys.push(k);
                    rotate = true;
                }
            }
            match retry {
                Some(reason) if attempt < attempts || (more_clusters && resendable) => {
                    cluster.handles.retry(reason);
                    tracing::debug!(
                        cluster = %cluster.name,
                        backend = %cluster.backends[index].url,
                        ?reason,
                        "attempt failed; trying again"
                    );
                    last = Some(outcome);
                }
                _ => return finish(outcome, record),
            }
        }
    }
    finish(
        last.unwrap_or_else(|| {
            Err(ProxyError::NoHealthyBackend {
                cluster: route.cluster.name.clone(),
            })
        }),
        record,
    )
}

/// Keeps the slot of the attempt whose answer is returned until that answer ends.
fn finish(outcome: Outcome, record: &mut Entry) -> Outcome {
    if outcome.is_err() {
        record.in_flight = None;
    }
    outcome
}

/// The body bytes for `cluster`: the route's then the cluster's model rewrite applied.
fn cluster_body(route: &Route, cluster: &Cluster, body: &Outgoing) -> Option<Bytes> {
    let Outgoing::Held { bytes, model, .. } = body else {
        return None;
    };
    let Some((model, span)) = model else {
        return Some(bytes.clone());
    };
    let public = route.model_rewrite.apply(Cow::Borrowed(&**model));
    let backend = cluster.model_rewrite.apply(public);
    if *backend == **model {
        return Some(bytes.clone());
    }
    Some(replace_model(bytes, span.clone(), &backend))
}

/// The request's consistent-hash key for `cluster`.
fn hash_key(
    cluster: &Cluster,
    head: &Option<Parts>,
    downstream: &Downstream,
    consumer: Option<&str>,
    body: &Outgoing,
) -> Option<u64> {
    let on = cluster.hash_on.as_ref()?;
    let head = head.as_ref()?;
    let prompt = match body {
        Outgoing::Held {
            bytes,
            prompt: Some(span),
            ..
        } => Some(bytes.slice(span.clone())),
        _ => None,
    };
    let client = downstream.client.as_bytes();
    on.key(&head.headers, client, consumer, prompt.as_ref())
}

/// A healthy backend not tried yet, preferring one with room under the concurrency cap.
fn pick(cluster: &Cluster, tried: &[usize], key: Option<u64>) -> Option<usize> {
    let backends = &cluster.backends;
    let healthy = |i: usize| !tried.contains(&i) && backends[i].state.healthy();
    match cluster.concurrency {
        None => cluster.balancer.pick(backends, key, healthy),
        Some(cap) => {
            let room = |i: usize| backends[i].state.in_flight() < cap.max_in_flight;
            cluster
                .balancer
                .pick(backends, key, |i| healthy(i) && room(i))
                .or_else(|| cluster.balancer.pick(backends, key, healthy))
        }
    }
}

/// With no healthy backend: any backend under `try_all`, none under `fail`.
fn panic_pick(cluster: &Cluster, key: Option<u64>) -> Option<usize> {
    match cluster.panic_mode {
        PanicMode::TryAll => {
            tracing::warn!(cluster = %cluster.name, "no healthy backend; trying them all");
            cluster.balancer.pick(&cluster.backends, key, |_| true)
        }
        PanicMode::Fail => None,
    }
}

/// One attempt on one backend.
struct Attempt<'a> {
    route: &'a Route,
    cluster: &'a Cluster,
    index: usize,
    key_index: Option<usize>,
    matched: Matched,
    downstream: &'a Downstream<'a>,
}

impl Attempt<'_> {
    /// A slot, the request, the answer's head. `last_chance`: no attempt can follow, so
    /// the head is moved rather than copied.
    async fn run(
        &self,
        head: &mut Option<Parts>,
        last_chance: bool,
        outgoing: &mut Outgoing,
        body: Option<&Bytes>,
        record: &mut Entry,
    ) -> Outcome {
        let (route, cluster) = (self.route, self.cluster);
        let backend = &cluster.backends[self.index];
        let slot = take_slot(cluster, self.index).await?;
        record.in_flight = Some(slot);
        let parts = match (last_chance, head.as_ref()) {
            (true, _) | (false, None) => head.take(),
            (false, Some(parts)) => Some(clone_head(parts)),
        };
        let Some(mut parts) = parts else {
            return Err(ProxyError::BadRequest(
                "the request cannot be sent again".to_owned(),
            ));
        };
        let body = match (body, outgoing) {
            (Some(bytes), _) => {
                // Usually the client's own Content-Length still holds: no rewrite, no edit.
                let declared = parts.headers.get(header::CONTENT_LENGTH);
                let holds = declared
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok())
                    == Some(bytes.len());
                if !holds && (!bytes.is_empty() || declared.is_some()) {
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                }
                body::full(bytes.clone())
            }
            (None, Outgoing::Once(once)) => once.take().unwrap_or_else(body::empty),
            (None, Outgoing::Held { bytes, .. }) => body::full(bytes.clone()),
        };
        let mut req = Request::from_parts(parts, body);
        forward::prepare(&mut req, route, self.matched, backend, self.downstream)?;
        if let (Some(keys), Some(k)) = (&cluster.credentials, self.key_index) {
            keys.apply(k, req.headers_mut());
        }
        let deadline = route.timeouts.total.map(|t| record.started + t);
        let sent_at = Instant::now();
        let sent = forward::send(&route.timeouts, backend, req, deadline);
        let outcome = match cluster.retry.per_try_timeout {
            None => sent.await,
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(outcome) => outcome,
                Err(_) => Err(ProxyError::PerTryTimeout(limit)),
            },
        };
        let upstream_time = sent_at.elapsed();
        record.upstream_time = Some(upstream_time);
        cluster
            .metrics
            .upstream_duration
            .observe(upstream_time.as_secs_f64());
        outcome
    }
}

/// A slot on backend `index` under the cluster's cap (waiting in its queue), or a 503.
async fn take_slot(cluster: &Cluster, index: usize) -> Result<InFlight, ProxyError> {
    let state = &cluster.backends[index].state;
    let Some(cap) = cluster.concurrency else {
        return Ok(state.begin());
    };
    let deadline = Instant::now() + cap.queue_timeout;
    match state
        .begin_queued(cap.max_in_flight, cap.max_queue, deadline)
        .await
    {
        Ok(slot) => Ok(slot),
        Err(refused) => {
            cluster.handles.overloaded.inc();
            tracing::debug!(cluster = %cluster.name, ?refused, "backend at its concurrency cap");
            let wait = match refused {
                Refused::QueueFull => 1,
                Refused::Timeout => cap.queue_timeout.as_secs().max(1),
            };
            Err(ProxyError::BackendOverloaded {
                cluster: cluster.name.clone(),
                retry_after: wait,
            })
        }
    }
}

/// A copy of the request head for one attempt (extensions are not forwarded upstream).
fn clone_head(parts: &Parts) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.into_parts().0
}

/// Counts a failed exchange against backend `index` of `cluster`, ejecting it when the
/// failures in a row reach the cluster's threshold.
pub fn backend_failed(cluster: &Cluster, index: usize, now: Instant) {
    let backend = &cluster.backends[index];
    if let Some(length) = backend.state.failure(&cluster.outlier, now) {
        cluster.handles.ejected(&backend.url);
        tracing::warn!(
            cluster = %cluster.name,
            backend = %backend.url,
            ejected_for = ?length,
            "backend ejected after failing in a row"
        );
    }
}

/// Feeds the outcome to passive health and the key pool, and says whether to try again.
fn judge(
    cluster: &Cluster,
    index: usize,
    key_index: Option<usize>,
    outcome: Outcome,
) -> (Outcome, Option<RetryReason>) {
    let state = &cluster.backends[index].state;
    let now = Instant::now();
    let failed = || backend_failed(cluster, index, now);
    let reason = match &outcome {
        Ok(response) => {
            let status = response.status();
            // Only these two statuses pause a backend or rest a key: no header lookup for
            // the others.
            let throttled = matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            );
            let wait = throttled.then(|| retry_after(response.headers())).flatten();
            match (status, &cluster.credentials, key_index) {
                (StatusCode::TOO_MANY_REQUESTS, Some(keys), Some(k)) => {
                    // The provider limits the key, not the backend.
                    keys.throttled(k, wait);
                    cluster.handles.key_rotations.inc();
                }
                (StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE, _, _)
                    if wait.is_some() =>
                {
                    let wait = wait.unwrap_or_default();
                    state.pause(wait, cluster.outlier.max_ejection, now);
                }
                _ => {}
            }
            // A good head is not yet a good exchange: the backend's success is counted when
            // the answer ends whole (`record`), so a stream that dies after its head counts
            // against it instead.
            if status.is_server_error() {
                failed();
            }
            cluster
                .retry
                .retries_status(status)
                .then_some(RetryReason::Status)
        }
        Err(err) => match err {
            ProxyError::Connect(_) | ProxyError::ConnectTimeout(_) | ProxyError::UpstreamTls(_) => {
                failed();
                Some(RetryReason::Connect)
            }
            ProxyError::PerTryTimeout(_) => {
                failed();
                Some(RetryReason::Timeout)
            }
            ProxyError::RefusedStream(_) => Some(RetryReason::RefusedStream),
            ProxyError::BackendOverloaded { .. } => Some(RetryReason::Overloaded),
            ProxyError::ResponseHeaderTimeout(_) | ProxyError::Upstream(_) => {
                failed();
                None
            }
            _ => None,
        },
    };
    (outcome, reason)
}

//! One request's accounting: what is learnt at each stage, counted and logged exactly once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Uri};
use tokio::time::Instant;

use crate::config::snapshot::Cluster;
use crate::config::Snapshot;
use crate::llm::metrics::Finished;
use crate::llm::tap::LlmTap;
use crate::metrics::Metrics;
use crate::ratelimit::{Admission, RateHeaders};
use crate::upstream::health::InFlight;

/// The status logged for a request whose client left before the response head, as nginx
/// logs it.
pub const CLIENT_CLOSED: u16 = 499;

/// Created when a request arrives; finished when dropped: at the end of the response body,
/// or earlier if the client goes away before the response head (then logged as 499).
#[derive(Debug)]
pub struct Record {
    pub snapshot: Arc<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub access_log: bool,
    pub entry: Entry,
}

/// What is learnt about a request as it passes the stages.
#[derive(Debug)]
pub struct Entry {
    pub started: Instant,
    pub request_id: Option<HeaderValue>,
    pub peer: SocketAddr,
    /// The subject of the client's verified TLS certificate, if any.
    pub client_subject: Option<HeaderValue>,
    pub method: Method,
    pub uri: Uri,
    pub route: Option<usize>,
    /// The route's cluster that served it: an index into `Route::targets` (0 until a
    /// split or a fallback says otherwise).
    pub target: usize,
    /// That cluster, once one was tried.
    pub cluster: Option<Arc<Cluster>>,
    /// The backend of `cluster` that answered (or was tried last).
    pub backend: Option<usize>,
    /// Upstream attempts made: more than 1 after retries or fallbacks.
    pub attempts: u32,
    /// The answering backend's in-flight slot, freed when this record is dropped (at the
    /// end of the response body), so open streams count as load.
    pub in_flight: Option<InFlight>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Time from forwarding to the upstream's response head.
    pub upstream_time: Option<Duration>,
    /// The error `code` when sluice answered with an error of its own.
    pub error: Option<&'static str>,
    /// How it ended: `complete`, `client_gone`, `upstream_error`, `first_byte_timeout`,
    /// `idle_timeout`, `total_timeout`.
    pub outcome: &'static str,
    /// Set on LLM requests.
    pub llm: Option<Box<LlmEntry>>,
    /// The consumer named by the request's API key.
    pub consumer: Option<Arc<str>>,
    /// What the route's rate limits decided, on routes with limits. Boxed: most requests
    /// have none, and the entry lives as long as the answer's body (an SSE stream's).
    pub limited: Option<Box<Limited>>,
}

/// A rate-limited request's decision.
#[derive(Debug)]
pub struct Limited {
    /// The request's hold on its rate limits, once admitted: settled and released when the
    /// record is dropped.
    pub admission: Option<Admission>,
    /// The `x-ratelimit-*` headers for the answer.
    pub headers: RateHeaders,
}

/// What an LLM request asked for and what its answer reported.
#[derive(Debug, Default)]
pub struct LlmEntry {
    pub model: Option<Arc<str>>,
    /// sluice added `stream_options.include_usage` to the request.
    pub usage_injected: bool,
    /// The request's `max_completion_tokens`, `max_tokens` or `max_output_tokens`.
    pub max_output_tokens: Option<u64>,
    /// Observations of the answer; `None` until there is one.
    pub tap: Option<LlmTap>,
}

impl Drop for Record {
    fn drop(&mut self) {
        // Token limits settle first, so that once a request is counted its usage is too.
        let admission = self.entry.limited.as_mut().and_then(|l| l.admission.take());
        if let Some(admission) = admission {
            let tap = self.entry.llm.as_deref().and_then(|l| l.tap.as_ref());
            let used = tap
                .and_then(|t| t.usage)
                .map(|u| u.input + u.output.unwrap_or(0));
            admission.settle(used, self.entry.error.is_none());
        }
        let entry = &self.entry;
        // Passive health, for what only the answer's end tells: a whole answer is a good
        // exchange; one the backend cut, or let stall, is a failed one.
        if let (Some(cluster), Some(index)) = (&entry.cluster, entry.backend) {
            match entry.outcome {
                "complete" if entry.error.is_none() && entry.status < 500 => {
                    cluster.backends[index].state.success();
                }
                "upstream_error" | "first_byte_timeout" | "idle_timeout" => {
                    super::dispatch::backend_failed(cluster, index, Instant::now());
                }
                _ => {}
            }
        }
        let elapsed = entry.started.elapsed();
        let route = entry.route.and_then(|i| self.snapshot.routes.get(i));
        let route_metrics = route.map_or(&self.snapshot.unmatched, |r| {
            r.targets
                .get(entry.target)
                .map_or(&r.metrics, |t| &t.metrics)
        });
        route_metrics.count(entry.status);
        route_metrics.duration.observe(elapsed.as_secs_f64());
        self.metrics.in_flight.dec();
        let route_name = route.map_or("", |r| r.name.as_str());
        let llm = entry.llm.as_deref();
        let tap = llm.and_then(|l| l.tap.as_ref());
        if let (Some(llm), Some(tap)) = (llm, tap) {
            if tap.streamed {
                self.metrics.llm.active_streams.dec();
            }
            self.metrics.llm.record(&Finished {
                route: route_name,
                model: llm.model.as_deref(),
                tap,
                duration: elapsed.as_secs_f64(),
                started: entry.started,
                outcome: entry.outcome,
            });
        }
        if !self.access_log {
            return;
        }
        let cluster = entry.cluster.as_ref().or(route.map(|r| &r.cluster));
        let backend = cluster
            .zip(entry.backend)
            .and_then(|(c, i)| c.backends.get(i))
            .map_or("", |b| b.url.as_str());
        let usage = tap.and_then(|t| t.usage);
        tracing::info!(
            target: "sluice::access",
            request_id = entry.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
            client = %entry.peer,
            client_subject = entry.client_subject.as_ref().and_then(|v| v.to_str().ok()),
            consumer = entry.consumer.as_deref(),
            method = %entry.method,
            path = entry.uri.path(),
            route = route_name,
            cluster = cluster.map_or("", |c| c.name.as_str()),
            backend,
            status = entry.status,
            bytes_in = entry.bytes_in,
            bytes_out = entry.bytes_out,
            duration_ms = millis(elapsed),
            upstream_ms = entry.upstream_time.map(millis),
            error = entry.error,
            outcome = entry.outcome,
            attempts = entry.attempts,
            model = llm.and_then(|l| l.model.as_deref()),
            stream = tap.map(|t| t.streamed),
            prompt_tokens = usage.map(|u| u.input),
            completion_tokens = usage.and_then(|u| u.output),
            ttft_ms = tap
                .and_then(|t| t.first_token)
                .map(|first| millis(first.saturating_duration_since(entry.started))),
            tpot_ms = tap.and_then(LlmTap::time_per_output_token).map(millis),
            finish_reason = tap.and_then(|t| t.finish_reason.as_deref()),
        );
    }
}

/// Milliseconds with microsecond precision, for log lines.
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

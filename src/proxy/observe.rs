//! The end of a request: the response body is watched as it streams, and when it ends (or
//! is dropped because the client left) the request is counted and logged once.
//!
//! The same wrapper enforces what is left of the total timeout on the body, so a stalled
//! upstream cannot hold a client forever.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::body::{Body, BoxError};
use crate::config::Snapshot;
use crate::error::ProxyError;
use crate::metrics::Metrics;

/// One request's accounting: created when the request arrives, finished (counted and
/// logged) exactly once when it is dropped: at the end of the response body, or earlier if
/// the client goes away before the response head (then it is logged as 499, as nginx does).
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
    pub backend: Option<usize>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Time from forwarding to the upstream's response head.
    pub upstream_time: Option<Duration>,
    /// The error `code` when sluice answered with an error of its own.
    pub error: Option<&'static str>,
    /// How it ended: `complete`, `client_gone`, `upstream_error`, `total_timeout`.
    pub outcome: &'static str,
}

/// The status logged for a request whose client left before the response head, as nginx
/// logs it.
pub const CLIENT_CLOSED: u16 = 499;

impl Drop for Record {
    fn drop(&mut self) {
        let entry = &self.entry;
        let elapsed = entry.started.elapsed();
        let route = entry.route.and_then(|i| self.snapshot.routes.get(i));
        let route_metrics = route.map_or(&self.snapshot.unmatched, |r| &r.metrics);
        route_metrics.count(entry.status);
        route_metrics.duration.observe(elapsed.as_secs_f64());
        self.metrics.in_flight.dec();
        if !self.access_log {
            return;
        }
        let cluster = route.map(|r| &r.cluster);
        let backend = cluster
            .zip(entry.backend)
            .and_then(|(c, i)| c.backends.get(i))
            .map_or("", |b| b.url.as_str());
        tracing::info!(
            target: "sluice::access",
            request_id = entry.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
            client = %entry.peer,
            client_subject = entry.client_subject.as_ref().and_then(|v| v.to_str().ok()),
            method = %entry.method,
            path = entry.uri.path(),
            route = route.map_or("", |r| r.name.as_str()),
            cluster = cluster.map_or("", |c| c.name.as_str()),
            backend,
            status = entry.status,
            bytes_in = entry.bytes_in,
            bytes_out = entry.bytes_out,
            duration_ms = millis(elapsed),
            upstream_ms = entry.upstream_time.map(millis),
            error = entry.error,
            outcome = entry.outcome,
        );
    }
}

/// Milliseconds with microsecond precision, for log lines.
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

pin_project! {
    /// A response body that counts its bytes, ends at the total deadline, and owns the
    /// request's [`Record`], which is finished when the body is dropped.
    pub struct Observed {
        #[pin]
        inner: Body,
        record: Record,
        deadline: Option<Instant>,
        total: Duration,
        // Created on the first wait only: bodies that are ready at once never touch the timer.
        sleep: Option<Pin<Box<Sleep>>>,
        done: bool,
    }

    impl PinnedDrop for Observed {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let entry = &mut this.record.entry;
            if !*this.done && !this.inner.is_end_stream() && entry.outcome == "complete" {
                entry.outcome = "client_gone";
            }
        }
    }
}

impl Observed {
    /// Watches `inner`; `deadline` ends the body with an error if it is still streaming then.
    pub fn new(inner: Body, record: Record, deadline: Option<Instant>, total: Duration) -> Self {
        Observed {
            inner,
            record,
            deadline,
            total,
            sleep: None,
            done: false,
        }
    }
}

impl HttpBody for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.record.entry.bytes_out += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                *this.done = true;
                this.record.entry.outcome = "upstream_error";
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                *this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let Some(deadline) = *this.deadline else {
                    return Poll::Pending;
                };
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        *this.done = true;
                        this.record.entry.outcome = "total_timeout";
                        Poll::Ready(Some(Err(Box::new(ProxyError::TotalTimeout(*this.total)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

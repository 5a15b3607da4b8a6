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

/// Everything known about one request, filled in as it passes the stages.
#[derive(Debug)]
pub struct Record {
    pub snapshot: Arc<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub access_log: bool,
    pub started: Instant,
    pub request_id: Option<HeaderValue>,
    pub peer: SocketAddr,
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
    /// How the response body ended: `complete`, `client_gone`, `upstream_error`, `total_timeout`.
    pub outcome: &'static str,
}

impl Record {
    /// Counts and logs the request. Called once, when the response body is finished with.
    fn finish(&self) {
        let elapsed = self.started.elapsed();
        let route = self.route.and_then(|i| self.snapshot.routes.get(i));
        let route_metrics = route.map_or(&self.snapshot.unmatched, |r| &r.metrics);
        route_metrics.count(self.status);
        route_metrics.duration.observe(elapsed.as_secs_f64());
        self.metrics.in_flight.dec();
        if !self.access_log {
            return;
        }
        let cluster = route.map(|r| &r.cluster);
        let backend = cluster
            .zip(self.backend)
            .and_then(|(c, i)| c.backends.get(i))
            .map_or("", |b| b.url.as_str());
        tracing::info!(
            target: "sluice::access",
            request_id = self.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
            client = %self.peer,
            method = %self.method,
            path = self.uri.path(),
            route = route.map_or("", |r| r.name.as_str()),
            cluster = cluster.map_or("", |c| c.name.as_str()),
            backend,
            status = self.status,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            duration_ms = millis(elapsed),
            upstream_ms = self.upstream_time.map(millis),
            error = self.error,
            outcome = self.outcome,
        );
    }
}

/// Milliseconds with microsecond precision, for log lines.
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

pin_project! {
    /// A response body that counts its bytes, ends at the total deadline, and finishes its
    /// [`Record`] when it ends or is dropped.
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
            if !*this.done && !this.inner.is_end_stream() && this.record.outcome == "complete" {
                this.record.outcome = "client_gone";
            }
            this.record.finish();
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
                    this.record.bytes_out += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                *this.done = true;
                this.record.outcome = "upstream_error";
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
                        this.record.outcome = "total_timeout";
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

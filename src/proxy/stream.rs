//! The response on its way back: forwarded frame by frame as it arrives, never buffered,
//! while this wrapper counts bytes, feeds the LLM tap, enforces the stream timeouts and
//! owns the request's [`Record`] until the body is done.
//!
//! # Timeouts
//!
//! - `first_byte`: from the response head to the first body byte (an LLM's first token);
//! - `idle`: between two body chunks (between tokens);
//! - `total`: the whole exchange, from the request's arrival.
//!
//! A timer is armed only when the upstream has nothing ready, so a body that is ready at
//! once never touches the timer wheel. Between tokens the idle deadline moves forward with
//! every chunk, but the timer is not moved with it: when it fires early, it is set again for
//! the deadline as it stands then. A stream of many chunks then re-registers its timer once
//! per idle period rather than once per chunk. Expiry ends the body with an error: over HTTP/1.1
//! the connection closes without the final chunk, over HTTP/2 the stream is reset, so the
//! client never mistakes a cut stream for a complete one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::record::Record;
use crate::body::{Body, BoxError};
use crate::config::snapshot::Timeouts;
use crate::error::ProxyError;
use crate::llm::strip::UsageStrip;

/// Which timer is armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    FirstByte,
    Idle,
    Total,
}

/// How the body behaves beyond plain forwarding.
#[derive(Debug, Default)]
pub struct StreamOptions {
    /// Drop the usage chunk that sluice asked for on the client's behalf.
    pub strip_usage: bool,
    /// Send an SSE `error` event before cutting a failed stream.
    pub error_event: bool,
}

pin_project! {
    /// The response body sent to the client.
    pub struct Observed {
        #[pin]
        inner: Body,
        record: Record,
        // The route's first-byte and idle timeouts; its total one is `total_deadline`.
        first_byte: Option<Duration>,
        idle: Option<Duration>,
        total_deadline: Option<Instant>,
        sleep: Option<Pin<Box<Sleep>>>,
        // When the armed timer expires and what it stands for (the sleep may be set earlier).
        armed: Option<(Instant, Expiry)>,
        // Data arrived since the timer was last armed.
        progressed: bool,
        seen_data: bool,
        strip: Option<UsageStrip>,
        error_event: bool,
        // The bytes forwarded so far end between two events (kept only with `error_event`).
        at_boundary: bool,
        // The error to end with, once what came before it has been flushed.
        pending_error: Option<BoxError>,
        flushed: bool,
        done: bool,
    }

    impl PinnedDrop for Observed {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let entry = &mut this.record.entry;
            if !*this.done && !this.inner.is_end_stream() && entry.outcome == "complete" {
                entry.outcome = "client_gone";
            }
            if let Some(llm) = entry.llm.as_deref_mut() {
                if let Some(tap) = llm.tap.as_mut() {
                    tap.finish();
                }
            }
        }
    }
}

impl Observed {
    /// Watches `inner`, which answers the request of `record`.
    pub fn new(inner: Body, record: Record, timeouts: Timeouts, options: StreamOptions) -> Self {
        let total_deadline = timeouts.total.map(|t| record.entry.started + t);
        Observed {
            inner,
            record,
            first_byte: timeouts.first_byte,
            idle: timeouts.idle,
            total_deadline,
            sleep: None,
            armed: None,
            progressed: false,
            seen_data: false,
            strip: options.strip_usage.then(UsageStrip::default),
            error_event: options.error_event,
            at_boundary: true,
            pending_error: None,
            flushed: false,
            done: false,
        }
    }
}

impl HttpBody for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            let this = self.as_mut().project();
            if this.pending_error.is_some() {
                // hyper drops what it has not written yet when a body fails, so first give
                // it one turn to flush the frames (and the error event) already handed over.
                if !*this.flushed {
                    *this.flushed = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                *this.done = true;
                return Poll::Ready(this.pending_error.take().map(Err));
            }
            if *this.done {
                return Poll::Ready(None);
            }
            let frame = match this.inner.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(err))) => {
                    let failed = self
                        .as_mut()
                        .fail("upstream_error", "upstream_stream_error", err);
                    if let Some(event) = failed {
                        return Poll::Ready(Some(Ok(event)));
                    }
                    continue;
                }
                Poll::Ready(None) => {
                    *this.done = true;
                    if let Some(tail) = this.strip.as_mut().and_then(UsageStrip::flush) {
                        this.record.entry.bytes_out += tail.len() as u64;
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => return self.wait(cx),
            };
            *this.progressed = true;
            *this.seen_data = true;
            let Some(data) = frame.data_ref() else {
                return Poll::Ready(Some(Ok(frame)));
            };
            if let Some(tap) = this
                .record
                .entry
                .llm
                .as_deref_mut()
                .and_then(|l| l.tap.as_mut())
            {
                tap.observe(data);
            }
            let data = match this.strip.as_mut() {
                None => return self.forward(frame),
                Some(strip) => match strip.filter(data) {
                    Some(kept) => kept,
                    // Everything held back: nothing to send yet.
                    None => continue,
                },
            };
            return self.forward(Frame::data(data));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending_error.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.strip.is_some() {
            return SizeHint::default();
        }
        self.inner.size_hint()
    }
}

impl Observed {
    fn forward(
        self: Pin<&mut Self>,
        frame: Frame<Bytes>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(data) = frame.data_ref() {
            this.record.entry.bytes_out += data.len() as u64;
            if *this.error_event {
                *this.at_boundary = data.ends_with(b"\n\n") || data.ends_with(b"\r\r");
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    /// Nothing ready upstream: arms the right timer and waits on it.
    fn wait(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.as_mut().project();
        if *this.progressed || this.armed.is_none() {
            *this.progressed = false;
            let now = Instant::now();
            let (gap, kind) = if *this.seen_data {
                (*this.idle, Expiry::Idle)
            } else {
                (*this.first_byte, Expiry::FirstByte)
            };
            let mut next = gap.map(|gap| (now + gap, kind));
            if let Some(total) = *this.total_deadline {
                if next.is_none_or(|(at, _)| total <= at) {
                    next = Some((total, Expiry::Total));
                }
            }
            let Some((at, kind)) = next else {
                (*this.armed, *this.sleep) = (None, None);
                return Poll::Pending;
            };
            match this.sleep.as_mut() {
                // An earlier sleep is kept: it is set again when it fires (below).
                Some(sleep) if sleep.deadline() <= at => {}
                Some(sleep) => sleep.as_mut().reset(at),
                None => *this.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            *this.armed = Some((at, kind));
        }
        let Some(sleep) = this.sleep.as_mut() else {
            return Poll::Pending;
        };
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            match *this.armed {
                Some((at, _)) if sleep.deadline() < at => sleep.as_mut().reset(at),
                _ => break,
            }
        }
        let (outcome, err) = match this.armed.map_or(Expiry::Total, |(_, kind)| kind) {
            Expiry::FirstByte => (
                "first_byte_timeout",
                ProxyError::FirstByteTimeout(this.first_byte.unwrap_or_default()),
            ),
            Expiry::Idle => (
                "idle_timeout",
                ProxyError::IdleTimeout(this.idle.unwrap_or_default()),
            ),
            Expiry::Total => {
                let started = this.record.entry.started;
                let total = this.total_deadline.map(|at| at - started);
                (
                    "total_timeout",
                    ProxyError::TotalTimeout(total.unwrap_or_default()),
                )
            }
        };
        let code = err.class().code;
        match self.as_mut().fail(outcome, code, Box::new(err)) {
            Some(event) => Poll::Ready(Some(Ok(event))),
            None => self.poll_frame(cx),
        }
    }

    /// Ends the body with `err` once the frames before it are flushed; returns the SSE
    /// error event to send first when the route asks for one.
    fn fail(
        self: Pin<&mut Self>,
        outcome: &'static str,
        code: &'static str,
        err: BoxError,
    ) -> Option<Frame<Bytes>> {
        let this = self.project();
        this.record.entry.outcome = outcome;
        let streamed = this
            .record
            .entry
            .llm
            .as_deref()
            .and_then(|l| l.tap.as_ref())
            .is_some_and(|t| t.streamed);
        let event = (*this.error_event && streamed)
            .then(|| error_event(code, &err.to_string(), *this.at_boundary));
        *this.pending_error = Some(err);
        let event = event?;
        this.record.entry.bytes_out += event.len() as u64;
        Some(Frame::data(event))
    }
}

/// `event: error` with an OpenAI-style error object as its data. When the upstream stopped
/// in the middle of an event, a blank line ends that event first, so the error event is
/// read on its own.
fn error_event(code: &str, message: &str, at_boundary: bool) -> Bytes {
    let error = serde_json::json!({
        "error": { "message": message, "type": "upstream_error", "code": code }
    });
    let separator = if at_boundary { "" } else { "\n\n" };
    Bytes::from(format!("{separator}event: error\ndata: {error}\n\n"))
}

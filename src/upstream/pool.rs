//! Idle connections of one backend, and the response body that returns its connection.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use tokio::time::Instant;

use super::HttpBackend;
use crate::body::{Body, BoxError};

/// A backend's idle HTTP/1.1 connections (a bounded lock-free queue, oldest first) and its
/// shared HTTP/2 connection.
#[derive(Debug)]
pub struct Pool {
    /// `None` when `pool_max_idle_per_host` is 0: every request gets a new connection.
    idle: Option<ArrayQueue<Idle>>,
    idle_timeout: Option<Duration>,
    h2: ArcSwapOption<http2::SendRequest<Body>>,
}

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

impl Pool {
    /// A pool keeping at most `max_idle` idle connections.
    pub fn new(max_idle: usize, idle_timeout: Option<Duration>) -> Pool {
        Pool {
            idle: (max_idle > 0).then(|| ArrayQueue::new(max_idle)),
            idle_timeout,
            h2: ArcSwapOption::empty(),
        }
    }

    /// An idle connection that is still open and not past the idle timeout.
    pub fn checkout(&self) -> Option<http1::SendRequest<Body>> {
        let queue = self.idle.as_ref()?;
        while let Some(idle) = queue.pop() {
            if !idle.sender.is_closed() && !self.expired(&idle) {
                return Some(idle.sender);
            }
        }
        None
    }

    /// Puts a connection whose last response has been read back; a full pool closes it.
    pub fn checkin(&self, sender: http1::SendRequest<Body>) {
        if let Some(queue) = self.idle.as_ref().filter(|_| !sender.is_closed()) {
            let _ = queue.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes idle connections that are closed or past the idle timeout.
    pub fn sweep(&self) {
        let Some(queue) = self.idle.as_ref() else {
            return;
        };
        for _ in 0..queue.len() {
            let Some(idle) = queue.pop() else { break };
            if !idle.sender.is_closed() && !self.expired(&idle) {
                let _ = queue.push(idle);
            }
        }
    }

    fn expired(&self, idle: &Idle) -> bool {
        self.idle_timeout
            .is_some_and(|timeout| idle.since.elapsed() >= timeout)
    }

    /// The shared HTTP/2 connection, if one is open.
    pub fn shared_h2(&self) -> Option<http2::SendRequest<Body>> {
        let guard = self.h2.load();
        guard
            .as_ref()
            .filter(|sender| !sender.is_closed())
            .map(|sender| http2::SendRequest::clone(sender))
    }

    /// Makes `sender` the shared HTTP/2 connection.
    pub fn set_shared_h2(&self, sender: http2::SendRequest<Body>) {
        self.h2.store(Some(Arc::new(sender)));
    }
}

/// A response body that returns its HTTP/1.1 connection to the pool once it has been read
/// to the end. Dropped early, it closes the connection instead (the rest of the response
/// would still be on the wire).
pub struct PooledBody {
    inner: Incoming,
    conn: Option<(http1::SendRequest<Body>, Arc<HttpBackend>)>,
}

impl PooledBody {
    /// Wraps `response`; an empty body returns the connection at once.
    pub fn wrap(
        response: Response<Incoming>,
        sender: http1::SendRequest<Body>,
        backend: &Arc<HttpBackend>,
    ) -> Response<Body> {
        response.map(|inner| {
            let mut body = PooledBody {
                inner,
                conn: Some((sender, Arc::clone(backend))),
            };
            if body.inner.is_end_stream() {
                body.release();
            }
            Body::new(body)
        })
    }

    fn release(&mut self) {
        if let Some((sender, backend)) = self.conn.take() {
            backend.pool.checkin(sender);
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

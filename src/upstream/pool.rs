//! Idle connections of one backend. A response body puts its HTTP/1.1 connection back once
//! it has been read to the end ([`super::h1::body`]).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use hyper::client::conn::http2;
use tokio::time::Instant;

use super::h1::H1Conn;
use crate::body::Body;

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
    conn: H1Conn,
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
    pub fn checkout(&self) -> Option<H1Conn> {
        let queue = self.idle.as_ref()?;
        while let Some(mut idle) = queue.pop() {
            if !self.expired(&idle) && idle.conn.is_reusable() {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Puts a connection whose last response has been read back; a full pool closes it.
    pub fn checkin(&self, conn: H1Conn) {
        if let Some(queue) = self.idle.as_ref() {
            let _ = queue.push(Idle {
                conn,
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
            let Some(mut idle) = queue.pop() else { break };
            if !self.expired(&idle) && idle.conn.is_reusable() {
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

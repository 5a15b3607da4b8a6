//! A response body read from its HTTP/1.1 connection as the client pulls it.
//!
//! It owns the connection: read to its end, the body puts the connection back in the
//! backend's pool (if the backend keeps it open); dropped early, or failed, it closes it,
//! since the rest of the response would still be on the wire.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::head::Framing;
use super::H1Conn;
use crate::body::BoxError;
use crate::upstream::HttpBackend;
use crate::wire::chunked::{Chunked, Step};

/// What is left to read.
#[derive(Debug)]
enum Left {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

/// The body of a response on an HTTP/1.1 connection.
#[derive(Debug)]
pub struct H1Body {
    /// `None` once the body is done; the connection went back to the pool or was closed.
    conn: Option<H1Conn>,
    left: Left,
    keep_alive: bool,
    backend: Arc<HttpBackend>,
}

/// The backend closed the connection before the body's end.
#[derive(Debug, thiserror::Error)]
#[error("the backend closed the connection before the end of the body")]
struct Truncated;

impl H1Body {
    pub fn new(
        conn: H1Conn,
        framing: Framing,
        keep_alive: bool,
        backend: &Arc<HttpBackend>,
    ) -> H1Body {
        let left = match framing {
            Framing::Empty | Framing::Length(0) => Left::Done,
            Framing::Length(length) => Left::Length(length),
            Framing::Chunked => Left::Chunked(Chunked::Size),
            Framing::Close => Left::UntilClose,
        };
        let mut body = H1Body {
            conn: Some(conn),
            left,
            keep_alive,
            backend: Arc::clone(backend),
        };
        if matches!(body.left, Left::Done) {
            body.finish();
        }
        body
    }

    /// The body was read to its end: the connection goes back to the pool if it is clean.
    fn finish(&mut self) {
        self.left = Left::Done;
        if let Some(mut conn) = self.conn.take() {
            // Bytes past the end of the response mean the backend cannot be trusted with
            // the next request on this connection.
            if self.keep_alive && conn.buf.is_empty() {
                conn.shrink();
                self.backend.pool.checkin(conn);
            }
        }
    }

    fn fail(&mut self, err: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.left = Left::Done;
        self.conn = None;
        Poll::Ready(Some(Err(err)))
    }

    /// Takes the next piece of body out of the buffer, if the buffer holds one.
    fn next_data(&mut self) -> Result<Option<Bytes>, BoxError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let buffered = conn.buf.len();
        let data = match &mut self.left {
            Left::Done => None,
            Left::Length(_) | Left::UntilClose if buffered == 0 => None,
            Left::Length(left) => {
                let take = usize::try_from(*left).map_or(buffered, |left| left.min(buffered));
                *left -= take as u64;
                Some(conn.buf.split_to(take).freeze())
            }
            Left::UntilClose => Some(conn.buf.split().freeze()),
            Left::Chunked(state) => match state.step(&mut conn.buf)? {
                Step::Data(data) => Some(data),
                Step::End => {
                    self.left = Left::Length(0);
                    None
                }
                Step::More => None,
            },
        };
        conn.shrink();
        if matches!(self.left, Left::Length(0)) {
            self.finish();
        }
        Ok(data)
    }
}

impl HttpBody for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match this.next_data() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) => {}
                Err(err) => return this.fail(err),
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.left, Left::UntilClose) => {
                    this.left = Left::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Box::new(Truncated)),
                Ok(_) => {}
                Err(err) => return this.fail(Box::new(err)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.left, Left::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Left::Length(left) => SizeHint::with_exact(left),
            Left::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

//! A client's request body, read from its connection as the proxy pulls it.
//!
//! The body takes the connection's [`Reader`] for as long as it is being read and hands it
//! back through a [`Slot`] the moment its last byte is read, so the connection can read the
//! next request while the answer to this one is still streaming. A body dropped before its
//! end hands the reader back unfinished: the connection then closes after its answer, since
//! the rest of the body is still on the wire.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::reader::Reader;
use crate::wire::chunked::{Chunked, Step};

/// The go-ahead to a client that sent `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Where a body returns the connection's reader: with `true` once it was read to the end.
pub type Slot = Arc<Mutex<Option<(Reader, bool)>>>;

/// What is left to read.
#[derive(Debug)]
enum Left {
    Length(u64),
    Chunked(Chunked),
}

/// The body of a request on an HTTP/1.1 connection.
#[derive(Debug)]
pub struct RequestBody {
    /// `None` once the body is done and the reader went back.
    reader: Option<Reader>,
    left: Left,
    /// `None` for a request without a body.
    slot: Option<Slot>,
    /// Bytes of `100 Continue` still to write before the first read.
    continue_left: usize,
}

/// Why a request body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client closed the connection in the middle of the body")]
    Closed,
    #[error(transparent)]
    Chunked(#[from] crate::wire::chunked::ChunkedError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl RequestBody {
    /// A body of `length` bytes, or chunked when `None`.
    pub fn new(reader: Reader, length: Option<u64>, expect_continue: bool, slot: Slot) -> Self {
        RequestBody {
            reader: Some(reader),
            left: length.map_or(Left::Chunked(Chunked::Size), Left::Length),
            slot: Some(slot),
            continue_left: if expect_continue { CONTINUE.len() } else { 0 },
        }
    }

    /// The body of a request without one; the connection keeps its reader.
    pub fn empty() -> Self {
        RequestBody {
            reader: None,
            left: Left::Length(0),
            slot: None,
            continue_left: 0,
        }
    }

    /// Hands the reader back; `finished` when the body was read to its end.
    fn give_back(&mut self, finished: bool) {
        if let Some(mut reader) = self.reader.take() {
            reader.shrink();
            if let Some(Ok(mut slot)) = self.slot.as_ref().map(|slot| slot.lock()) {
                *slot = Some((reader, finished));
            }
        }
    }

    /// Writes the rest of `100 Continue`. The connection writes nothing else while the
    /// request's body is unread, so the bytes cannot interleave with an answer.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(reader) = &self.reader else {
            return Poll::Ready(Ok(()));
        };
        let tcp = reader.half.as_ref();
        while self.continue_left > 0 {
            ready!(tcp.poll_write_ready(cx))?;
            let from = CONTINUE.len() - self.continue_left;
            match tcp.try_write(&CONTINUE[from..]) {
                Ok(written) => self.continue_left -= written,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BodyError>> {
        ready!(self.poll_continue(cx))?;
        loop {
            let Some(reader) = &mut self.reader else {
                return Poll::Ready(Ok(None));
            };
            match &mut self.left {
                Left::Length(0) => {
                    self.give_back(true);
                    return Poll::Ready(Ok(None));
                }
                Left::Length(left) if !reader.buf.is_empty() => {
                    let take = usize::try_from(*left)
                        .map_or(reader.buf.len(), |left| left.min(reader.buf.len()));
                    let data = reader.buf.split_to(take).freeze();
                    *left -= take as u64;
                    if *left == 0 {
                        self.give_back(true);
                    }
                    return Poll::Ready(Ok(Some(data)));
                }
                Left::Length(_) => {}
                Left::Chunked(chunked) => match chunked.step(&mut reader.buf)? {
                    Step::Data(data) => return Poll::Ready(Ok(Some(data))),
                    Step::End => {
                        self.give_back(true);
                        return Poll::Ready(Ok(None));
                    }
                    Step::More => {}
                },
            }
            reader.shrink();
            if ready!(reader.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(BodyError::Closed));
            }
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match ready!(this.poll_data(cx)) {
            Ok(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Ok(None) => Poll::Ready(None),
            Err(err) => {
                this.give_back(false);
                Poll::Ready(Some(Err(err)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reader.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            _ if self.reader.is_none() => SizeHint::with_exact(0),
            Left::Length(left) => SizeHint::with_exact(left),
            Left::Chunked(_) => SizeHint::default(),
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        self.give_back(false);
    }
}

//! The reading side of a client connection: the socket's read half and the bytes read from
//! it but not used yet.
//!
//! The buffer is allocated only once the socket is readable and given up once every byte in
//! it has been used, so a connection waiting for its next request, or holding an SSE stream
//! open, holds no read buffer.

use std::io;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::net::tcp::OwnedReadHalf;

/// How much a read asks for at first, and at most: reads that fill what they asked for
/// double it, so a large upload takes fewer, larger reads. 1 KiB holds a typical head or
/// SSE event; a larger first read costs resident memory across thousands of streams, since
/// malloc keeps what short-lived 8 KiB buffers leave fragmented (`docs/benchmarks.md`).
const READ_SIZE: usize = 1024;
const MAX_READ_SIZE: usize = 128 * 1024;
/// What a read for a sign of life takes: the next pipelined request's head, or the end.
const WATCH_SIZE: usize = 1024;

#[derive(Debug)]
pub struct Reader {
    pub half: OwnedReadHalf,
    /// Bytes read and not yet used; unallocated while empty.
    pub buf: BytesMut,
    read_size: usize,
}

impl Reader {
    pub fn new(half: OwnedReadHalf) -> Reader {
        Reader {
            half,
            buf: BytesMut::new(),
            read_size: READ_SIZE,
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at the end of the stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let read = ready!(self.poll_read(cx, self.read_size))?;
        if read >= self.read_size {
            self.read_size = (self.read_size * 2).min(MAX_READ_SIZE);
        } else if read < READ_SIZE {
            self.read_size = READ_SIZE;
        }
        Poll::Ready(Ok(read))
    }

    /// While a request is served with nothing left to read of it: whether the client has
    /// gone (`Ready(true)`: the connection ended or failed). Bytes that arrive instead are
    /// the next request's and are kept; once the buffer holds some, this watches no more
    /// (and stays `Pending`), as the next request is then already known to exist.
    pub fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if !self.buf.is_empty() {
            return Poll::Pending;
        }
        match ready!(self.poll_read(cx, WATCH_SIZE)) {
            Ok(0) | Err(_) => Poll::Ready(true),
            Ok(_) => Poll::Pending,
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, size: usize) -> Poll<io::Result<usize>> {
        let tcp = self.half.as_ref();
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            if self.buf.capacity() - self.buf.len() < size / 4 {
                self.buf.reserve(size);
            }
            match tcp.try_read_buf(&mut self.buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                read => return Poll::Ready(read),
            }
        }
    }

    /// Gives up the buffer's memory once every byte in it has been used.
    pub fn shrink(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }
}

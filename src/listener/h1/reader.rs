//! The reading side of a client connection: the socket's read half and the bytes read from
//! it but not used yet.
//!
//! The buffer is allocated only once the socket is readable and given up once every byte in
//! it has been used, so a connection waiting for its next request, or holding an SSE stream
//! open, holds no read buffer.
//!
//! Reads go through `AsyncRead` rather than `try_read`: a read that fills less than it asked
//! for tells tokio the socket is drained, so the next wait for data asks epoll rather than
//! making a `recv` that would only find nothing.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;

/// How much a read asks for at first, and at most: reads that fill what they asked for
/// double it, so a large upload takes fewer, larger reads. 1 KiB holds a typical head or
/// SSE event; a larger first read costs resident memory across thousands of streams, since
/// malloc keeps what short-lived 8 KiB buffers leave fragmented (`docs/benchmarks.md`).
const READ_SIZE: usize = 1024;
const MAX_READ_SIZE: usize = 128 * 1024;
/// What a read for a sign of life takes, on the stack: the start of the next pipelined
/// request, or the end.
const WATCH_SIZE: usize = 512;

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
        // Into the stack, so that a stream that is only watched holds no buffer.
        let mut probe = [MaybeUninit::<u8>::uninit(); WATCH_SIZE];
        let mut probe = ReadBuf::uninit(&mut probe);
        match ready!(Pin::new(&mut self.half).poll_read(cx, &mut probe)) {
            Ok(()) if probe.filled().is_empty() => Poll::Ready(true),
            Ok(()) => {
                self.buf.extend_from_slice(probe.filled());
                Poll::Pending
            }
            Err(_) => Poll::Ready(true),
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, size: usize) -> Poll<io::Result<usize>> {
        // The buffer is made once there is something to read, not while waiting.
        ready!(self.half.as_ref().poll_read_ready(cx))?;
        if self.buf.capacity() - self.buf.len() < size / 4 {
            self.buf.reserve(size);
        }
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.half), cx, &mut self.buf);
        if read.is_pending() {
            self.shrink();
        }
        read
    }

    /// Gives up the buffer's memory once every byte in it has been used.
    pub fn shrink(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::AsyncWriteExt;
    use tokio::net::tcp::OwnedWriteHalf;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A reader on the server side of a fresh connection, its write half (dropping it would
    /// shut the socket down), and the client's side.
    async fn pair() -> (Reader, OwnedWriteHalf, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (read, write) = server.into_split();
        (Reader::new(read), write, client)
    }

    /// Waits until `poll_gone` either sees the end or keeps some bytes.
    async fn watch(reader: &mut Reader) -> Option<bool> {
        let watched = poll_fn(|cx| match reader.poll_gone(cx) {
            Poll::Ready(gone) => Poll::Ready(Some(gone)),
            Poll::Pending if !reader.buf.is_empty() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), watched)
            .await
            .expect("the watch saw neither bytes nor the end")
    }

    #[tokio::test]
    async fn bytes_that_come_while_watching_are_kept_as_the_next_request() {
        let (mut reader, _write, mut client) = pair().await;
        let next = b"GET /next HTTP/1.1\r\nhost: a\r\n\r\n";
        client.write_all(next).await.unwrap();
        assert_eq!(watch(&mut reader).await, None, "the client has not gone");
        assert_eq!(&reader.buf[..], next);
        // With bytes kept, the watch stops: the next request is known to exist.
        drop(client);
        assert!(reader
            .poll_gone(&mut Context::from_waker(std::task::Waker::noop()))
            .is_pending());
    }

    #[tokio::test]
    async fn a_client_that_closes_while_watched_is_gone_and_no_buffer_is_kept() {
        let (mut reader, _write, client) = pair().await;
        drop(client);
        assert_eq!(watch(&mut reader).await, Some(true));
        assert_eq!(reader.buf.capacity(), 0, "watching allocated a buffer");
    }
}

//! The HTTP/1.1 client side of a backend connection, driven inside the request's own task.
//!
//! hyper's client runs each connection as a task of its own, fed through a channel: per
//! request that is a channel send, a oneshot back, two task wakeups, and per connection a
//! 32-slot channel block, an 8 KiB write buffer and an 8 KiB read buffer held for as long
//! as the connection lives. A proxy holding thousands of slow SSE streams pays all of it
//! for every stream. Here a request writes its head and body straight to the socket and
//! reads the response head itself; the body is read by the response body as the client
//! pulls it ([`body::H1Body`]). The read buffer exists only while bytes are in it, so an
//! idle stream holds no buffer, and a connection waiting in the pool holds none either.
//!
//! What it leaves out: the request body is sent whole before the response is read. A
//! backend that answers early and closes (a 413 to a large upload) has its answer passed
//! on, if it reached the socket before the write failed; one that answers early and keeps
//! the connection open without reading stalls the request until its timeout. Trailers are
//! dropped both ways, and `Upgrade` requests go through hyper on a connection of
//! their own ([`super::HttpBackend::open_tunnel`]).

pub mod body;
pub mod head;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use bytes::BytesMut;
use http::{Request, Response};
use http_body::Body as HttpBody;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::HttpBackend;
use crate::body::Body;
use crate::error::ProxyError;
use crate::wire;
use body::H1Body;
use head::Sending;

/// Why a request did not go out whole.
enum Unsent {
    /// The request itself: its body failed or did not match its length.
    Request(ProxyError),
    /// The socket: the backend closed or reset the connection.
    Socket(io::Error),
}

/// How much a read asks for at first, and at most: reads that fill what they asked for
/// double it, so a large download takes fewer, larger reads. 1 KiB holds a typical head or
/// SSE event; a larger first read costs resident memory across thousands of streams, since
/// malloc keeps what short-lived 8 KiB buffers leave fragmented (`docs/benchmarks.md`).
const READ_SIZE: usize = 1024;
const MAX_READ_SIZE: usize = 128 * 1024;
/// A request body is written once this much of it is buffered.
const WRITE_BATCH: usize = 64 * 1024;
/// Room for a request head: a typical head with forwarding fields is 300 to 500 bytes.
const HEAD_ROOM: usize = 768;

/// A connection's byte stream: TCP, or TLS over TCP.
#[derive(Debug)]
pub enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One HTTP/1.1 connection to a backend, idle or carrying one exchange.
#[derive(Debug)]
pub struct H1Conn {
    io: Io,
    /// Bytes read and not yet used; empty and unallocated between reads.
    buf: BytesMut,
    read_size: usize,
}

impl H1Conn {
    pub fn new(io: Io) -> H1Conn {
        H1Conn {
            io,
            buf: BytesMut::new(),
            read_size: READ_SIZE,
        }
    }

    /// The byte stream, for a protocol that takes the connection over (a tunnel).
    pub fn into_io(self) -> Io {
        self.io
    }

    /// Whether an idle connection can carry a request: the backend has neither closed it nor
    /// sent anything unasked. Checked without waiting.
    pub fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        match &mut self.io {
            Io::Plain(tcp) => {
                matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Io::Tls(tls) => {
                let mut cx = Context::from_waker(Waker::noop());
                let mut probe = ReadBuf::new(&mut probe);
                Pin::new(tls.as_mut())
                    .poll_read(&mut cx, &mut probe)
                    .is_pending()
            }
        }
    }

    /// Sends `req` and reads the response head. The response's body owns the connection
    /// and gives it back to `backend`'s pool once it has been read to the end.
    pub async fn send(
        mut self,
        req: Request<Body>,
        backend: &Arc<HttpBackend>,
    ) -> Result<Response<Body>, ProxyError> {
        let method = req.method().clone();
        match self.write_request(req).await {
            Ok(()) => {}
            Err(Unsent::Request(err)) => return Err(err),
            // A backend that refuses an upload early (413, 401) answers and closes without
            // reading the rest; its answer, if it came, is the one the client should get.
            Err(Unsent::Socket(err)) => match self.early_answer(&method).await {
                Some(head) => {
                    let body = H1Body::new(self, head.framing, false, backend);
                    return Ok(head.response.map(|()| Body::new(body)));
                }
                None => return Err(upstream(err)),
            },
        }
        let head = loop {
            if let Some(head) = head::parse_response(&mut self.buf, &method).map_err(upstream)? {
                break head;
            }
            if poll_fn(|cx| self.poll_fill(cx)).await.map_err(upstream)? == 0 {
                return Err(ProxyError::Upstream(
                    "the backend closed the connection before the response head".to_owned(),
                ));
            }
        };
        let body = H1Body::new(self, head.framing, head.keep_alive, backend);
        Ok(head.response.map(|()| Body::new(body)))
    }

    /// A response head the backend sent before the request was written whole. The write
    /// failed, so the connection is dead and reads end at once: with what the backend sent
    /// before it closed, then an end or an error.
    async fn early_answer(&mut self, method: &http::Method) -> Option<head::Head> {
        loop {
            if let Ok(Some(head)) = head::parse_response(&mut self.buf, method) {
                return Some(head);
            }
            match poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(read) if read > 0 => {}
                _ => return None,
            }
        }
    }

    /// Writes the request head and its body: one write when the body is already whole.
    async fn write_request(&mut self, req: Request<Body>) -> Result<(), Unsent> {
        let (parts, mut body) = req.into_parts();
        let length = body.size_hint().exact();
        // Room for a typical head and a whole body that goes out with it, so that neither
        // grows the buffer (a body of unknown length grows it as its frames come).
        let whole = length.filter(|&n| n <= WRITE_BATCH as u64).unwrap_or(0);
        let mut out = Vec::with_capacity(HEAD_ROOM + whole as usize);
        let sending = head::encode_request(&parts, length, body.is_end_stream(), &mut out)
            .map_err(|e| Unsent::Request(ProxyError::BadRequest(e.0.to_owned())))?;
        drop(parts);
        let mut sent = 0u64;
        if sending != Sending::Nothing {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    Unsent::Request(
                        super::classify(&*e)
                            .unwrap_or_else(|| ProxyError::Upstream(super::chain(&*e))),
                    )
                })?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                sent += data.len() as u64;
                match sending {
                    Sending::Length(length) if sent > length => {
                        return Err(Unsent::Request(ProxyError::BadRequest(
                            "request body longer than its Content-Length".to_owned(),
                        )))
                    }
                    Sending::Chunked => wire::chunk(&mut out, &data),
                    _ => out.extend_from_slice(&data),
                }
                // More to come: what is ready goes out rather than waiting for the rest.
                if !body.is_end_stream() || out.len() >= WRITE_BATCH {
                    self.write(&out).await?;
                    out.clear();
                }
            }
        }
        match sending {
            Sending::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
            Sending::Length(length) if sent != length => {
                return Err(Unsent::Request(ProxyError::BadRequest(
                    "request body shorter than its Content-Length".to_owned(),
                )))
            }
            _ => {}
        }
        self.write(&out).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Unsent> {
        if bytes.is_empty() {
            return Ok(());
        }
        let written = match &mut self.io {
            Io::Plain(tcp) => tcp.write_all(bytes).await,
            Io::Tls(tls) => match tls.write_all(bytes).await {
                Ok(()) => tls.flush().await,
                Err(err) => Err(err),
            },
        };
        written.map_err(Unsent::Socket)
    }

    /// Reads more bytes into the buffer; `Ok(0)` at the end of the stream. On plain TCP the
    /// buffer is allocated only once the socket is readable, so a waiting stream holds none.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let read = match &mut self.io {
            // Through `AsyncRead` rather than `try_read`: a short read tells tokio the socket
            // is drained, so the next wait (or the reuse check) makes no `recv` that finds
            // nothing.
            Io::Plain(tcp) => {
                ready!(tcp.poll_read_ready(cx))?;
                reserve(&mut self.buf, self.read_size);
                let read = tokio_util::io::poll_read_buf(Pin::new(tcp), cx, &mut self.buf);
                if read.is_pending() {
                    self.shrink();
                }
                ready!(read)?
            }
            Io::Tls(tls) => {
                reserve(&mut self.buf, self.read_size);
                ready!(tokio_util::io::poll_read_buf(
                    Pin::new(tls.as_mut()),
                    cx,
                    &mut self.buf
                ))?
            }
        };
        if read >= self.read_size {
            self.read_size = (self.read_size * 2).min(MAX_READ_SIZE);
        } else if read < READ_SIZE {
            // Small reads again (the next response, or a stream's events): small buffers.
            self.read_size = READ_SIZE;
        }
        Poll::Ready(Ok(read))
    }

    /// Gives up the buffer's memory once every byte in it has been handed out.
    fn shrink(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }
}

fn reserve(buf: &mut BytesMut, size: usize) {
    if buf.capacity() - buf.len() < size / 4 {
        buf.reserve(size);
    }
}

fn upstream(err: impl std::fmt::Display) -> ProxyError {
    ProxyError::Upstream(err.to_string())
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

//! sluice's own HTTP/1.1 server connection, for the plain HTTP port.
//!
//! hyper's server connection keeps an 8 KiB read buffer, an 8 KiB write buffer and its
//! dispatch state for as long as the connection lives: a proxy holding thousands of idle
//! SSE streams pays that for every one. Here the read buffer exists only while it holds
//! bytes ([`reader::Reader`]), the write buffer only while an answer is being written, and
//! the request's handling future only until the answer's head is out.
//!
//! One task serves a connection, one request at a time, in order:
//!
//! 1. **Head.** Read and parse a request head (`head::parse`) within
//!    `server.header_read_timeout`, which is also the keep-alive idle timeout. A bad head
//!    gets an OpenAI-style error and the connection closes. An HTTP/2 preface, or a request
//!    asking to upgrade (WebSocket), hands the connection, with the bytes read so far, to
//!    hyper ([`Handover`]).
//! 2. **Handle.** The body, if any, takes the reader ([`body::RequestBody`]) and gives it
//!    back when read to its end. While the proxy works with nothing left to read, the
//!    connection watches the socket: a client that goes away cancels its request.
//! 3. **Answer.** The head and whatever of the body is ready go out in one write; each later
//!    piece of the body is written as soon as it comes, never held back for more. A body of
//!    unknown length is chunked (HTTP/1.1) or ends with the connection (HTTP/1.0).
//!
//! The connection closes after the answer when the client asked, when draining, when the
//! request body was not read to its end, or when the answer's framing needs it. With body
//! bytes still unread it closes gracefully ([`linger`]), so that the answer is not lost to a
//! TCP reset.

mod body;
pub mod head;
mod reader;
mod response;

use std::future::{poll_fn, Future};
use std::io;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Version};
use http_body::Body as HttpBody;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::replay::Replay;
use super::send_timeout::SendTimeout;
use super::unless::StopWatch;
use crate::body::Body;
use crate::error::ProxyError;
use crate::proxy::{ConnInfo, Proxy};
use crate::wire;
use body::{RequestBody, Slot};
use reader::Reader;
use response::{Asked, Framing};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Body data up to this size is copied next to its framing and written in one go; larger
/// data is written from where it is.
const COPY_LIMIT: usize = 16 * 1024;
/// What is gathered from a body that has more ready before it is written.
const WRITE_BATCH: usize = 64 * 1024;
/// How long, and how much, an unread request body is read and dropped before closing.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: u64 = 1024 * 1024;

/// hyper's servers, for the connections this one hands over.
pub struct Handover {
    /// For requests that upgrade the connection (WebSocket).
    pub http1: http1::Builder,
    /// For the HTTP/2 preface, when `server.http2` serves h2c.
    pub http2: Option<http2::Builder<TokioExecutor>>,
}

/// Which hyper server takes a connection over.
pub enum Handed {
    Http1,
    Http2,
}

/// Why [`Conn::run`] ended, for what happens to the socket next.
enum Ended {
    /// Closed; nothing more to do.
    Done,
    /// A head that cannot be served: answer it and close.
    Refused(ProxyError),
    /// Answered with the request body unread: close gracefully.
    Unread(Reader),
    /// Another server takes the connection, reading these bytes first.
    Handed(Handed, Bytes),
}

/// What waiting for a request head gave.
// A value that lives for one step on the stack: boxing `Head` would allocate per request.
#[allow(clippy::large_enum_variant)]
enum Next {
    Head(head::Head),
    Bad(ProxyError),
    Preface,
    /// The client closed, failed, went silent, or the server is draining.
    Closed,
}

/// A connection another server takes over: which one, the connection with the bytes
/// already read from it, and what the connection was served with.
pub struct Handoff {
    pub handed: Handed,
    pub info: ConnInfo,
    pub io: Replay<SendTimeout<TcpStream>>,
    pub draining: watch::Receiver<bool>,
}

/// Serves HTTP/1.1 on `stream` until it closes, or until another protocol takes it over
/// (`h2c`: the HTTP/2 preface is looked for).
///
/// Not an `async fn`: the connection's state is built here, before the future exists, so
/// that the future holds it once. An `async fn` would also keep its arguments for its whole
/// life, and this future lives as long as the connection (an SSE stream's, for minutes).
#[allow(clippy::manual_async_fn)]
pub fn serve(
    stream: TcpStream,
    info: ConnInfo,
    proxy: Arc<Proxy>,
    h2c: bool,
    draining: watch::Receiver<bool>,
) -> impl Future<Output = Option<Handoff>> + Send {
    let (read, write) = stream.into_split();
    let settings = &proxy.settings;
    let mut conn = Conn {
        info,
        limits: head::Limits {
            max_size: settings.max_header_size,
            max_fields: settings.max_headers,
        },
        h2c,
        draining,
        drain_watch: StopWatch::default(),
        reader: Some(Reader::new(read)),
        writer: SendTimeout::new(write, settings.send_timeout),
        slot: None,
        proxy,
    };
    // The rare endings (a refused head, an unread body) are boxed: the task's size is the
    // largest of its states, and it keeps that size for the connection's whole life.
    async move {
        match conn.run().await {
            Ended::Done => None,
            Ended::Refused(err) => {
                Box::pin(conn.refuse(err)).await;
                None
            }
            Ended::Unread(reader) => {
                Box::pin(linger(reader, &mut conn.writer, &mut conn.draining)).await;
                None
            }
            Ended::Handed(handed, prefix) => {
                let reader = conn.reader?;
                let stream = reader.half.reunite(conn.writer.into_inner()).ok()?;
                let send_timeout = conn.proxy.settings.send_timeout;
                Some(Handoff {
                    handed,
                    info: conn.info,
                    io: Replay::new(prefix, SendTimeout::new(stream, send_timeout)),
                    draining: conn.draining,
                })
            }
        }
    }
}

/// Everything a connection keeps, held once by its task; the futures below borrow it.
struct Conn {
    proxy: Arc<Proxy>,
    info: ConnInfo,
    limits: head::Limits,
    h2c: bool,
    draining: watch::Receiver<bool>,
    /// The wait for draining of a connection that carries a second request (see
    /// [`read_unless_draining`]). Its box is not made for the first request, so a connection
    /// that carries one long stream does not hold it.
    drain_watch: StopWatch,
    /// `None` while a request body has it.
    reader: Option<Reader>,
    writer: SendTimeout<OwnedWriteHalf>,
    /// Where request bodies give the reader back: made on the first request with a body,
    /// and reused.
    slot: Option<Slot>,
}

impl Conn {
    /// Serves requests until the connection ends or is to be handed over.
    async fn run(&mut self) -> Ended {
        let header_timeout = self.proxy.settings.header_read_timeout;
        let mut first = true;
        loop {
            // Matched as a temporary, so that it is not kept across the awaits below.
            let head = match tokio::time::timeout(header_timeout, self.next_head(first)).await {
                Ok(Next::Head(head)) => head,
                Ok(Next::Preface) => {
                    let reader = self.reader.as_mut();
                    let prefix = reader.map(|r| std::mem::take(&mut r.buf).freeze());
                    return Ended::Handed(Handed::Http2, prefix.unwrap_or_default());
                }
                Ok(Next::Bad(err)) => return Ended::Refused(err),
                // A client that sent nothing in time is closed without an answer.
                Ok(Next::Closed) | Err(_) => return Ended::Done,
            };
            first = false;
            if head.upgrade {
                let mut prefix = BytesMut::from(&head.raw[..]);
                if let Some(reader) = &mut self.reader {
                    prefix.extend_from_slice(&reader.buf);
                    reader.buf = BytesMut::new();
                }
                return Ended::Handed(Handed::Http1, prefix.freeze());
            }
            let Some((request, asked)) = self.request(head) else {
                return Ended::Done;
            };

            // A block, so that the answer is not kept beside the future that writes it.
            let mut unread = None;
            let kept = {
                // Boxed: the handling future is large and lives only until the answer's head.
                let mut handling = Box::pin(self.proxy.handle(request, self.info.clone()));
                let parked = &mut self.reader;
                let answer = poll_fn(|cx| {
                    if let Poll::Ready(answer) = handling.as_mut().poll(cx) {
                        return Poll::Ready(Some(answer));
                    }
                    match parked.as_mut().map(|reader| reader.poll_gone(cx)) {
                        Some(Poll::Ready(true)) => Poll::Ready(None),
                        _ => Poll::Pending,
                    }
                })
                .await;
                drop(handling);
                // The client went away: dropping the handling cancelled its request.
                let Some(answer) = answer else {
                    return Ended::Done;
                };

                // The reader, back from a body read to its end; a body not read to its end
                // leaves the connection unusable for another request.
                if self.reader.is_none() {
                    match self.take_back() {
                        Some((reader, true)) => self.reader = Some(reader),
                        Some((reader, false)) => unread = Some(reader),
                        None => {}
                    }
                }
                let asked = Asked {
                    keep_alive: asked.keep_alive
                        && self.reader.is_some()
                        && !*self.draining.borrow(),
                    ..asked
                };
                answer_with(&mut self.writer, answer, asked, self.reader.as_mut())
            }
            .await;
            match kept {
                Ok(true) if !*self.draining.borrow() => {}
                Ok(_) => {
                    let unread = unread.or_else(|| self.take_back().map(|(reader, _)| reader));
                    return unread.map_or(Ended::Done, Ended::Unread);
                }
                Err(_) => return Ended::Done,
            }
        }
    }

    /// The request of `head`, its body reading from this connection, and what the answer
    /// must respect. `None` if the reader is gone (it never is between requests).
    fn request(&mut self, head: head::Head) -> Option<(Request<RequestBody>, Asked)> {
        let asked = Asked {
            head: head.parts.method == Method::HEAD,
            version: head.parts.version,
            keep_alive: head.keep_alive,
        };
        let length = match head.framing {
            head::Framing::Empty => {
                return Some((Request::from_parts(head.parts, RequestBody::empty()), asked))
            }
            head::Framing::Length(n) => Some(n),
            head::Framing::Chunked => None,
        };
        let reader = self.reader.take()?;
        let slot = self.slot.get_or_insert_with(|| Arc::new(Mutex::new(None)));
        let body = RequestBody::new(reader, length, head.expect_continue, Arc::clone(slot));
        Some((Request::from_parts(head.parts, body), asked))
    }

    /// The reader a request body gave back, and whether the body was read to its end.
    fn take_back(&self) -> Option<(Reader, bool)> {
        self.slot.as_ref().and_then(|slot| slot.lock().ok()?.take())
    }

    /// Answers a head that cannot be served with its JSON error, then closes.
    async fn refuse(&mut self, err: ProxyError) {
        tracing::debug!(peer = %self.info.peer, error = %err, "bad request head");
        let asked = Asked {
            head: false,
            version: Version::HTTP_11,
            keep_alive: false,
        };
        if answer_with(&mut self.writer, err.into_response(), asked, None)
            .await
            .is_ok()
        {
            if let Some(reader) = self.reader.take() {
                linger(reader, &mut self.writer, &mut self.draining).await;
            }
        }
    }

    /// Reads until the buffer holds a whole request head.
    async fn next_head(&mut self, first: bool) -> Next {
        let Some(reader) = self.reader.as_mut() else {
            return Next::Closed;
        };
        loop {
            if first && self.h2c && !reader.buf.is_empty() {
                let seen = reader.buf.len().min(PREFACE.len());
                if reader.buf[..seen] == PREFACE[..seen] {
                    if seen == PREFACE.len() {
                        return Next::Preface;
                    }
                } else if let Some(next) = parse(reader, self.limits) {
                    return next;
                }
            } else if !reader.buf.is_empty() {
                if let Some(next) = parse(reader, self.limits) {
                    return next;
                }
            }
            reader.shrink();
            // Draining closes a connection between requests, not in the middle of one.
            let read = if reader.buf.is_empty() && first {
                tokio::select! {
                    biased;
                    read = poll_fn(|cx| reader.poll_fill(cx)) => read,
                    () = super::stopped(&mut self.draining) => return Next::Closed,
                }
            } else if reader.buf.is_empty() {
                match read_unless_draining(reader, &self.draining, &mut self.drain_watch).await {
                    Some(read) => read,
                    None => return Next::Closed,
                }
            } else {
                poll_fn(|cx| reader.poll_fill(cx)).await
            };
            match read {
                Ok(0) | Err(_) => return Next::Closed,
                Ok(_) => {}
            }
        }
    }
}

/// Reads more of the next request, or `None` once the server drains. `watch` is registered
/// at its first poll and read by value after that ([`StopWatch`]).
async fn read_unless_draining(
    reader: &mut Reader,
    draining: &watch::Receiver<bool>,
    watch: &mut StopWatch,
) -> Option<io::Result<usize>> {
    poll_fn(|cx| {
        if watch.poll_stopped(draining, cx) {
            return Poll::Ready(None);
        }
        reader.poll_fill(cx).map(Some)
    })
    .await
}

fn parse(reader: &mut Reader, limits: head::Limits) -> Option<Next> {
    match head::parse(&mut reader.buf, limits) {
        Ok(Some(head)) => Some(Next::Head(head)),
        Ok(None) => None,
        Err(err) => Some(Next::Bad(err)),
    }
}

/// Writes `answer`. Answers whether the connection may carry another request: the answer
/// went out whole and its framing did not end with the connection.
///
/// The head is encoded before the future exists, so that the future holds neither the
/// answer nor its head while the body streams.
#[allow(clippy::manual_async_fn)]
fn answer_with<'a>(
    writer: &'a mut SendTimeout<OwnedWriteHalf>,
    answer: http::Response<Body>,
    asked: Asked,
    watch: Option<&'a mut Reader>,
) -> impl Future<Output = io::Result<bool>> + Send + 'a {
    let (parts, body) = answer.into_parts();
    let mut out = Vec::with_capacity(512);
    let (framing, keep_alive) = response::encode(&parts, body.size_hint().exact(), asked, &mut out);
    drop(parts);
    async move {
        if framing == Framing::Empty {
            writer.write_all(&out).await?;
            return Ok(keep_alive);
        }
        let whole = write_body(writer, out, body, framing, watch).await?;
        Ok(keep_alive && whole)
    }
}

/// What the next step of writing a body is.
enum Step {
    Frame(Option<Result<http_body::Frame<Bytes>, crate::body::BoxError>>),
    /// Nothing more is ready: write what is gathered.
    Flush,
    /// The client went away.
    Gone,
}

/// Writes `body` after the head in `out`. Answers whether it went out whole; an error or a
/// body that broke its length ends the connection, which is how the client learns of it.
async fn write_body(
    writer: &mut SendTimeout<OwnedWriteHalf>,
    mut out: Vec<u8>,
    mut body: Body,
    framing: Framing,
    mut watch: Option<&mut Reader>,
) -> io::Result<bool> {
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    loop {
        let step = poll_fn(|cx| {
            if let Poll::Ready(frame) = std::pin::Pin::new(&mut body).poll_frame(cx) {
                return Poll::Ready(Step::Frame(frame));
            }
            if !out.is_empty() {
                return Poll::Ready(Step::Flush);
            }
            match watch.as_mut().map(|reader| reader.poll_gone(cx)) {
                Some(Poll::Ready(true)) => Poll::Ready(Step::Gone),
                _ => Poll::Pending,
            }
        })
        .await;
        match step {
            Step::Flush => {
                writer.write_all(&out).await?;
                // Nothing is held between pieces of a slow stream.
                out = Vec::new();
            }
            Step::Gone => return Ok(false),
            Step::Frame(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                if data.len() as u64 > left {
                    // More than its Content-Length: what was said goes out, then the end.
                    let fits = usize::try_from(left).unwrap_or(usize::MAX);
                    out.extend_from_slice(&data[..fits]);
                    writer.write_all(&out).await?;
                    return Ok(false);
                }
                left -= data.len() as u64;
                if framing == Framing::Chunked {
                    // Room for the size line, the data and its CRLF in one allocation: a
                    // stream's every event starts from an empty buffer, and growing it
                    // piece by piece cost a malloc and two reallocs per event.
                    let copied = if data.len() > COPY_LIMIT {
                        0
                    } else {
                        data.len()
                    };
                    out.reserve(copied + wire::CHUNK_FRAMING);
                    wire::chunk_size(&mut out, data.len());
                }
                if data.len() > COPY_LIMIT {
                    writer.write_all(&out).await?;
                    writer.write_all(&data).await?;
                    out.clear();
                } else {
                    out.extend_from_slice(&data);
                }
                if framing == Framing::Chunked {
                    out.extend_from_slice(b"\r\n");
                }
                if out.len() >= WRITE_BATCH {
                    writer.write_all(&out).await?;
                    out.clear();
                }
            }
            Step::Frame(None) => {
                if framing == Framing::Chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                writer.write_all(&out).await?;
                return Ok(framing == Framing::Chunked || left == 0 || framing == Framing::Close);
            }
            Step::Frame(Some(Err(err))) => {
                // Cut: a chunked answer never gets its last chunk, a sized one ends short.
                tracing::debug!(error = %err, "answer body failed");
                writer.write_all(&out).await?;
                return Ok(false);
            }
        }
    }
}

/// Closes a connection whose client may still be sending a body: the write side first, so
/// the client gets the answer, then what it sends is read and dropped for a while, so that
/// closing does not reset the connection before the answer is read.
/// A server that starts draining stops lingering.
async fn linger(
    mut reader: Reader,
    writer: &mut SendTimeout<OwnedWriteHalf>,
    draining: &mut watch::Receiver<bool>,
) {
    let _ = writer.shutdown().await;
    let drain = async {
        let mut sink = tokio::io::sink();
        let mut rest = (&mut reader.half).take(LINGER_BYTES);
        let _ = tokio::io::copy(&mut rest, &mut sink).await;
    };
    tokio::select! {
        _ = tokio::time::timeout(LINGER_TIME, drain) => {}
        () = super::stopped(draining) => {}
    }
}

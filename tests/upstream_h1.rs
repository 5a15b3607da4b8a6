//! What sluice must do toward HTTP/1.1 backends, byte for byte: how it reads a response's
//! framing (chunked with extensions and trailers, until close, bodiless statuses, interim
//! responses), when it may reuse a connection and when it must not, which answers it refuses
//! with a 502, and what a backend receives of a request.
//!
//! The backend here is a raw TCP listener that writes exactly the bytes each test gives it,
//! so the framing is the test's and not a library's. It counts the connections it accepts
//! and records every request as it came off the wire.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{channel_body, drain, get, open, post_json, send, Gateway};
use http::Request;
use http_body_util::Full;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Generous guard against hangs; no assertion depends on it.
const HANG_GUARD: Duration = Duration::from_secs(10);

/// The largest response head sluice reads from a backend; the same bound as a client's
/// request head (`server.max_header_size`).
const MAX_HEAD: usize = 64 * 1024;

/// Awaits `future`, failing the test if it hangs.
async fn within<F: Future>(future: F) -> F::Output {
    timeout(HANG_GUARD, future).await.expect("hang")
}

// ---------------------------------------------------------------------------------------------
// A backend that writes scripted bytes.
// ---------------------------------------------------------------------------------------------

/// What the backend does with the connection once a reply is written.
#[derive(Debug, Clone, Copy)]
enum Then {
    /// Keeps it open and reads the next request on it.
    KeepOpen,
    /// Closes it (a FIN after the reply), with no `Connection: close` said beforehand.
    Close,
}

/// One scripted answer: bytes written as they are, then what happens to the connection.
#[derive(Debug, Clone)]
struct Reply {
    bytes: Bytes,
    then: Then,
}

impl Reply {
    fn keep(bytes: &[u8]) -> Reply {
        Reply {
            bytes: Bytes::copy_from_slice(bytes),
            then: Then::KeepOpen,
        }
    }

    fn close(bytes: &[u8]) -> Reply {
        Reply {
            bytes: Bytes::copy_from_slice(bytes),
            then: Then::Close,
        }
    }
}

/// A plain keep-alive answer, `200` with body `ok`.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// One request as the backend read it.
#[derive(Debug, Clone)]
struct Received {
    /// The accepted connection it came on, counting from 1.
    conn: usize,
    /// The request line and header fields up to the blank line, as sent.
    head: String,
    /// Every byte after the head that its framing claimed (chunk sizes included).
    wire_body: Vec<u8>,
    /// The body with the framing taken off.
    body: Vec<u8>,
}

impl Received {
    /// The first value of header field `name`.
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.head, name)
    }
}

/// Finds a header field in a head written as text.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (field, value) = line.split_once(':')?;
        field.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// A TCP listener on 127.0.0.1:0 that answers each request with the next of its scripted
/// replies, whichever connection it comes on.
struct Backend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Received>>>,
    /// The number of each connection the backend closed, once closed.
    closed: mpsc::UnboundedReceiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

/// What the connections of one backend share.
struct Replies {
    /// Played in order, one per request; the last one repeats.
    list: Vec<Reply>,
    /// Requests answered so far.
    played: AtomicUsize,
    /// Shared with [`Backend::received`].
    received: Arc<Mutex<Vec<Received>>>,
    /// Feeds [`Backend::next_close`].
    closed: mpsc::UnboundedSender<usize>,
}

impl Replies {
    /// The reply to the next request.
    fn next(&self) -> Reply {
        let i = self.played.fetch_add(1, Ordering::SeqCst);
        self.list[i.min(self.list.len() - 1)].clone()
    }
}

impl Backend {
    /// Plays `replies` in order, one per request.
    async fn start(replies: Vec<Reply>) -> Backend {
        assert!(!replies.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let replies = Arc::new(Replies {
            list: replies,
            played: AtomicUsize::new(0),
            received: Arc::clone(&received),
            closed: closed_tx,
        });
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = count.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(serve(stream, conn, Arc::clone(&replies)));
            }
        });
        Backend {
            addr,
            accepted,
            received,
            closed,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// TCP connections accepted so far.
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Every request read so far, in order. A request is recorded before its reply is
    /// written, so once the client has an answer, its request is here.
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until the backend has closed a connection; returns its number.
    async fn next_close(&mut self) -> usize {
        self.closed.recv().await.expect("the backend stopped")
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads requests on one connection and answers each with the next scripted reply.
async fn serve(stream: TcpStream, conn: usize, replies: Arc<Replies>) {
    let mut stream = BufReader::new(stream);
    while let Some(received) = read_request(&mut stream, conn).await {
        let reply = replies.next();
        replies.received.lock().unwrap().push(received);
        if stream.get_mut().write_all(&reply.bytes).await.is_err() {
            return;
        }
        if let Then::Close = reply.then {
            let _ = stream.get_mut().shutdown().await;
            drop(stream);
            let _ = replies.closed.send(conn);
            return;
        }
    }
}

/// Reads one request: the head up to its blank line, then the body its framing announces.
/// `None` when the connection ends (or breaks) first.
async fn read_request(stream: &mut BufReader<TcpStream>, conn: usize) -> Option<Received> {
    let mut head = Vec::new();
    loop {
        let start = head.len();
        if stream.read_until(b'\n', &mut head).await.ok()? == 0 {
            return None;
        }
        if &head[start..] == b"\r\n" {
            break;
        }
    }
    let head = String::from_utf8(head).ok()?;
    let mut wire_body = Vec::new();
    let mut body = Vec::new();
    let chunked = header(&head, "transfer-encoding").is_some_and(|te| te.contains("chunked"));
    if chunked {
        loop {
            let mut line = Vec::new();
            if stream.read_until(b'\n', &mut line).await.ok()? == 0 {
                return None;
            }
            wire_body.extend_from_slice(&line);
            let size = std::str::from_utf8(&line).ok()?;
            let size = size.split([';', '\r']).next()?.trim();
            let size = usize::from_str_radix(size, 16).ok()?;
            if size == 0 {
                // The trailer section, up to its blank line.
                loop {
                    let mut line = Vec::new();
                    if stream.read_until(b'\n', &mut line).await.ok()? == 0 {
                        return None;
                    }
                    wire_body.extend_from_slice(&line);
                    if line == b"\r\n" {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; size + 2];
            stream.read_exact(&mut chunk).await.ok()?;
            wire_body.extend_from_slice(&chunk);
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = header(&head, "content-length") {
        body = vec![0; length.parse().ok()?];
        stream.read_exact(&mut body).await.ok()?;
        wire_body = body.clone();
    }
    Some(Received {
        conn,
        head,
        wire_body,
        body,
    })
}

/// A gateway with one cluster on `backend` and a route taking everything.
async fn gateway(backend: &Backend) -> Gateway {
    Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "c"
        backends = [{{ url = "{}" }}]

        [[routes]]
        name = "all"
        cluster = "c"
        "#,
        backend.url()
    ))
    .await
}

/// `GET url` with the answer's body read, failing the test if it hangs.
async fn get_ok(url: &str) -> common::Answer {
    let answer = within(get(url)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer
}

// ---------------------------------------------------------------------------------------------
// Response framing.
// ---------------------------------------------------------------------------------------------

/// A chunked answer with odd sizes (upper-case hex, a leading zero), chunk extensions
/// (bare, with values, quoted with a `;` inside) and a trailer section of two fields.
const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\
    transfer-encoding: chunked\r\ntrailer: x-digest\r\n\r\n\
    1\r\na\r\n\
    1B;name=value\r\nbcdefghijklmnopqrstuvwxyz01\r\n\
    0a;quoted=\"a;b\";bare\r\n23456789AB\r\n\
    0\r\nx-digest: abc\r\nx-more: 1\r\n\r\n";

/// The body of [`CHUNKED`] without its framing.
const CHUNKED_BODY: &str = "abcdefghijklmnopqrstuvwxyz0123456789AB";

#[tokio::test]
async fn a_chunked_body_with_extensions_and_trailers_arrives_exactly() {
    let backend = Backend::start(vec![Reply::keep(CHUNKED), Reply::keep(OK)]).await;
    let gw = gateway(&backend).await;

    assert_eq!(get_ok(&gw.url("/chunked")).await.text(), CHUNKED_BODY);
    assert_eq!(get_ok(&gw.url("/next")).await.text(), "ok");
    gw.stop().await;
}

#[tokio::test]
async fn a_connection_is_reused_after_a_trailer_section() {
    let backend = Backend::start(vec![Reply::keep(CHUNKED), Reply::keep(OK)]).await;
    let gw = gateway(&backend).await;

    assert_eq!(get_ok(&gw.url("/chunked")).await.text(), CHUNKED_BODY);
    // The trailer section was read to its blank line and no further: the next answer on
    // the same connection starts where it should.
    assert_eq!(get_ok(&gw.url("/next")).await.text(), "ok");
    assert_eq!(backend.accepted(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_body_delimited_by_close_arrives_whole_and_the_connection_is_not_reused() {
    // Long enough to take many reads.
    let body: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut until_close = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n".to_vec();
    until_close.extend_from_slice(&body);
    let backend = Backend::start(vec![Reply::close(&until_close), Reply::keep(OK)]).await;
    let gw = gateway(&backend).await;

    let answer = get_ok(&gw.url("/until-close")).await;
    assert_eq!(answer.body.len(), body.len());
    assert!(answer.body == body, "the body differs from what was sent");
    assert_eq!(get_ok(&gw.url("/next")).await.text(), "ok");
    assert_eq!(backend.accepted(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn a_head_response_has_no_body_and_its_connection_is_reused() {
    let backend = Backend::start(vec![
        Reply::keep(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1234\r\n\r\n",
        ),
        Reply::keep(OK),
    ])
    .await;
    let gw = gateway(&backend).await;

    let head = Request::head(gw.url("/v1/models"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let answer = within(send(head)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-length"), "1234");
    assert!(answer.body.is_empty());
    // Had the 1234 announced bytes been awaited, this would hang or read garbage.
    assert_eq!(get_ok(&gw.url("/v1/models")).await.text(), "ok");
    assert_eq!(backend.accepted(), 1);
    let received = backend.received();
    assert!(received[0].head.starts_with("HEAD /v1/models HTTP/1.1\r\n"));
    assert!(received[1].head.starts_with("GET /v1/models HTTP/1.1\r\n"));
    gw.stop().await;
}

#[tokio::test]
async fn no_content_and_not_modified_have_no_body_and_keep_the_connection() {
    let backend = Backend::start(vec![
        Reply::keep(b"HTTP/1.1 204 No Content\r\nx-status: 204\r\n\r\n"),
        // A 304 may announce the length of the body it does not send.
        Reply::keep(b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 1234\r\n\r\n"),
        Reply::keep(OK),
    ])
    .await;
    let gw = gateway(&backend).await;

    let no_content = within(get(&gw.url("/a"))).await;
    assert_eq!(no_content.status, 204);
    assert_eq!(no_content.header("x-status"), "204");
    assert!(no_content.body.is_empty());
    let not_modified = within(get(&gw.url("/b"))).await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("etag"), "\"v1\"");
    assert!(not_modified.body.is_empty());
    assert_eq!(get_ok(&gw.url("/c")).await.text(), "ok");
    assert_eq!(backend.accepted(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn interim_responses_are_skipped_and_the_final_one_reaches_the_client() {
    let backend = Backend::start(vec![
        Reply::keep(
            b"HTTP/1.1 100 Continue\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
              HTTP/1.1 200 OK\r\nx-final: yes\r\ncontent-length: 5\r\n\r\nfinal",
        ),
        Reply::keep(OK),
    ])
    .await;
    let gw = gateway(&backend).await;

    let answer = get_ok(&gw.url("/interim")).await;
    assert_eq!(answer.header("x-final"), "yes");
    assert_eq!(answer.text(), "final");
    assert_eq!(get_ok(&gw.url("/next")).await.text(), "ok");
    assert_eq!(backend.accepted(), 1);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Keep-alive: when a connection is reused and when it must not be.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let backend = Backend::start(vec![
        Reply::keep(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none"),
        Reply::keep(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n"),
        Reply::keep(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nthree"),
    ])
    .await;
    let gw = gateway(&backend).await;

    for expected in ["one", "two", "three"] {
        assert_eq!(get_ok(&gw.url("/x")).await.text(), expected);
    }
    assert_eq!(backend.accepted(), 1);
    assert!(backend.received().iter().all(|r| r.conn == 1));
    gw.stop().await;
}

#[tokio::test]
async fn a_response_with_connection_close_ends_its_connection() {
    // The backend says close but leaves the connection open: sluice must close it itself.
    let backend = Backend::start(vec![
        Reply::keep(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbye"),
        Reply::keep(OK),
    ])
    .await;
    let gw = gateway(&backend).await;

    assert_eq!(get_ok(&gw.url("/x")).await.text(), "bye");
    assert_eq!(get_ok(&gw.url("/x")).await.text(), "ok");
    assert_eq!(backend.accepted(), 2);
    assert_eq!(backend.received()[1].conn, 2);
    gw.stop().await;
}

#[tokio::test]
async fn an_http10_response_without_keep_alive_ends_its_connection() {
    let backend = Backend::start(vec![
        Reply::keep(b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nold"),
        Reply::keep(OK),
    ])
    .await;
    let gw = gateway(&backend).await;

    assert_eq!(get_ok(&gw.url("/x")).await.text(), "old");
    assert_eq!(get_ok(&gw.url("/x")).await.text(), "ok");
    assert_eq!(backend.accepted(), 2);
    assert_eq!(backend.received()[1].conn, 2);
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_connection_the_backend_closed_is_not_used() {
    let mut backend = Backend::start(vec![Reply::close(OK), Reply::keep(OK)]).await;
    let gw = gateway(&backend).await;

    assert_eq!(get_ok(&gw.url("/x")).await.text(), "ok");
    assert_eq!(within(backend.next_close()).await, 1);
    // Not even a POST, which cannot be sent again, may be lost to the closed connection.
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let answer = within(post_json(&gw.url("/v1/chat/completions"), &chat)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.text(), "ok");
    assert_eq!(backend.accepted(), 2);
    let received = backend.received();
    assert_eq!(received[1].conn, 2);
    assert_eq!(received[1].body, chat.to_string().as_bytes());
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Answers sluice refuses, and answers cut short.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_malformed_status_line_is_502() {
    // The connection stays open: the gateway must not wait for something better.
    let backend = Backend::start(vec![Reply::keep(
        b"HTTP/1.1 abc\r\ncontent-length: 0\r\n\r\n",
    )])
    .await;
    let gw = gateway(&backend).await;

    within(get(&gw.url("/x")))
        .await
        .assert_error(502, "bad_gateway");
    gw.stop().await;
}

/// A `200` whose head holds one field of `size` bytes, and the body `ok`.
fn with_big_field(size: usize) -> Vec<u8> {
    let mut head = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    head.resize(head.len() + size, b'b');
    head.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
    head
}

#[tokio::test]
async fn a_response_head_over_64_kib_is_502() {
    let backend = Backend::start(vec![Reply::keep(&with_big_field(MAX_HEAD + 1024))]).await;
    let gw = gateway(&backend).await;

    within(get(&gw.url("/x")))
        .await
        .assert_error(502, "bad_gateway");
    gw.stop().await;
}

#[tokio::test]
async fn a_response_head_of_half_the_limit_passes() {
    let backend = Backend::start(vec![Reply::keep(&with_big_field(MAX_HEAD / 2))]).await;
    let gw = gateway(&backend).await;

    let answer = get_ok(&gw.url("/x")).await;
    assert_eq!(answer.header("x-big").len(), MAX_HEAD / 2);
    assert_eq!(answer.text(), "ok");
    gw.stop().await;
}

#[tokio::test]
async fn conflicting_content_lengths_are_502() {
    let backend = Backend::start(vec![
        Reply::keep(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!"),
        Reply::keep(b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello!"),
    ])
    .await;
    let gw = gateway(&backend).await;

    for _ in 0..2 {
        within(get(&gw.url("/x")))
            .await
            .assert_error(502, "bad_gateway");
    }
    assert_eq!(backend.received().len(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn a_backend_closing_mid_body_cuts_the_clients_response() {
    let backend = Backend::start(vec![
        Reply::close(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789"),
        Reply::keep(OK),
    ])
    .await;
    let gw = gateway(&backend).await;

    within(async {
        let request = Request::get(gw.url("/x"))
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = open(request).await;
        assert_eq!(response.status(), 200);
        let (data, error) = drain(response.into_body()).await;
        assert!(b"0123456789".starts_with(&data), "{data:?}");
        assert!(error.is_some(), "a cut body must not end cleanly");
    })
    .await;
    // The broken connection was not pooled.
    assert_eq!(get_ok(&gw.url("/x")).await.text(), "ok");
    assert_eq!(backend.accepted(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn chunked_with_a_content_length_is_read_as_chunked_and_not_reused() {
    // Transfer-Encoding overrides Content-Length, and an intermediary must drop the received
    // Content-Length before forwarding (RFC 9112 §6.3). Such a message is a smuggling risk:
    // the connection is not trusted with another request.
    let backend = Backend::start(vec![
        Reply::keep(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        ),
        Reply::keep(OK),
    ])
    .await;
    let gw = gateway(&backend).await;

    let answer = get_ok(&gw.url("/x")).await;
    assert_eq!(answer.text(), "hello");
    let length = answer.header("content-length");
    assert!(
        length.is_empty() || length == "5",
        "content-length: {length}"
    );
    assert_eq!(get_ok(&gw.url("/x")).await.text(), "ok");
    assert_eq!(backend.accepted(), 2);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// What the backend receives.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_json_post_arrives_with_its_length_and_exact_body() {
    let backend = Backend::start(vec![Reply::keep(OK)]).await;
    let gw = gateway(&backend).await;

    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "héllo, wörld"}]});
    let answer = within(post_json(&gw.url("/v1/chat/completions"), &chat)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let received = backend.received().pop().unwrap();
    assert!(
        received
            .head
            .starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
        "{}",
        received.head
    );
    let sent = chat.to_string();
    assert_eq!(
        received.header("content-length"),
        Some(sent.len().to_string().as_str())
    );
    assert_eq!(received.header("transfer-encoding"), None);
    assert_eq!(received.body, sent.as_bytes());
    gw.stop().await;
}

#[tokio::test]
async fn a_chunked_request_body_arrives_whole() {
    let backend = Backend::start(vec![Reply::keep(OK)]).await;
    let gw = gateway(&backend).await;

    let parts = ["first,", "second and longer,", "3"];
    let (tx, body) = channel_body();
    for part in parts {
        tx.send(Bytes::from(part)).await.unwrap();
    }
    drop(tx);
    let request = Request::post(gw.url("/upload")).body(body).unwrap();
    let response = within(open(request)).await;
    assert_eq!(response.status(), 200);
    let (data, error) = within(drain(response.into_body())).await;
    assert!(error.is_none());
    assert_eq!(data, "ok");

    let received = backend.received().pop().unwrap();
    let sent = parts.concat();
    assert_eq!(received.body, sent.as_bytes());
    // Chunked on, or buffered and sent with its length: either way, one framing only.
    match received.header("transfer-encoding") {
        Some(te) => {
            assert_eq!(te, "chunked");
            assert_eq!(received.header("content-length"), None);
        }
        None => assert_eq!(
            received.header("content-length"),
            Some(sent.len().to_string().as_str())
        ),
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_get_arrives_without_a_body_or_transfer_encoding() {
    let backend = Backend::start(vec![Reply::keep(OK)]).await;
    let gw = gateway(&backend).await;

    get_ok(&gw.url("/first?q=1")).await;
    get_ok(&gw.url("/second")).await;
    let received = backend.received();
    assert!(received[0].head.starts_with("GET /first?q=1 HTTP/1.1\r\n"));
    assert_eq!(received[0].header("transfer-encoding"), None);
    assert!(matches!(
        received[0].header("content-length"),
        None | Some("0")
    ));
    assert!(received[0].wire_body.is_empty());
    // Nothing stray between the two requests on the connection.
    assert_eq!(received[1].conn, received[0].conn);
    assert!(
        received[1].head.starts_with("GET /second HTTP/1.1\r\n"),
        "{:?}",
        received[1].head
    );
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A backend that refuses an upload before reading it.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_early_answer_to_an_upload_reaches_the_client() {
    // The backend reads the head, answers 413 and closes with the body unread (a reset):
    // sluice's write of the body fails, and the answer already in its socket is passed on.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            socket.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        socket
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large")
            .await
            .unwrap();
        drop(socket);
    });
    let gw = Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "c"
        backends = [{{ url = "http://{addr}" }}]

        [[routes]]
        name = "all"
        cluster = "c"
        "#
    ))
    .await;

    let upload = Request::post(gw.url("/v1/files"))
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(vec![b'x'; 4 << 20])))
        .unwrap();
    let answer = within(send(upload)).await;
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert_eq!(answer.text(), "too large");
    backend.await.unwrap();
    gw.stop().await;
}

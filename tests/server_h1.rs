//! What an HTTP/1.1 client must see of sluice, byte for byte: keep-alive and pipelining,
//! HTTP/1.0, `Connection: close`, request bodies (Content-Length, chunked with extensions and
//! trailers, `Expect: 100-continue`), requests that must be refused (smuggling, bad framing,
//! malformed or oversized heads), how answers are framed (HEAD, 204, 304, streamed bodies,
//! SSE events), timeouts on silent clients, and clients that leave mid-request.
//!
//! The client is a raw TCP socket that writes exactly the bytes each test gives it and reads
//! the answers with a small parser of its own, so the framing on the wire is the gateway's and
//! not a client library's. The upstreams are real HTTP servers (the common helpers) that
//! record what reached them, so a test can tell what the gateway forwarded and what it did
//! not.
//!
//! These tests pin down the server side of sluice's HTTP/1.1, whichever implementation serves
//! it. Where the current server answers an error with an empty body, only the status is
//! asserted.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{Gateway, StreamUpstream, Tap, TapEvent, Upstream};
use http::Response;
use http_body_util::Full;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Generous guard against hangs; no assertion depends on it.
const HANG_GUARD: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it hangs.
async fn within<F: Future>(future: F) -> F::Output {
    timeout(HANG_GUARD, future).await.expect("hang")
}

// ---------------------------------------------------------------------------------------------
// A client that writes raw bytes and parses the answers itself.
// ---------------------------------------------------------------------------------------------

/// One client connection to the gateway.
struct Client {
    reader: OwnedReadHalf,
    /// `None` once a test has taken it to write from a task of its own.
    writer: Option<OwnedWriteHalf>,
    /// Bytes read from the socket and not parsed yet.
    buf: Vec<u8>,
}

/// A response's status line and header fields, as sent.
#[derive(Debug)]
struct Head {
    /// The status line without its CRLF, such as `HTTP/1.1 200 OK`.
    status_line: String,
    status: u16,
    /// Every header field in order, names as sent.
    fields: Vec<(String, String)>,
}

impl Head {
    /// The value of the first field called `name`.
    fn header(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The values of every field called `name`.
    fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// Whether a comma-separated list field (`Connection`, `Transfer-Encoding`) holds `token`.
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .iter()
            .flat_map(|value| value.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// How the body after this head is delimited, in answer to a `method` request (RFC 9112
    /// §6.3). Also checks what any client relies on: one framing only, and one length.
    fn framing(&self, method: &str) -> Framing {
        let lengths = self.all("content-length");
        let codings = self.all("transfer-encoding");
        assert!(
            lengths.is_empty() || codings.is_empty(),
            "both Content-Length and Transfer-Encoding: {self:?}"
        );
        assert!(
            lengths.len() <= 1,
            "several Content-Length fields: {self:?}"
        );
        if method == "HEAD" || self.status / 100 == 1 || self.status == 204 || self.status == 304 {
            return Framing::Bodiless;
        }
        if !codings.is_empty() {
            assert!(
                self.has_token("transfer-encoding", "chunked"),
                "a transfer coding other than chunked: {self:?}"
            );
            return Framing::Chunked;
        }
        match lengths.first() {
            Some(length) => Framing::Length(
                length
                    .parse()
                    .unwrap_or_else(|_| panic!("bad Content-Length: {self:?}")),
            ),
            None => Framing::Close,
        }
    }
}

/// How a response body was delimited on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Framing {
    /// No body, by the rules of the method or the status (HEAD, 1xx, 204, 304).
    Bodiless,
    /// By `Content-Length`.
    Length(usize),
    /// Chunked.
    Chunked,
    /// By the server closing the connection.
    Close,
}

/// A response read whole.
#[derive(Debug)]
struct Answer {
    head: Head,
    framing: Framing,
    /// The body with its framing taken off.
    body: Vec<u8>,
}

impl Answer {
    fn status(&self) -> u16 {
        self.head.status
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (the echo upstream's record of the request, or an error).
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} {}", self.head, self.text()))
    }

    /// Asserts an OpenAI-style error body with this status and code.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status(), status, "{:?} {}", self.head, self.text());
        let json = self.json();
        assert_eq!(json["error"]["code"], code, "{json}");
        assert!(json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let (reader, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        Client {
            reader,
            writer: Some(writer),
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` as they are, in one write.
    async fn send(&mut self, bytes: &[u8]) {
        let writer = self.writer.as_mut().expect("the writer was taken");
        writer.write_all(bytes).await.unwrap();
    }

    /// The sending half, for a test that writes while it reads.
    fn take_writer(&mut self) -> OwnedWriteHalf {
        self.writer.take().expect("the writer was taken")
    }

    /// Reads what the socket has into the buffer; `false` once the gateway has closed the
    /// connection (a FIN, or a reset).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.reader.read(&mut chunk).await {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// The next line without its CRLF; the test fails if the connection ends first or the
    /// line ends with a bare LF.
    async fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                assert!(
                    line.ends_with(b"\r\n"),
                    "a line ends with a bare LF: {:?}",
                    String::from_utf8_lossy(&line)
                );
                line.truncate(line.len() - 2);
                return line;
            }
            let before = String::from_utf8_lossy(&self.buf).into_owned();
            assert!(
                self.fill().await,
                "closed in the middle of a line: {before:?}"
            );
        }
    }

    /// The next `n` bytes.
    async fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let have = self.buf.len();
            assert!(self.fill().await, "closed after {have} of {n} bytes");
        }
        self.buf.drain(..n).collect()
    }

    /// A status line and its header fields, up to the blank line.
    async fn head(&mut self) -> Head {
        let status_line = String::from_utf8(self.line().await).unwrap();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        assert!(
            version == "HTTP/1.1" || version == "HTTP/1.0",
            "not a status line: {status_line:?}"
        );
        let status = parts
            .next()
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let mut fields = Vec::new();
        loop {
            let line = String::from_utf8(self.line().await).unwrap();
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("not a header field: {line:?}"));
            assert!(
                !name.is_empty() && !name.ends_with([' ', '\t']),
                "bad field name: {line:?}"
            );
            fields.push((name.to_owned(), value.trim().to_owned()));
        }
        Head {
            status_line,
            status,
            fields,
        }
    }

    /// The next response whole, read as the answer to a `method` request.
    async fn answer(&mut self, method: &str) -> Answer {
        let head = self.head().await;
        let framing = head.framing(method);
        let body = match framing {
            Framing::Bodiless => Vec::new(),
            Framing::Length(n) => self.exact(n).await,
            Framing::Chunked => {
                let mut body = Vec::new();
                while let Some(chunk) = self.chunk().await {
                    body.extend_from_slice(&chunk);
                }
                body
            }
            Framing::Close => self.closed().await,
        };
        Answer {
            head,
            framing,
            body,
        }
    }

    /// The data of the next chunk of a chunked body; `None` at the last chunk, once its
    /// trailer section has been read.
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        let line = String::from_utf8(self.line().await).unwrap();
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .unwrap_or_else(|_| panic!("not a chunk size line: {line:?}"));
        if size == 0 {
            while !self.line().await.is_empty() {}
            return None;
        }
        let data = self.exact(size).await;
        assert_eq!(self.exact(2).await, b"\r\n", "a chunk without its CRLF");
        Some(data)
    }

    /// Reads until the gateway closes the connection; returns what came before the close.
    async fn closed(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }

    /// Asserts that `answer` said `connection: close` and the gateway then closed with
    /// nothing more to say.
    async fn assert_closes_after(&mut self, answer: &Answer) {
        assert!(
            answer.head.has_token("connection", "close"),
            "{:?}",
            answer.head
        );
        self.assert_closed().await;
    }

    /// Asserts that the gateway closes the connection with nothing more to say.
    async fn assert_closed(&mut self) {
        let rest = within(self.closed()).await;
        assert!(
            rest.is_empty(),
            "bytes after the answer: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Gateways and requests.
// ---------------------------------------------------------------------------------------------

/// An echoing upstream, a gateway in front of it with `server` settings, and a client
/// connected to the gateway.
async fn echo_gateway(server: &str) -> (Upstream, Gateway, Client) {
    let upstream = Upstream::echo("u").await;
    let gw = gateway(server, &upstream.url()).await;
    let client = Client::connect(gw.http).await;
    (upstream, gw, client)
}

/// A gateway with `server` as its `[server]` section, one cluster on `upstream`, and a route
/// taking everything.
async fn gateway(server: &str, upstream: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
        [server]
        {server}

        [[clusters]]
        name = "c"
        backends = [{{ url = "{upstream}" }}]

        [[routes]]
        name = "all"
        cluster = "c"
        "#
    ))
    .await
}

/// `GET path` with a Host field.
fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: sluice.test\r\n\r\n").into_bytes()
}

/// `POST path` with `body` framed by Content-Length.
fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: sluice.test\r\ncontent-type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Asserts `answer` is the echo upstream's 200 for `method uri` with `body`.
fn assert_echo(answer: &Answer, method: &str, uri: &str, body: &str) {
    assert_eq!(answer.status(), 200, "{:?} {}", answer.head, answer.text());
    let echo = answer.json();
    assert_eq!(echo["method"], method, "{echo}");
    assert_eq!(echo["uri"], uri, "{echo}");
    assert_eq!(echo["body"], body, "{echo}");
}

/// Asserts that nothing reached `upstream` but a request sent now: a fresh `GET /sentinel`
/// goes through, and it is the only request the upstream has seen.
async fn assert_nothing_forwarded(gw: &Gateway, upstream: &Upstream) {
    let mut client = Client::connect(gw.http).await;
    client.send(&get("/sentinel")).await;
    let answer = within(client.answer("GET")).await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    let seen: Vec<String> = upstream
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.uri))
        .collect();
    assert_eq!(seen, ["GET /sentinel"], "the upstream saw more");
}

// ---------------------------------------------------------------------------------------------
// Keep-alive, pipelining, HTTP/1.0 and Connection: close.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn two_requests_on_one_connection_are_both_answered() {
    let (upstream, gw, mut client) = echo_gateway("").await;

    client.send(&post("/first", "one body")).await;
    let first = within(client.answer("POST")).await;
    assert_echo(&first, "POST", "/first", "one body");
    assert!(
        !first.head.has_token("connection", "close"),
        "{:?}",
        first.head
    );
    client.send(&post("/second", "another, longer body")).await;
    let second = within(client.answer("POST")).await;
    assert_echo(&second, "POST", "/second", "another, longer body");

    let bodies: Vec<Bytes> = upstream.seen().into_iter().map(|s| s.body).collect();
    assert_eq!(bodies, ["one body", "another, longer body"]);
    gw.stop().await;
}

#[tokio::test]
async fn draining_closes_idle_keep_alive_connections_at_once() {
    // The wait for a first head and the waits after one and two answers watch for draining
    // differently (the later ones register once per connection); each must see it. With an
    // hour to drain and to read a head, only that watch can close them before the guard
    // fails the test.
    let server = "drain_timeout = \"1h\"\nheader_read_timeout = \"1h\"";
    let (_upstream, gw, mut fresh) = echo_gateway(server).await;
    let mut used = Vec::new();
    for requests in [1, 2] {
        let mut client = Client::connect(gw.http).await;
        for n in 0..requests {
            client.send(&get(&format!("/{n}"))).await;
            assert_echo(
                &within(client.answer("GET")).await,
                "GET",
                &format!("/{n}"),
                "",
            );
        }
        used.push(client);
    }
    within(gw.stop()).await;
    assert!(within(fresh.closed()).await.is_empty());
    for mut client in used {
        assert!(within(client.closed()).await.is_empty());
    }
}

#[tokio::test]
async fn a_request_still_running_when_the_drain_time_ends_is_cut() {
    // The forced close is registered once per connection, then read at each wakeup: the
    // wakeups of the request before it must not have lost it.
    let (upstream, mut arrived) = Upstream::held(b"too late").await;
    let gw = gateway(r#"drain_timeout = "100ms""#, &upstream.url()).await;
    let mut client = Client::connect(gw.http).await;
    client.send(&get("/held")).await;
    let _release = within(arrived.recv()).await.unwrap();
    within(gw.stop()).await;
    assert!(within(client.closed()).await.is_empty());
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (_upstream, gw, mut client) = echo_gateway("").await;

    // Two, then three, each batch in a single write.
    client
        .send(&[post("/p1", "first").as_slice(), &get("/p2")].concat())
        .await;
    assert_echo(&within(client.answer("POST")).await, "POST", "/p1", "first");
    assert_echo(&within(client.answer("GET")).await, "GET", "/p2", "");

    client
        .send(
            &[
                get("/p3"),
                post("/p4", "fourth"),
                post("/p5", "and the fifth"),
            ]
            .concat(),
        )
        .await;
    assert_echo(&within(client.answer("GET")).await, "GET", "/p3", "");
    assert_echo(
        &within(client.answer("POST")).await,
        "POST",
        "/p4",
        "fourth",
    );
    assert_echo(
        &within(client.answer("POST")).await,
        "POST",
        "/p5",
        "and the fifth",
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_request_sent_while_the_one_before_waits_is_answered_next() {
    let (upstream, mut arrived) = Upstream::held(b"held answer").await;
    let gw = gateway("", &upstream.url()).await;
    let mut client = Client::connect(gw.http).await;

    client.send(&get("/first")).await;
    let first = within(arrived.recv())
        .await
        .expect("the first request arrives");
    // The next request comes while the first waits on the upstream, when the gateway is
    // watching the socket for the client leaving: it is the next request, not a departure.
    client.send(&get("/second")).await;
    first.send(()).expect("the upstream still holds the first");
    let answer = within(client.answer("GET")).await;
    assert_eq!(
        (answer.status(), answer.text().as_str()),
        (200, "held answer")
    );

    let second = within(arrived.recv())
        .await
        .expect("the second request arrives");
    second
        .send(())
        .expect("the upstream still holds the second");
    let answer = within(client.answer("GET")).await;
    assert_eq!(
        (answer.status(), answer.text().as_str()),
        (200, "held answer")
    );
    let paths: Vec<String> = upstream.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(paths, ["/first", "/second"]);
    gw.stop().await;
}

#[tokio::test]
async fn http10_without_keep_alive_is_answered_then_closed() {
    let (_upstream, gw, mut client) = echo_gateway("").await;

    client
        .send(b"POST /old HTTP/1.0\r\nHost: sluice.test\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let answer = within(client.answer("POST")).await;
    assert_echo(&answer, "POST", "/old", "hello");
    assert!(
        !answer.head.has_token("connection", "keep-alive"),
        "{:?}",
        answer.head
    );
    client.assert_closed().await;
    gw.stop().await;
}

#[tokio::test]
async fn http10_with_keep_alive_serves_a_second_request() {
    let (_upstream, gw, mut client) = echo_gateway("").await;

    client
        .send(
            b"POST /a HTTP/1.0\r\nHost: sluice.test\r\nConnection: keep-alive\r\n\
              Content-Length: 5\r\n\r\nfirst",
        )
        .await;
    let first = within(client.answer("POST")).await;
    assert_echo(&first, "POST", "/a", "first");
    // An HTTP/1.0 client keeps the connection only if the answer says so, and can only
    // when the body is delimited by a length.
    assert!(
        first.head.has_token("connection", "keep-alive"),
        "{:?}",
        first.head
    );
    assert!(
        matches!(first.framing, Framing::Length(_)),
        "{:?}",
        first.framing
    );

    client
        .send(b"GET /b HTTP/1.0\r\nHost: sluice.test\r\nConnection: keep-alive\r\n\r\n")
        .await;
    assert_echo(&within(client.answer("GET")).await, "GET", "/b", "");
    gw.stop().await;
}

#[tokio::test]
async fn connection_close_from_the_client_is_answered_then_closed() {
    let (_upstream, gw, mut client) = echo_gateway("").await;

    client
        .send(b"GET /bye HTTP/1.1\r\nHost: sluice.test\r\nConnection: close\r\n\r\n")
        .await;
    let answer = within(client.answer("GET")).await;
    assert_echo(&answer, "GET", "/bye", "");
    client.assert_closes_after(&answer).await;
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Request bodies.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_chunked_body_with_extensions_and_trailers_arrives_whole() {
    let (upstream, gw, mut client) = echo_gateway("").await;

    client
        .send(
            b"POST /chunked HTTP/1.1\r\nHost: sluice.test\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n\
              0007;quoted=\"a;b\";bare\r\n, world\r\n\
              A\r\n0123456789\r\n\
              0\r\nx-digest: abc\r\nx-more: 1\r\n\r\n",
        )
        .await;
    let answer = within(client.answer("POST")).await;
    assert_echo(&answer, "POST", "/chunked", "hello, world0123456789");
    // The trailer section was read to its blank line and no further.
    client.send(&get("/next")).await;
    assert_echo(&within(client.answer("GET")).await, "GET", "/next", "");
    assert_eq!(upstream.seen()[0].body, "hello, world0123456789");
    gw.stop().await;
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let (_upstream, gw, mut client) = echo_gateway("").await;

    client
        .send(
            b"POST /upload HTTP/1.1\r\nHost: sluice.test\r\nExpect: 100-continue\r\n\
              Content-Length: 12\r\n\r\n",
        )
        .await;
    let interim = within(client.head()).await;
    assert_eq!(interim.status_line, "HTTP/1.1 100 Continue");
    client.send(b"late payload").await;
    let answer = within(client.answer("POST")).await;
    assert_echo(&answer, "POST", "/upload", "late payload");
    gw.stop().await;
}

#[tokio::test]
async fn expect_100_continue_over_the_body_limit_gets_413_without_100() {
    let (upstream, gw, mut client) = echo_gateway(r#"max_request_body = "1KiB""#).await;

    client
        .send(
            b"POST /upload HTTP/1.1\r\nHost: sluice.test\r\nExpect: 100-continue\r\n\
              Content-Length: 4096\r\n\r\n",
        )
        .await;
    // The final answer comes at once: no `100 Continue` invites a body that is refused.
    let answer = within(client.answer("POST")).await;
    answer.assert_error(413, "request_too_large");
    drop(client);
    assert_nothing_forwarded(&gw, &upstream).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_declared_body_over_the_limit_gets_413_while_the_client_keeps_sending() {
    let (upstream, gw, mut client) = echo_gateway(r#"max_request_body = "1KiB""#).await;
    let mut writer = client.take_writer();
    // The client sends its body right behind the head without waiting for an answer, as
    // most do, so the gateway answers with body bytes unread. The writes may fail once the
    // gateway has closed; the answer must still be readable.
    let sender = tokio::spawn(async move {
        let body_len = 1 << 20;
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: sluice.test\r\nContent-Length: {body_len}\r\n\r\n"
        );
        let piece = vec![b'x'; 64 * 1024];
        let mut sent = writer.write_all(head.as_bytes()).await;
        for _ in 0..body_len / piece.len() {
            if sent.is_err() {
                return;
            }
            sent = writer.write_all(&piece).await;
        }
    });
    let answer = within(client.answer("POST")).await;
    answer.assert_error(413, "request_too_large");
    sender.abort();
    assert_nothing_forwarded(&gw, &upstream).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_client_leaving_mid_body_does_not_disturb_the_next() {
    let mut tap = Tap::start().await;
    let gw = gateway("", &tap.url()).await;

    let mut client = Client::connect(gw.http).await;
    client
        .send(b"POST /aborted HTTP/1.1\r\nHost: sluice.test\r\nContent-Length: 1000\r\n\r\n")
        .await;
    client.send(&[b'a'; 100]).await;
    // The request is on its way upstream, its body still streaming: now the client leaves.
    match within(tap.next_event()).await {
        TapEvent::Head { uri } => assert_eq!(uri, "/aborted"),
        other => panic!("expected the request head first, got {other:?}"),
    }
    drop(client);
    match within(tap.next_event()).await {
        TapEvent::Body { uri, body } => {
            assert_eq!(uri, "/aborted");
            assert!(
                body.is_err(),
                "the upstream received a complete body of {} bytes",
                body.unwrap().len()
            );
        }
        other => panic!("expected the body's end, got {other:?}"),
    }

    let mut client = Client::connect(gw.http).await;
    client.send(&post("/next", "served")).await;
    let answer = within(client.answer("POST")).await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert_eq!(answer.text(), "served");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Requests that must be refused.
// ---------------------------------------------------------------------------------------------

/// A request the upstream must never receive, hidden in another's body.
const HIDDEN: &str = "GET /smuggled HTTP/1.1\r\nHost: sluice.test\r\n\r\n";

/// Sends `request` on a fresh connection and asserts the safe outcome, whichever way the
/// gateway frames it: at most one answer (a 400, or the answer to the outer request), then
/// the connection closes, and the upstream never sees `/smuggled`.
async fn assert_not_smuggled(gw: &Gateway, upstream: &Upstream, request: &[u8]) {
    let mut client = Client::connect(gw.http).await;
    client.send(request).await;
    let answer = within(client.answer("POST")).await;
    assert!(
        answer.status() == 400 || answer.status() == 200,
        "{:?} {}",
        answer.head,
        answer.text()
    );
    if answer.status() == 200 {
        assert_eq!(answer.json()["uri"], "/front", "{}", answer.text());
    }
    // RFC 9112 §6.1: whatever it did, the server must close the connection afterwards, so
    // the bytes after the outer request are never read as a request.
    client.assert_closed().await;
    let smuggled: Vec<String> = upstream
        .seen()
        .iter()
        .map(|s| s.uri.clone())
        .filter(|uri| uri.contains("smuggled"))
        .collect();
    assert!(smuggled.is_empty(), "smuggled through: {smuggled:?}");
}

#[tokio::test]
async fn a_request_with_both_content_length_and_chunked_smuggles_nothing() {
    let upstream = Upstream::echo("u").await;
    let gw = gateway("", &upstream.url()).await;

    // Content-Length covers the whole; chunked ends at once and leaves the hidden request.
    let body = format!("0\r\n\r\n{HIDDEN}");
    let cl_te = format!(
        "POST /front HTTP/1.1\r\nHost: sluice.test\r\nContent-Length: {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    assert_not_smuggled(&gw, &upstream, cl_te.as_bytes()).await;

    // Chunked covers the whole; Content-Length ends after the size line and leaves the
    // hidden request. Transfer-Encoding comes first this time.
    let size_line = format!("{:x}\r\n", HIDDEN.len());
    let te_cl = format!(
        "POST /front HTTP/1.1\r\nHost: sluice.test\r\nTransfer-Encoding: chunked\r\n\
         Content-Length: {}\r\n\r\n{size_line}{HIDDEN}\r\n0\r\n\r\n",
        size_line.len()
    );
    assert_not_smuggled(&gw, &upstream, te_cl.as_bytes()).await;

    // A space before the colon: a server that ignored this line would frame by the length.
    let spaced = format!(
        "POST /front HTTP/1.1\r\nHost: sluice.test\r\nContent-Length: {}\r\n\
         Transfer-Encoding : chunked\r\n\r\n{body}",
        body.len()
    );
    assert_not_smuggled(&gw, &upstream, spaced.as_bytes()).await;

    // Whatever reached the upstream came as its own, single request.
    for seen in upstream.seen() {
        assert_eq!(seen.uri, "/front");
        assert!(
            seen.headers.get_all("content-length").iter().count()
                + seen.headers.get_all("transfer-encoding").iter().count()
                <= 1,
            "{:?}",
            seen.headers
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_invalid_content_length_is_400_and_closes() {
    let upstream = Upstream::echo("u").await;
    let gw = gateway("", &upstream.url()).await;

    for length in [
        "Content-Length: abc",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 5, 6",
        "Content-Length: +5",
        "Content-Length: -1",
    ] {
        let mut client = Client::connect(gw.http).await;
        client
            .send(
                format!("POST /x HTTP/1.1\r\nHost: sluice.test\r\n{length}\r\n\r\nhello!")
                    .as_bytes(),
            )
            .await;
        let answer = within(client.answer("POST")).await;
        assert_eq!(answer.status(), 400, "{length:?}: {:?}", answer.head);
        client.assert_closed().await;
    }
    assert_nothing_forwarded(&gw, &upstream).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_transfer_coding_other_than_chunked_last_is_refused_and_closes() {
    let upstream = Upstream::echo("u").await;
    let gw = gateway("", &upstream.url()).await;

    for coding in ["gzip", "chunked, gzip"] {
        let mut client = Client::connect(gw.http).await;
        client
            .send(
                format!(
                    "POST /x HTTP/1.1\r\nHost: sluice.test\r\nTransfer-Encoding: {coding}\r\n\r\n\
                     5\r\nhello\r\n0\r\n\r\n"
                )
                .as_bytes(),
            )
            .await;
        let answer = within(client.answer("POST")).await;
        let status = answer.status();
        assert!(
            (400..500).contains(&status) || status == 501,
            "{coding:?}: {:?}",
            answer.head
        );
        client.assert_closed().await;
    }
    assert_nothing_forwarded(&gw, &upstream).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_malformed_request_line_is_400_and_closes() {
    let upstream = Upstream::echo("u").await;
    let gw = gateway("", &upstream.url()).await;

    for line in [
        &b"GARBAGE"[..],
        b"GET /no-version",
        b"GET /\x01control HTTP/1.1",
        b"GET /two  spaces HTTP/1.1",
    ] {
        let mut client = Client::connect(gw.http).await;
        client
            .send(&[line, b"\r\nHost: sluice.test\r\n\r\n"].concat())
            .await;
        let answer = within(client.answer("GET")).await;
        let shown = String::from_utf8_lossy(line);
        assert_eq!(answer.status(), 400, "{shown:?}: {:?}", answer.head);
        client.assert_closed().await;
    }
    assert_nothing_forwarded(&gw, &upstream).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_head_over_max_header_size_is_431() {
    let upstream = Upstream::echo("u").await;
    let gw = gateway(r#"max_header_size = "8KiB""#, &upstream.url()).await;

    let mut client = Client::connect(gw.http).await;
    let big = format!(
        "GET /big HTTP/1.1\r\nHost: sluice.test\r\nX-Big: {}\r\n\r\n",
        "b".repeat(16 * 1024)
    );
    client.send(big.as_bytes()).await;
    let answer = within(client.answer("GET")).await;
    assert_eq!(answer.status(), 431, "{:?}", answer.head);
    client.assert_closed().await;
    assert_nothing_forwarded(&gw, &upstream).await;
    gw.stop().await;
}

#[tokio::test]
async fn more_fields_than_max_headers_is_431() {
    let upstream = Upstream::echo("u").await;
    let gw = gateway("max_headers = 10", &upstream.url()).await;

    let mut client = Client::connect(gw.http).await;
    let fields: String = (0..20).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    client
        .send(format!("GET /many HTTP/1.1\r\nHost: sluice.test\r\n{fields}\r\n").as_bytes())
        .await;
    let answer = within(client.answer("GET")).await;
    assert_eq!(answer.status(), 431, "{:?}", answer.head);
    drop(client);
    // Within the bound, the same shape of request is served.
    let mut client = Client::connect(gw.http).await;
    let fields: String = (0..8).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    client
        .send(format!("GET /sentinel HTTP/1.1\r\nHost: sluice.test\r\n{fields}\r\n").as_bytes())
        .await;
    assert_echo(&within(client.answer("GET")).await, "GET", "/sentinel", "");
    assert_eq!(
        upstream.seen().len(),
        1,
        "the request with 21 fields was forwarded"
    );
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// How answers are framed.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_head_answer_has_headers_but_no_body() {
    let (upstream, gw, mut client) = echo_gateway("").await;

    client
        .send(b"HEAD /v1/models HTTP/1.1\r\nHost: sluice.test\r\n\r\n")
        .await;
    let head = within(client.answer("HEAD")).await;
    assert_eq!(head.status(), 200, "{:?}", head.head);
    assert_eq!(head.header("x-upstream"), Some("u"), "{:?}", head.head);
    assert_eq!(head.header("content-type"), Some("application/json"));
    // Had any body bytes followed the head, they would be read as this answer's status line.
    client.send(&get("/after")).await;
    assert_echo(&within(client.answer("GET")).await, "GET", "/after", "");
    assert_eq!(upstream.seen()[0].method, "HEAD");
    gw.stop().await;
}

#[tokio::test]
async fn a_streamed_answer_is_chunked_to_http11_and_closed_to_http10() {
    let mut upstream = StreamUpstream::start().await;
    let gw = gateway("", &upstream.url()).await;
    let parts = ["first part, ", "second part, ", "the end"];

    // HTTP/1.1: chunked, and the connection stays usable.
    let mut client = Client::connect(gw.http).await;
    client.send(&get("/stream")).await;
    let stream = within(upstream.next()).await;
    for part in parts {
        stream.tx.send(Ok(Bytes::from(part))).await.unwrap();
    }
    drop(stream);
    let answer = within(client.answer("GET")).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.framing, Framing::Chunked, "{:?}", answer.head);
    assert_eq!(answer.header("content-length"), None);
    assert_eq!(answer.text(), parts.concat());
    client.send(&get("/again")).await;
    let stream = within(upstream.next()).await;
    stream.tx.send(Ok(Bytes::from("again"))).await.unwrap();
    drop(stream);
    assert_eq!(within(client.answer("GET")).await.text(), "again");

    // HTTP/1.0: no chunked coding; the close ends the body.
    let mut client = Client::connect(gw.http).await;
    client
        .send(b"GET /stream HTTP/1.0\r\nHost: sluice.test\r\n\r\n")
        .await;
    let stream = within(upstream.next()).await;
    for part in parts {
        stream.tx.send(Ok(Bytes::from(part))).await.unwrap();
    }
    drop(stream);
    let answer = within(client.answer("GET")).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.framing, Framing::Close, "{:?}", answer.head);
    assert_eq!(answer.text(), parts.concat());
    gw.stop().await;
}

#[tokio::test]
async fn no_content_and_not_modified_have_no_body_and_keep_the_connection() {
    let upstream = Upstream::start(|seen| async move {
        let response = match seen.uri.as_str() {
            "/204" => Response::builder().status(204).header("x-status", "204"),
            "/304" => Response::builder().status(304).header("etag", "\"v1\""),
            _ => Response::builder().status(200),
        };
        let body = if seen.uri == "/after" { "after" } else { "" };
        response.body(Full::new(Bytes::from(body))).unwrap()
    })
    .await;
    let gw = gateway("", &upstream.url()).await;
    let mut client = Client::connect(gw.http).await;

    client.send(&get("/204")).await;
    let no_content = within(client.answer("GET")).await;
    assert_eq!(no_content.status(), 204, "{:?}", no_content.head);
    assert_eq!(no_content.header("x-status"), Some("204"));
    assert_eq!(no_content.header("transfer-encoding"), None);
    assert_eq!(no_content.header("content-length"), None);

    client.send(&get("/304")).await;
    let not_modified = within(client.answer("GET")).await;
    assert_eq!(not_modified.status(), 304, "{:?}", not_modified.head);
    assert_eq!(not_modified.header("etag"), Some("\"v1\""));
    assert_eq!(not_modified.header("transfer-encoding"), None);

    // Any stray body byte of either would be read as this answer's status line.
    client.send(&get("/after")).await;
    let after = within(client.answer("GET")).await;
    assert_eq!(after.status(), 200);
    assert_eq!(after.text(), "after");
    gw.stop().await;
}

#[tokio::test]
async fn each_sse_event_arrives_as_its_own_chunk_before_the_next_is_sent() {
    let mut upstream = StreamUpstream::start().await;
    let gw = gateway("", &upstream.url()).await;
    let mut client = Client::connect(gw.http).await;
    let chat =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();

    client.send(&post("/v1/chat/completions", &chat)).await;
    let stream = within(upstream.next()).await;
    assert_eq!(stream.seen.body, chat);
    let head = within(client.head()).await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert!(head.has_token("transfer-encoding", "chunked"), "{head:?}");
    for i in 0..20 {
        let event = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n");
        stream
            .tx
            .send(Ok(Bytes::from(event.clone())))
            .await
            .unwrap();
        // The next event is sent only once this one has arrived: a gateway that waited for
        // more before writing would hang here.
        let chunk = within(client.chunk())
            .await
            .expect("the stream ended early");
        assert_eq!(String::from_utf8_lossy(&chunk), event);
    }
    stream
        .tx
        .send(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
        .await
        .unwrap();
    drop(stream);
    assert_eq!(
        within(client.chunk()).await.as_deref(),
        Some(&b"data: [DONE]\n\n"[..])
    );
    assert_eq!(within(client.chunk()).await, None);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Silent and slow clients.
// ---------------------------------------------------------------------------------------------

/// Asserts the gateway closes `client` without answering a request (a 408 is allowed).
async fn assert_cut(client: &mut Client) {
    let sent = within(client.closed()).await;
    assert!(
        sent.is_empty() || sent.starts_with(b"HTTP/1.1 408 "),
        "{}",
        String::from_utf8_lossy(&sent)
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_header_read_timeout() {
    // With h2c on, the server first waits to tell HTTP/1.1 from the HTTP/2 preface; with it
    // off, it waits for an HTTP/1.1 head only. Either wait ends.
    for http2 in ["http2 = true", "http2 = false"] {
        let upstream = Upstream::echo("u").await;
        let server = format!("header_read_timeout = \"1s\"\n{http2}");
        let gw = gateway(&server, &upstream.url()).await;

        let mut client = Client::connect(gw.http).await;
        assert_cut(&mut client).await;
        assert_nothing_forwarded(&gw, &upstream).await;
        gw.stop().await;
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_header_read_timeout() {
    let upstream = Upstream::echo("u").await;
    let gw = gateway(r#"header_read_timeout = "1s""#, &upstream.url()).await;

    let mut client = Client::connect(gw.http).await;
    client.send(&get("/once")).await;
    assert_echo(&within(client.answer("GET")).await, "GET", "/once", "");
    // Then nothing: the wait for the next head is bounded too.
    assert_cut(&mut client).await;
    gw.stop().await;
}

#[tokio::test]
async fn half_a_head_is_closed_after_header_read_timeout() {
    let upstream = Upstream::echo("u").await;
    let gw = gateway(r#"header_read_timeout = "1s""#, &upstream.url()).await;

    let mut client = Client::connect(gw.http).await;
    client
        .send(b"POST /half HTTP/1.1\r\nHost: sluice.test\r\nContent-Le")
        .await;
    assert_cut(&mut client).await;
    assert_nothing_forwarded(&gw, &upstream).await;
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Routing what the client sent.
// ---------------------------------------------------------------------------------------------

/// A gateway where `/v1/` goes to `v1` and nothing else has a route.
async fn v1_only(v1: &Upstream) -> Gateway {
    Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "v1"
        backends = [{{ url = "{}" }}]

        [[routes]]
        name = "v1"
        cluster = "v1"
        match = {{ path_prefix = "/v1/" }}
        "#,
        v1.url()
    ))
    .await
}

#[tokio::test]
async fn an_absolute_form_target_is_routed_by_its_path() {
    let v1 = Upstream::echo("v1").await;
    let gw = v1_only(&v1).await;
    let mut client = Client::connect(gw.http).await;

    client
        .send(b"GET http://example.com/v1/x?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await;
    let answer = within(client.answer("GET")).await;
    assert_eq!(answer.status(), 200, "{:?} {}", answer.head, answer.text());
    assert_eq!(answer.header("x-upstream"), Some("v1"));
    assert_eq!(v1.seen()[0].uri, "/v1/x?q=1");

    client
        .send(b"GET http://example.com/other HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await;
    within(client.answer("GET"))
        .await
        .assert_error(404, "route_not_found");
    assert_eq!(v1.seen().len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn an_error_answer_to_a_bodiless_request_keeps_the_connection() {
    let v1 = Upstream::echo("v1").await;
    let gw = v1_only(&v1).await;
    let mut client = Client::connect(gw.http).await;

    client.send(&get("/nowhere")).await;
    let answer = within(client.answer("GET")).await;
    answer.assert_error(404, "route_not_found");
    assert!(
        !answer.head.has_token("connection", "close"),
        "{:?}",
        answer.head
    );
    client.send(&get("/v1/models")).await;
    assert_echo(&within(client.answer("GET")).await, "GET", "/v1/models", "");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// What the RFC asks and the current server does not do. Ignored until the new server does.
// ---------------------------------------------------------------------------------------------

/// After `answer` to a request whose body the gateway has not read (`rest` is what the
/// client still owes of it), the client must be able to tell from the answer whether it may
/// reuse the connection: either the answer says `Connection: close` and the connection
/// closes, or it does not and, once the client has sent the rest of its body, a next request
/// on it is answered.
async fn assert_reusable_unless_told(client: &mut Client, answer: &Answer, rest: &[u8]) {
    if answer.head.has_token("connection", "close") {
        client.assert_closed().await;
        return;
    }
    client.send(&[rest, &get("/after")].concat()).await;
    let after = within(client.answer("GET")).await;
    assert_eq!(after.status(), 200, "{:?} {}", after.head, after.text());
    assert_eq!(after.json()["uri"], "/after");
}

#[tokio::test]
async fn an_answer_before_the_body_says_close_or_keeps_the_connection() {
    let upstream = Upstream::echo("u").await;
    let gw = gateway(r#"max_request_body = "1KiB""#, &upstream.url()).await;

    // A 413 to a declared length, before any of the body is sent.
    let mut client = Client::connect(gw.http).await;
    client
        .send(b"POST /big HTTP/1.1\r\nHost: sluice.test\r\nContent-Length: 2048\r\n\r\n")
        .await;
    let answer = within(client.answer("POST")).await;
    answer.assert_error(413, "request_too_large");
    assert_reusable_unless_told(&mut client, &answer, &[b'x'; 2048]).await;
    gw.stop().await;

    // A 404 to a POST whose body has not arrived yet.
    let v1 = Upstream::echo("v1").await;
    let gw = v1_only(&v1).await;
    let mut client = Client::connect(gw.http).await;
    client
        .send(b"POST /nowhere HTTP/1.1\r\nHost: sluice.test\r\nContent-Length: 5\r\n\r\n")
        .await;
    let answer = within(client.answer("POST")).await;
    answer.assert_error(404, "route_not_found");
    // The route for `/after` is missing here: a 404 is the answer that proves reuse.
    if answer.head.has_token("connection", "close") {
        client.assert_closed().await;
    } else {
        client
            .send(&[&b"hello"[..], &get("/v1/after")].concat())
            .await;
        assert_echo(&within(client.answer("GET")).await, "GET", "/v1/after", "");
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_broken_chunked_body_is_400_with_close() {
    let upstream = Upstream::echo("u").await;
    let gw = gateway("", &upstream.url()).await;

    for body in [
        "zz\r\nabc\r\n0\r\n\r\n",
        "ffffffffffffffffff1\r\nabc\r\n0\r\n\r\n",
    ] {
        let mut client = Client::connect(gw.http).await;
        client
            .send(
                format!(
                    "POST /x HTTP/1.1\r\nHost: sluice.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
                )
                .as_bytes(),
            )
            .await;
        let answer = within(client.answer("POST")).await;
        assert_eq!(answer.status(), 400, "{body:?}: {:?}", answer.head);
        client.assert_closes_after(&answer).await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_missing_or_repeated_host_is_400() {
    let upstream = Upstream::echo("u").await;
    let gw = gateway("", &upstream.url()).await;

    for fields in ["", "Host: a.example\r\nHost: b.example\r\n"] {
        let mut client = Client::connect(gw.http).await;
        client
            .send(format!("GET /x HTTP/1.1\r\n{fields}\r\n").as_bytes())
            .await;
        let answer = within(client.answer("GET")).await;
        assert_eq!(answer.status(), 400, "{fields:?}: {:?}", answer.head);
        client.assert_closed().await;
    }
    assert_nothing_forwarded(&gw, &upstream).await;
    gw.stop().await;
}

#[tokio::test]
async fn an_absolute_form_target_is_routed_by_its_authority_not_host() {
    let example = Upstream::echo("example").await;
    let other = Upstream::echo("other").await;
    let gw = Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "example"
        backends = [{{ url = "{}" }}]

        [[clusters]]
        name = "other"
        backends = [{{ url = "{}" }}]

        [[routes]]
        name = "example"
        cluster = "example"
        match = {{ hosts = ["example.com"] }}

        [[routes]]
        name = "other"
        cluster = "other"
        "#,
        example.url(),
        other.url()
    ))
    .await;
    let mut client = Client::connect(gw.http).await;

    client
        .send(b"GET http://example.com/v1/x HTTP/1.1\r\nHost: other.example\r\n\r\n")
        .await;
    let answer = within(client.answer("GET")).await;
    assert_eq!(answer.status(), 200, "{:?} {}", answer.head, answer.text());
    assert_eq!(answer.header("x-upstream"), Some("example"));
    gw.stop().await;
}

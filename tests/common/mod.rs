//! Test support: a real gateway on 127.0.0.1:0, builder-made upstreams, a small client.
#![allow(dead_code)]

pub mod binary;
pub mod check;
pub mod pki;
pub mod redis;
pub mod reload;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// A gateway started in process from a TOML text, listening on 127.0.0.1:0.
pub struct Gateway {
    pub http: SocketAddr,
    /// The HTTPS listener, when the config has a certificate.
    pub https: Option<SocketAddr>,
    pub monitor: SocketAddr,
    running: Option<sluice::app::Running>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway from `toml`; `listen` addresses in it are replaced by 127.0.0.1:0.
    pub async fn start(toml: &str) -> Gateway {
        Gateway::start_in(tempfile::tempdir().unwrap(), toml).await
    }

    /// Starts a gateway from `toml` written into `dir` (which may hold the certificates it
    /// names); `listen` addresses are replaced by 127.0.0.1:0.
    pub async fn start_in(dir: tempfile::TempDir, toml: &str) -> Gateway {
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, toml).unwrap();
        let mut config = sluice::config::load(&path)
            .unwrap_or_else(|errors| panic!("config rejected: {errors:#?}"));
        config.static_config.http_addr = "127.0.0.1:0".parse().unwrap();
        config.static_config.https_addr = "127.0.0.1:0".parse().unwrap();
        config.static_config.monitor_addr = "127.0.0.1:0".parse().unwrap();
        let running = sluice::app::start(config).await.unwrap();
        Gateway {
            http: running.http_addr,
            https: running.https_addr,
            monitor: running.monitor_addr,
            running: Some(running),
            _dir: dir,
        }
    }

    /// The directory the main file (`sluice.toml`) was written to.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// `http://127.0.0.1:port{path}` on the traffic port.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// `http://127.0.0.1:port{path}` on the monitor port.
    pub fn monitor_url(&self, path: &str) -> String {
        format!("http://{}{}", self.monitor, path)
    }

    /// The value of one sample of `/metrics`, such as
    /// `sluice_requests_total{cluster="a",route="r",status_class="2xx"}`; 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = get(&self.monitor_url("/metrics")).await.text();
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Drains and stops the gateway.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// What a test upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A real HTTP/1.1 + h2c server on 127.0.0.1:0 that records what it receives.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Answers every request with 200 and a JSON echo of it, plus `x-upstream: {name}`.
    pub async fn echo(name: &str) -> Upstream {
        Upstream::echo_with(name, None).await
    }

    /// [`Upstream::echo`] over TLS with `config` (HTTP/1.1 or HTTP/2, as ALPN agrees).
    pub async fn echo_tls(name: &str, config: Arc<rustls::ServerConfig>) -> Upstream {
        Upstream::echo_with(name, Some(config)).await
    }

    async fn echo_with(name: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
        let name = name.to_owned();
        Upstream::start_with(tls, move |seen: Seen| {
            let name = name.clone();
            async move {
                let headers: BTreeMap<String, String> = seen
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                let echo = serde_json::json!({
                    "upstream": name,
                    "method": seen.method,
                    "uri": seen.uri,
                    "headers": headers,
                    "body": String::from_utf8_lossy(&seen.body),
                });
                Response::builder()
                    .header("content-type", "application/json")
                    .header("x-upstream", name)
                    .body(Full::new(Bytes::from(echo.to_string())))
                    .unwrap()
            }
        })
        .await
    }

    /// Holds each request until the test releases it: every arrival sends its release
    /// handle on the returned channel, and the answer is `body` once released.
    pub async fn held(
        body: &'static [u8],
    ) -> (
        Upstream,
        tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<()>>,
    ) {
        let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel();
        let upstream = Upstream::start(move |_| {
            let arrived_tx = arrived_tx.clone();
            async move {
                let (release_tx, release) = tokio::sync::oneshot::channel::<()>();
                let _ = arrived_tx.send(release_tx);
                let _ = release.await;
                Response::new(Full::new(Bytes::from_static(body)))
            }
        })
        .await;
        (upstream, arrived)
    }

    /// Answers each request with `handler`, after reading its whole body.
    pub async fn start<F, Fut>(handler: F) -> Upstream
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        Upstream::start_with(None, handler).await
    }

    /// [`Upstream::start`], over TLS when `tls` is set. A failed handshake drops the
    /// connection.
    pub async fn start_with<F, Fut>(tls: Option<Arc<rustls::ServerConfig>>, handler: F) -> Upstream
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = Arc::clone(&handler);
                let log = Arc::clone(&log);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let handler = Arc::clone(&handler);
                        let log = Arc::clone(&log);
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes());
                            let seen = Seen {
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                version: parts.version,
                                headers: parts.headers,
                                body: body.unwrap_or_default(),
                            };
                            log.lock().unwrap().push(seen.clone());
                            Ok::<_, Infallible>(handler(seen).await)
                        }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Upstream { addr, seen, task }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://127.0.0.1:port`.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response read in full.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The header's value as text; "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts an OpenAI-style error body with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        let json = self.json();
        assert_eq!(json["error"]["code"], code, "body: {json}");
        assert!(json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert!(json["error"]["type"]
            .as_str()
            .is_some_and(|t| !t.is_empty()));
    }
}

/// Sends `req` over HTTP/1.1 and reads the whole answer.
pub async fn send(req: Request<Full<Bytes>>) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.request(req).await.expect("request failed");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body failed").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// `GET url`.
pub async fn get(url: &str) -> Answer {
    send(Request::get(url).body(Full::default()).unwrap()).await
}

/// `POST url` with a JSON body.
pub async fn post_json(url: &str, json: &serde_json::Value) -> Answer {
    send(
        Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json.to_string())))
            .unwrap(),
    )
    .await
}

/// Sends raw bytes on a new connection and reads until the server closes or `limit` bytes.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Misbehaving upstreams and low-level clients, for the failure and limit tests.
// ---------------------------------------------------------------------------------------------

/// What a [`RawUpstream`] does on each connection.
#[derive(Debug, Clone, Copy)]
pub enum Script {
    /// Closes the connection as soon as it is accepted, without reading anything.
    CloseAtOnce,
    /// Reads the request head, writes these bytes (maybe none), then keeps the connection
    /// open, reading and discarding until the peer closes it.
    ReplyThenStall(&'static [u8]),
    /// Reads the request head, writes these bytes and closes the connection.
    ReplyThenClose(&'static [u8]),
}

/// A TCP server on 127.0.0.1:0 that plays a [`Script`] instead of speaking HTTP properly,
/// and reports each request head it reads.
pub struct RawUpstream {
    pub addr: SocketAddr,
    heads: tokio::sync::mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<()>,
}

impl RawUpstream {
    pub async fn start(script: Script) -> RawUpstream {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (heads_tx, heads) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let heads_tx = heads_tx.clone();
                tokio::spawn(async move {
                    let reply = match script {
                        Script::CloseAtOnce => return,
                        Script::ReplyThenStall(reply) | Script::ReplyThenClose(reply) => reply,
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = heads_tx.send(String::from_utf8_lossy(&head).into_owned());
                    if stream.write_all(reply).await.is_err() {
                        return;
                    }
                    if let Script::ReplyThenStall(_) = script {
                        while let Ok(n) = stream.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                });
            }
        });
        RawUpstream { addr, heads, task }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits for the next request head this upstream reads.
    pub async fn next_head(&mut self) -> String {
        self.heads.recv().await.expect("the raw upstream stopped")
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a [`Tap`] upstream saw, as it happened.
#[derive(Debug)]
pub enum TapEvent {
    /// A request head arrived (before its body was read).
    Head { uri: String },
    /// The request's body ended: its bytes, or why it failed.
    Body {
        uri: String,
        body: Result<Bytes, String>,
    },
}

/// An HTTP/1.1 upstream on 127.0.0.1:0 that reports each connection it accepts and each
/// request head and body as they arrive, and answers 200 with the body it received.
pub struct Tap {
    pub addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    events: tokio::sync::mpsc::UnboundedReceiver<TapEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    pub async fn start() -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let events_tx = events_tx.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let events_tx = events_tx.clone();
                        async move {
                            let uri = req.uri().to_string();
                            let _ = events_tx.send(TapEvent::Head { uri: uri.clone() });
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .map_err(|e| e.to_string());
                            let answer = body.clone().unwrap_or_default();
                            let _ = events_tx.send(TapEvent::Body { uri, body });
                            Ok::<_, Infallible>(Response::new(Full::new(answer)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Tap {
            addr,
            accepted,
            events,
            task,
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits for the next event.
    pub async fn next_event(&mut self) -> TapEvent {
        self.events.recv().await.expect("the tap upstream stopped")
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A request body fed chunk by chunk through a channel; it ends when the sender is dropped.
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

/// A [`ChannelBody`] and the sender that feeds it.
pub fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, ChannelBody) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    (tx, ChannelBody { rx })
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(http_body::Frame::data(data))))
    }
}

/// Sends `req` over HTTP/1.1 and returns the response with its body still unread.
pub async fn open<B>(req: Request<B>) -> Response<Incoming>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let client = Client::builder(TokioExecutor::new()).build_http::<B>();
    client.request(req).await.expect("request failed")
}

/// Reads a body to its end: the bytes that came, and the error it ended with (`None` for a
/// clean end).
pub async fn drain(mut body: Incoming) -> (Bytes, Option<hyper::Error>) {
    let mut data = bytes::BytesMut::new();
    loop {
        match body.frame().await {
            None => return (data.freeze(), None),
            Some(Err(err)) => return (data.freeze(), Some(err)),
            Some(Ok(frame)) => {
                if let Some(chunk) = frame.data_ref() {
                    data.extend_from_slice(chunk);
                }
            }
        }
    }
}

/// One HTTP/1.1 client connection of its own; abort the handle to close it.
pub async fn connect_h1(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

// ---------------------------------------------------------------------------------------------
// A streaming upstream the test drives chunk by chunk, for the streaming tests.
// ---------------------------------------------------------------------------------------------

/// One request that reached a [`StreamUpstream`], and the handle that writes its answer.
pub struct Stream {
    pub seen: Seen,
    /// Each `Ok` is sent as one body frame; an `Err` aborts the response (the connection
    /// closes without the final chunk); dropping the sender ends the body cleanly.
    pub tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
}

/// A real HTTP server on 127.0.0.1:0 that answers each request with a streamed
/// `text/event-stream` body written by the test through [`Stream::tx`].
pub struct StreamUpstream {
    pub addr: SocketAddr,
    streams: tokio::sync::mpsc::UnboundedReceiver<Stream>,
    task: tokio::task::JoinHandle<()>,
}

struct ResultBody {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl http_body::Body for ResultBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| data.map(http_body::Frame::data)))
    }
}

impl StreamUpstream {
    pub async fn start() -> StreamUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (streams_tx, streams) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let streams_tx = streams_tx.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let streams_tx = streams_tx.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes());
                            let (tx, rx) = tokio::sync::mpsc::channel(16);
                            let _ = streams_tx.send(Stream {
                                seen: Seen {
                                    method: parts.method.to_string(),
                                    uri: parts.uri.to_string(),
                                    version: parts.version,
                                    headers: parts.headers,
                                    body: body.unwrap_or_default(),
                                },
                                tx,
                            });
                            let response = Response::builder()
                                .header("content-type", "text/event-stream")
                                .body(ResultBody { rx })
                                .unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        StreamUpstream {
            addr,
            streams,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next request to arrive (waits for it).
    pub async fn next(&mut self) -> Stream {
        self.streams.recv().await.expect("the upstream stopped")
    }
}

impl Drop for StreamUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A streamed response read frame by frame, on its own HTTP/1.1 connection.
pub struct Reader {
    body: Incoming,
    pub status: StatusCode,
    pub headers: HeaderMap,
    _conn: tokio::task::JoinHandle<()>,
}

impl Reader {
    /// POSTs `json` to `url` on a fresh connection and returns the response unread.
    pub async fn post(addr: SocketAddr, path: &str, json: &serde_json::Value) -> Reader {
        Reader::post_with(addr, path, json, &[]).await
    }

    /// As [`Reader::post`], with extra request headers.
    pub async fn post_with(
        addr: SocketAddr,
        path: &str,
        json: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> Reader {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::post(path)
            .header("host", "test")
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(json.to_string()))).unwrap();
        let response = sender.send_request(req).await.unwrap();
        let (parts, body) = response.into_parts();
        Reader {
            body,
            status: parts.status,
            headers: parts.headers,
            _conn: conn,
        }
    }

    /// The next data frame; `Ok(None)` at a clean end, `Err` when the stream was cut.
    pub async fn next(&mut self) -> Result<Option<Bytes>, hyper::Error> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(err)) => return Err(err),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// Everything up to the end: the text and how it ended (`None` when clean).
    pub async fn rest(&mut self) -> (String, Option<hyper::Error>) {
        let mut text = Vec::new();
        loop {
            match self.next().await {
                Ok(Some(data)) => text.extend_from_slice(&data),
                Ok(None) => return (String::from_utf8_lossy(&text).into_owned(), None),
                Err(err) => return (String::from_utf8_lossy(&text).into_owned(), Some(err)),
            }
        }
    }
}

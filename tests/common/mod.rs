//! Test support: a real gateway on 127.0.0.1:0, builder-made upstreams, a small client.
#![allow(dead_code)]

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
    pub monitor: SocketAddr,
    running: Option<sluice::app::Running>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway from `toml`; `listen` addresses in it are replaced by 127.0.0.1:0.
    pub async fn start(toml: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, toml).unwrap();
        let mut config = sluice::config::load(&path)
            .unwrap_or_else(|errors| panic!("config rejected: {errors:#?}"));
        config.static_config.http_addr = "127.0.0.1:0".parse().unwrap();
        config.static_config.monitor_addr = "127.0.0.1:0".parse().unwrap();
        let running = sluice::app::start(config).await.unwrap();
        Gateway {
            http: running.http_addr,
            monitor: running.monitor_addr,
            running: Some(running),
            _dir: dir,
        }
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
        let name = name.to_owned();
        Upstream::start(move |seen: Seen| {
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

    /// Answers each request with `handler`, after reading its whole body.
    pub async fn start<F, Fut>(handler: F) -> Upstream
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
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
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, seen, task }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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

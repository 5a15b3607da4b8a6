//! Load tools for the streaming benchmarks (`benches/load/run.py` drives them).
//!
//! - `sse_bench upstream --listen ADDR --interval-ms N [--openai]`: an HTTP/1.1 server whose
//!   every answer is an endless `text/event-stream`, one event every N ms, each carrying the
//!   wall-clock time it was sent (`data: {"t":<unix µs>}`; with `--openai`, the rest of a
//!   Chat Completions chunk follows, one token of content each); `GET /ws` upgrades to a
//!   WebSocket echo.
//! - `sse_bench client --url URL --streams N --hold-secs S`: holds N concurrent streams on
//!   N connections, prints `established` once all are open, keeps reading for S seconds,
//!   then prints one JSON line: streams, events, frames carrying more than one event
//!   (coalesced), per-event latency p50/p99 in µs (receive time − send time), errors.
//! - `sse_bench ws --url ws://… --tunnels N --rounds R`: N WebSocket tunnels, each sending
//!   R timestamped messages one after another; prints `established`, then the round-trip
//!   p50/p99 in µs.
//!
//! Client, proxy and upstream run on one machine, so their clocks agree.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn required<T: std::str::FromStr>(args: &[String], name: &str) -> T {
    arg(args, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("missing or bad {name}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("upstream") => {
            upstream(
                required(&args, "--listen"),
                required(&args, "--interval-ms"),
                args.iter().any(|a| a == "--openai"),
            )
            .await
        }
        Some("client") => {
            client(
                required(&args, "--url"),
                required(&args, "--streams"),
                required(&args, "--hold-secs"),
            )
            .await
        }
        Some("ws") => {
            ws(
                required(&args, "--url"),
                required(&args, "--tunnels"),
                required(&args, "--rounds"),
            )
            .await
        }
        _ => eprintln!("usage: sse_bench upstream|client|ws ... (see the source)"),
    }
}

// ---- upstream ---------------------------------------------------------------------------

/// An endless event stream, one timestamped event per tick.
struct Ticks {
    interval: tokio::time::Interval,
    /// Each event is a whole Chat Completions chunk, as a model server streams them.
    openai: bool,
}

/// What follows the timestamp in an `--openai` event.
const CHUNK_REST: &str = concat!(
    r#","id":"chatcmpl-sse-bench","object":"chat.completion.chunk","created":1700000000,"#,
    r#""model":"gpt-4o","choices":[{"index":0,"delta":{"content":" token"},"#,
    r#""logprobs":null,"finish_reason":null}]"#
);

impl http_body::Body for Ticks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.interval.poll_tick(cx) {
            Poll::Ready(_) => {
                let rest = if self.openai { CHUNK_REST } else { "" };
                let event = format!("data: {{\"t\":{}{rest}}}\n\n", now_micros());
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

async fn upstream(listen: SocketAddr, interval_ms: u64, openai: bool) {
    let listener = TcpListener::bind(listen).await.expect("bind");
    println!("listening {}", listener.local_addr().expect("addr"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| async move {
                if req.uri().path() == "/ws" {
                    return Ok::<_, Infallible>(ws_accept(req));
                }
                // Drain the request body, then stream.
                let _ = req.into_body().collect().await;
                let mut interval = tokio::time::interval(Duration::from_millis(interval_ms));
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let body = Ticks { interval, openai }
                    .map_err(|never| match never {})
                    .boxed();
                Ok(Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(body)
                    .expect("response"))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn ws_accept(mut req: Request<Incoming>) -> Response<BoxBody> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(io) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(io),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", key)
        .body(Full::new(Bytes::new()).boxed())
        .expect("response")
}

// ---- client -----------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    events: u64,
    frames: u64,
    coalesced: u64,
    errors: u64,
    latencies: Vec<u32>,
}

async fn client(url: String, streams: usize, hold_secs: u64) {
    let uri: http::Uri = url.parse().expect("url");
    let authority = uri.authority().expect("authority").to_string();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<bool>(streams);
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(hold_secs) + Duration::from_secs(60);
    let stop = Arc::new(tokio::sync::Notify::new());
    for _ in 0..streams {
        let (authority, uri, tally, open_tx, stop) = (
            authority.clone(),
            uri.clone(),
            tally.clone(),
            open_tx.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let opened = async {
                let stream = tokio::net::TcpStream::connect(&authority).await.ok()?;
                let _ = stream.set_nodelay(true);
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .ok()?;
                tokio::spawn(conn);
                let body =
                    r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
                let req = Request::post(uri.path())
                    .header("host", &authority)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .ok()?;
                sender.send_request(req).await.ok()
            };
            let Some(response) = opened.await else {
                let _ = open_tx.send(false).await;
                return;
            };
            let _ = open_tx.send(true).await;
            let mut body = response.into_body();
            let mut local = Tally::default();
            let stopped = stop.notified();
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    () = &mut stopped => break,
                    frame = body.frame() => match frame {
                        Some(Ok(frame)) => {
                            let Ok(data) = frame.into_data() else { continue };
                            let now = now_micros();
                            local.frames += 1;
                            let text = String::from_utf8_lossy(&data);
                            let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
                            if events.len() > 1 {
                                local.coalesced += 1;
                            }
                            for event in events {
                                local.events += 1;
                                if let Some(t) = event
                                    .strip_prefix("data: {\"t\":")
                                    .and_then(|rest| rest.split([',', '}']).next())
                                    .and_then(|t| t.parse::<u64>().ok())
                                {
                                    local.latencies.push(now.saturating_sub(t).min(u32::MAX as u64) as u32);
                                }
                            }
                        }
                        _ => { local.errors += 1; break; }
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
            let mut tally = tally.lock().await;
            tally.events += local.events;
            tally.frames += local.frames;
            tally.coalesced += local.coalesced;
            tally.errors += local.errors;
            tally.latencies.extend(local.latencies);
        });
    }
    drop(open_tx);
    let mut ok = 0;
    let mut failed = 0;
    while let Some(opened) = open_rx.recv().await {
        if opened {
            ok += 1
        } else {
            failed += 1
        }
        if ok + failed == streams {
            break;
        }
    }
    // Latencies before every stream was open include the ramp; start counting afresh.
    {
        let mut tally = tally.lock().await;
        *tally = Tally::default();
    }
    println!("established {ok} failed {failed}");
    tokio::time::sleep(Duration::from_secs(hold_secs)).await;
    stop.notify_waiters();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut tally = tally.lock().await;
    tally.latencies.sort_unstable();
    let pct = |p: f64| {
        let l = &tally.latencies;
        if l.is_empty() {
            0
        } else {
            l[((l.len() as f64 - 1.0) * p) as usize]
        }
    };
    println!(
        "RESULT {{\"streams\":{ok},\"failed\":{failed},\"events\":{},\"frames\":{},\"coalesced\":{},\"errors\":{},\"p50_us\":{},\"p99_us\":{}}}",
        tally.events, tally.frames, tally.coalesced, tally.errors, pct(0.5), pct(0.99)
    );
}

// ---- websocket --------------------------------------------------------------------------

async fn ws(url: String, tunnels: usize, rounds: usize) {
    let mut sockets = Vec::with_capacity(tunnels);
    for _ in 0..tunnels {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((ws, _)) => sockets.push(ws),
            Err(err) => {
                eprintln!("connect failed: {err}");
                break;
            }
        }
    }
    println!("established {}", sockets.len());
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for mut ws in sockets {
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let sent = now_micros();
                if ws.send(Message::text(sent.to_string())).await.is_err() {
                    break;
                }
                match ws.next().await {
                    Some(Ok(_)) => local.push(now_micros().saturating_sub(sent) as u32),
                    _ => break,
                }
            }
            latencies.lock().await.extend(local);
            ws
        }));
    }
    let mut held = Vec::new();
    for task in tasks {
        if let Ok(ws) = task.await {
            held.push(ws);
        }
    }
    // Hold the tunnels open briefly so the harness can sample memory.
    println!("holding {}", held.len());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut l = latencies.lock().await;
    l.sort_unstable();
    let pct = |p: f64| {
        if l.is_empty() {
            0
        } else {
            l[((l.len() as f64 - 1.0) * p) as usize]
        }
    };
    println!(
        "RESULT {{\"tunnels\":{},\"round_trips\":{},\"p50_us\":{},\"p99_us\":{}}}",
        held.len(),
        l.len(),
        pct(0.5),
        pct(0.99)
    );
}

//! The traffic listeners: accept, apply connection limits, serve HTTP/1.1 and HTTP/2, drain.
//!
//! The HTTP listener (8080) serves HTTP/1.1 with sluice's own server connection
//! ([`h1`]), which hands a connection to hyper when it opens with the HTTP/2 preface (h2c,
//! when `server.http2` is on) or when a request asks to upgrade it (WebSocket). The HTTPS
//! listener (8443) first runs the TLS handshake with the current snapshot's certificates,
//! then serves the TLS stream with hyper-util's auto builder (ALPN `h2` or `http/1.1`; it
//! reads the HTTP/2 preface either way). Both share one accept loop.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

mod h1;
mod replay;
mod send_timeout;
mod unless;

use crate::body::BoxError;
use crate::config::ServerSettings;
use crate::proxy::{headers, ConnInfo, Proxy};
use send_timeout::SendTimeout;

/// What runs on an accepted TCP connection before HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// HTTP straight on the TCP stream.
    Plain,
    /// A TLS handshake first.
    Tls,
}

/// Applies the HTTP/1.1 settings to one of hyper's builders (its own, or the auto
/// builder's side: two types with the same methods and no common trait).
macro_rules! http1_settings {
    ($builder:expr, $settings:expr) => {
        $builder
            .timer(TokioTimer::new())
            .header_read_timeout($settings.header_read_timeout)
            .max_buf_size($settings.max_header_size)
            .max_headers($settings.max_headers)
            .writev(false)
    };
}

/// Applies the HTTP/2 settings, as [`http1_settings`] does.
macro_rules! http2_settings {
    ($builder:expr, $settings:expr) => {
        $builder
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from($settings.max_header_size).unwrap_or(u32::MAX))
            // Pings find HTTP/2 peers that vanished without closing their connection.
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20))
    };
}

/// How connections are served.
enum Protocols {
    /// The plain port: sluice's own HTTP/1.1 server (`h1`), which hands h2c and upgrades to
    /// hyper.
    Own(h1::Handover),
    /// The HTTPS port: hyper-util's auto builder (ALPN, or the HTTP/2 preface, decides).
    Auto(auto::Builder<TokioExecutor>),
}

impl Protocols {
    fn new(settings: &ServerSettings, transport: Transport) -> Protocols {
        match transport {
            Transport::Plain => {
                let mut http1 = http1::Builder::new();
                http1_settings!(http1, settings);
                // `server.http2` is about h2c on the plain port; over TLS, ALPN decides.
                let http2 = settings.http2.then(|| {
                    let mut http2 = http2::Builder::new(TokioExecutor::new());
                    http2_settings!(http2, settings);
                    http2
                });
                Protocols::Own(h1::Handover { http1, http2 })
            }
            Transport::Tls => {
                let mut auto = auto::Builder::new(TokioExecutor::new());
                http1_settings!(auto.http1(), settings);
                http2_settings!(auto.http2(), settings);
                Protocols::Auto(auto)
            }
        }
    }
}

/// Serves plain HTTP/1.1 and h2c on `listener` until `shutdown` turns true, then stops
/// accepting and gives open connections `drain_timeout` to finish: HTTP/1 answers carry
/// `Connection: close` and idle connections close, HTTP/2 connections get GOAWAY.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, shutdown: watch::Receiver<bool>) {
    serve_with(listener, proxy, shutdown, Transport::Plain).await;
}

/// Serves HTTPS on `listener`, as [`serve`] does HTTP. Each handshake uses the TLS config of
/// the snapshot current at that moment, within `header_read_timeout`; a handshake that fails
/// (plaintext, garbage, a refused client certificate) closes the connection and is counted
/// in `sluice_tls_handshakes_total`.
pub async fn serve_tls(listener: TcpListener, proxy: Arc<Proxy>, shutdown: watch::Receiver<bool>) {
    serve_with(listener, proxy, shutdown, Transport::Tls).await;
}

async fn serve_with(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
    transport: Transport,
) {
    let settings = &proxy.settings;
    let builder = Arc::new(Protocols::new(settings, transport));
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    // Turns true when the drain timeout ends: connections still open are closed.
    let (force_close, force_rx) = watch::channel(false);

    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors or a connection reset before accept: wait a
                    // little instead of spinning, and keep serving.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let open = Open::new(Arc::clone(&proxy), permit);
        let served = connection(
            stream,
            peer,
            transport,
            open,
            Arc::clone(&builder),
            shutdown.clone(),
        );
        // The task is the connection's own future, and nothing beside it: tokio rounds a
        // task up to a multiple of 128 bytes, and an `async` block around it would keep its
        // arguments again, moved out but still in its layout, as long as the connection lives.
        tokio::spawn(unless::unless_stopped(served, force_rx.clone()));
    }
    drop(listener);
    let drain_timeout = proxy.settings.drain_timeout;
    let max = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    tracing::info!(
        open = settings.max_connections - permits.available_permits(),
        ?drain_timeout,
        "draining connections"
    );
    // Every connection holds a permit until it ends: all permits back means all drained.
    let drained = tokio::time::timeout(drain_timeout, permits.acquire_many(max)).await;
    if drained.is_ok() {
        tracing::info!("all connections drained");
    } else {
        tracing::warn!("drain timeout reached; closing the remaining connections");
        let _ = force_close.send(true);
    }
}

/// An open connection: counted in `sluice_open_connections` and holding its permit until it
/// is dropped, whether it ended or was closed at the end of a drain.
struct Open {
    proxy: Arc<Proxy>,
    _permit: OwnedSemaphorePermit,
}

impl Open {
    fn new(proxy: Arc<Proxy>, permit: OwnedSemaphorePermit) -> Self {
        proxy.metrics.connections.inc();
        proxy.metrics.open_connections.inc();
        Open {
            proxy,
            _permit: permit,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.proxy.metrics.open_connections.dec();
    }
}

/// Runs one accepted connection: the TLS handshake if any, then HTTP until it ends.
///
/// An `async move` block rather than an `async fn`, whose arguments would each be held twice
/// (as arguments and as the locals they are moved into) for as long as the connection lives.
#[allow(clippy::manual_async_fn)]
fn connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    transport: Transport,
    open: Open,
    protocols: Arc<Protocols>,
    draining: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send {
    async move {
        let proxy = &open.proxy;
        match (transport, &*protocols) {
            (Transport::Plain, Protocols::Own(handover)) => {
                let conn_info = ConnInfo {
                    peer,
                    peer_ip: headers::peer_value(peer.ip()),
                    proto: "http",
                    client_subject: None,
                };
                let h2c = handover.http2.is_some();
                let served = h1::serve(stream, conn_info, Arc::clone(proxy), h2c, draining);
                let Some(handoff) = served.await else {
                    return;
                };
                // Boxed: hyper's connection is large, and only upgrades and h2c come here.
                let hyper = Box::pin(hand_over(handoff, proxy, handover));
                hyper.await;
            }
            // Boxed: a TLS stream, its handshake and the HTTP connection over it make this
            // future about 10 KiB, and unboxed every plain connection's task would be as large,
            // for as long as it stays open (an SSE stream for minutes).
            (_, Protocols::Auto(auto)) => {
                Box::pin(tls_connection(stream, peer, proxy, auto, draining)).await;
            }
            (Transport::Tls, Protocols::Own(_)) => {}
        }
    }
}

/// Serves a plain-port connection that sluice's HTTP/1.1 server handed over with hyper's.
async fn hand_over(handoff: h1::Handoff, proxy: &Arc<Proxy>, handover: &h1::Handover) {
    let server = match handoff.handed {
        h1::Handed::Http1 => Hyper::Http1(&handover.http1),
        h1::Handed::Http2 => match &handover.http2 {
            Some(http2) => Hyper::Http2(http2),
            None => return,
        },
    };
    let (io, info, draining) = (handoff.io, handoff.info, handoff.draining);
    serve_hyper(io, info, proxy, server, None, draining).await;
}

/// [`connection`] on the HTTPS port: the handshake, then HTTP over the TLS stream.
async fn tls_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    proxy: &Arc<Proxy>,
    auto: &auto::Builder<TokioExecutor>,
    draining: watch::Receiver<bool>,
) {
    // The current snapshot's config, so a reload reaches the next handshake.
    let config = proxy.state.load().tls.clone();
    let Some(config) = config else {
        proxy.metrics.tls_handshake("no_certificate", "", "");
        tracing::debug!(%peer, "no certificate is configured; closing");
        return;
    };
    let timeout = proxy.settings.header_read_timeout;
    let accepted =
        crate::tls::accept::handshake(stream, config, timeout, &proxy.metrics, peer).await;
    let Some(accepted) = accepted else { return };
    let conn_info = ConnInfo {
        peer,
        peer_ip: headers::peer_value(peer.ip()),
        proto: "https",
        client_subject: accepted.client_subject,
    };
    let io = SendTimeout::new(accepted.stream, proxy.settings.send_timeout);
    let first_request = Some(proxy.settings.header_read_timeout);
    serve_hyper(
        io,
        conn_info,
        proxy,
        Hyper::Auto(auto),
        first_request,
        draining,
    )
    .await;
}

/// Which of hyper's servers serves a connection.
enum Hyper<'a> {
    Auto(&'a auto::Builder<TokioExecutor>),
    Http1(&'a http1::Builder),
    Http2(&'a http2::Builder<TokioExecutor>),
}

/// Serves HTTP on one connection with hyper until it ends. `first_request` bounds the wait
/// for the first request, when none has been read yet.
async fn serve_hyper<I>(
    io: I,
    conn_info: ConnInfo,
    proxy: &Arc<Proxy>,
    server: Hyper<'_>,
    first_request: Option<Duration>,
    draining: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Set by the first request. Until then hyper-util is still sniffing for the HTTP/2
    // preface with no timeout of its own, so a silent client would hold a connection slot
    // forever; `header_read_timeout` bounds that wait too.
    let spoke = AtomicBool::new(first_request.is_none());
    let service = service_fn(|req| {
        spoke.store(true, Ordering::Relaxed);
        let proxy = Arc::clone(proxy);
        let conn_info = conn_info.clone();
        // Boxed: hyper keeps the slot for this future (about 1.7 KiB unboxed) for the whole
        // connection, and an SSE answer holds its connection for minutes. Boxed, the slot
        // is a pointer and the request's state is freed once the response head is out.
        Box::pin(async move { Ok::<_, Infallible>(proxy.handle(req, conn_info).await) })
    });
    let io = TokioIo::new(io);
    let first_request = first_request.unwrap_or(Duration::MAX);
    let result = match server {
        Hyper::Auto(auto) => {
            let conn = auto.serve_connection_with_upgrades(io, service);
            drive(conn, &spoke, first_request, draining).await
        }
        Hyper::Http1(http1) => {
            let conn = http1.serve_connection(io, service).with_upgrades();
            drive(conn, &spoke, first_request, draining).await
        }
        Hyper::Http2(http2) => {
            let conn = http2.serve_connection(io, service);
            drive(conn, &spoke, first_request, draining).await
        }
    };
    match result {
        None => tracing::debug!(peer = %conn_info.peer, "client sent no request in time; closing"),
        Some(Err(err)) => {
            tracing::debug!(peer = %conn_info.peer, error = %err, "connection ended with an error");
        }
        Some(Ok(())) => {}
    }
}

/// A connection that can be asked to finish what it is doing and close: HTTP/1.1 stops
/// keep-alive (the answer in flight carries `Connection: close`), HTTP/2 sends GOAWAY.
trait Graceful: Future {
    fn begin_drain(self: Pin<&mut Self>);
}

impl<I, S, E, B> Graceful for auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<BoxError>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn begin_drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<BoxError>,
{
    fn begin_drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Graceful for http2::Connection<I, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn begin_drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Drives `conn` to its end. It is dropped (closing the socket) if no request arrived
/// within `first_request` (the answer is then `None`), and drained once `draining` turns
/// true.
async fn drive<C, E>(
    conn: C,
    spoke: &AtomicBool,
    first_request: Duration,
    mut draining: watch::Receiver<bool>,
) -> Option<Result<(), BoxError>>
where
    C: Graceful<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    tokio::pin!(conn);
    // Dropped once a request has arrived: a busy connection's task wakes several times per
    // request, and each wake would poll this timer again for nothing.
    let mut deadline = Some(Box::pin(tokio::time::sleep(first_request)));
    let drain = stopped(&mut draining);
    tokio::pin!(drain);
    let mut drained = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(result.map_err(Into::into)));
        }
        if let Some(sleep) = &mut deadline {
            if spoke.load(Ordering::Relaxed) {
                deadline = None;
            } else if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        if !drained && drain.as_mut().poll(cx).is_ready() {
            drained = true;
            conn.as_mut().begin_drain();
            // The connection must see the drain: poll it again.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    })
    .await
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

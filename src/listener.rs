//! The traffic listener: accept, apply connection limits, serve HTTP/1.1 and h2c, drain.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::proxy::{ConnInfo, Proxy};

/// Serves `listener` until `shutdown` turns true, then stops accepting and gives open
/// connections `drain_timeout` to finish: HTTP/1 answers carry `Connection: close` and idle
/// connections close, HTTP/2 connections get GOAWAY.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, mut shutdown: watch::Receiver<bool>) {
    let settings = &proxy.settings;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_size)
        .max_headers(settings.max_headers)
        .writev(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_size).unwrap_or(u32::MAX))
        // Pings find HTTP/2 peers that vanished without closing their connection.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    if !settings.http2 {
        builder = builder.http1_only();
    }
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
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
        let conn_info = ConnInfo {
            peer,
            proto: "http",
        };
        let proxy = Arc::clone(&proxy);
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        proxy.metrics.connections.inc();
        proxy.metrics.open_connections.inc();
        let mut force = force_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = serve_one(stream, conn_info, &proxy, &builder, watcher) => {}
                () = stopped(&mut force) => {}
            }
            proxy.metrics.open_connections.dec();
            drop(permit);
        });
    }
    drop(listener);
    let drain_timeout = proxy.settings.drain_timeout;
    tracing::info!(
        open = graceful.count(),
        ?drain_timeout,
        "draining connections"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(drain_timeout) => {
            tracing::warn!("drain timeout reached; closing the remaining connections");
            let _ = force_close.send(true);
        }
    }
}

/// Serves one connection until it ends.
async fn serve_one(
    stream: TcpStream,
    conn_info: ConnInfo,
    proxy: &Arc<Proxy>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
) {
    // Set by the first request. Until then hyper-util is still sniffing for the HTTP/2
    // preface with no timeout of its own, so a silent client would hold a connection slot
    // forever; `header_read_timeout` bounds that wait too.
    let spoke = AtomicBool::new(false);
    let service = service_fn(|req| {
        spoke.store(true, Ordering::Relaxed);
        let proxy = Arc::clone(proxy);
        async move { Ok::<_, Infallible>(proxy.handle(req, conn_info).await) }
    });
    let conn = watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
    tokio::pin!(conn);
    let result = tokio::select! {
        result = &mut conn => result,
        () = tokio::time::sleep(proxy.settings.header_read_timeout) => {
            if !spoke.load(Ordering::Relaxed) {
                tracing::debug!(peer = %conn_info.peer, "client sent no request in time; closing");
                return;
            }
            conn.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(peer = %conn_info.peer, error = %err, "connection ended with an error");
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

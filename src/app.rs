//! Wiring: compile the config, bind the listeners, serve, and shut down in order.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{compile, Config, ConfigError, Snapshot};
use crate::metrics::Metrics;
use crate::monitor::Monitor;
use crate::proxy::Proxy;
use crate::ratelimit::Limiter;
use crate::reload::Reloader;
use crate::upstream::Target;
use crate::{listener, monitor, reload};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{}", list(.0))]
    Config(Vec<ConfigError>),
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

fn list(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A running gateway: its bound addresses and the handle to stop it.
#[derive(Debug)]
pub struct Running {
    pub http_addr: SocketAddr,
    /// The HTTPS listener's address; `None` when the config has no certificate.
    pub https_addr: Option<SocketAddr>,
    pub monitor_addr: SocketAddr,
    pub monitor: Arc<Monitor>,
    /// Reloads the dynamic config; `main.rs` calls it on SIGHUP.
    pub reloader: Arc<Reloader>,
    shutdown_delay: Duration,
    stop_http: watch::Sender<bool>,
    stop_monitor: watch::Sender<bool>,
    http_task: JoinHandle<()>,
    https_task: Option<JoinHandle<()>>,
    monitor_task: JoinHandle<()>,
}

/// Compiles the config, binds every listener and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let static_config = &config.static_config;
    let snapshot = compile::snapshot(&config.dynamic, &static_config.upstream, &metrics)
        .map_err(StartError::Config)?;
    for warning in &snapshot.warnings {
        tracing::warn!("{warning}");
    }
    metrics.set_config_version(&snapshot.version);
    metrics.set_cert_expiry(&snapshot.cert_expiry, SystemTime::now());
    // The HTTPS listener runs when the config starts with a certificate; adding the first
    // certificate later needs a restart.
    let wants_https = snapshot.tls.is_some();
    let state = Arc::new(ArcSwap::from_pointee(snapshot));

    let http = bind("http", static_config.http_addr).await?;
    let https = match wants_https {
        true => Some(bind("https", static_config.https_addr).await?),
        false => None,
    };
    let monitor_listener = bind("monitor", static_config.monitor_addr).await?;
    let http_addr = local_addr("http", &http, static_config.http_addr)?;
    let https_addr = match &https {
        Some(listener) => Some(local_addr("https", listener, static_config.https_addr)?),
        None => None,
    };
    let monitor_addr = local_addr("monitor", &monitor_listener, static_config.monitor_addr)?;

    let reloader = Arc::new(Reloader::new(
        &config,
        Arc::clone(&state),
        Arc::clone(&metrics),
        https.is_some(),
    ));
    let limiter = Limiter::new(
        &static_config.ratelimit,
        static_config.redis.as_ref(),
        metrics.access.clone(),
    )
    .map_err(|reason| {
        StartError::Config(vec![ConfigError {
            file: config.path.clone(),
            key: "redis.url".to_owned(),
            reason,
        }])
    })?;
    let limiter = Arc::new(limiter);
    let proxy = Arc::new(Proxy {
        state: Arc::clone(&state),
        settings: static_config.server.clone(),
        metrics: Arc::clone(&metrics),
        access_log: static_config.log.access_log,
        limiter: Arc::clone(&limiter),
    });
    let monitor = Arc::new(Monitor {
        state: Arc::clone(&state),
        metrics,
        ready: false.into(),
        draining: false.into(),
        started: SystemTime::now(),
        reloader: Arc::clone(&reloader),
    });
    let (stop_http, http_rx) = watch::channel(false);
    let (stop_monitor, monitor_rx) = watch::channel(false);
    tokio::spawn(sweep_idle_connections(Arc::clone(&state), http_rx.clone()));
    tokio::spawn(reload::reap_retired(Arc::clone(&reloader), http_rx.clone()));
    let reload_settings = &static_config.reload;
    if reload_settings.watch {
        let watching = reload::watch::spawn(
            Arc::clone(&reloader),
            reload_settings.watch_debounce,
            http_rx.clone(),
        );
        if let Err(err) = watching {
            // The endpoint and SIGHUP still reload; a missing watch must not stop traffic.
            tracing::warn!(error = %err, "not watching the config files; reload with SIGHUP or /reload/sluice");
        }
    }
    tokio::spawn(limiter.sweep_loop(http_rx.clone()));
    tokio::spawn(crate::memory::trim_loop(http_rx.clone()));
    tokio::spawn(crate::upstream::check::supervise(
        Arc::clone(&state),
        http_rx.clone(),
    ));
    let https_task = https.map(|https| {
        tokio::spawn(listener::serve_tls(
            https,
            Arc::clone(&proxy),
            http_rx.clone(),
        ))
    });
    let http_task = tokio::spawn(listener::serve(http, proxy, http_rx));
    let monitor_task = tokio::spawn(monitor::serve(
        monitor_listener,
        Arc::clone(&monitor),
        monitor_rx,
    ));
    monitor.ready.store(true, Ordering::Release);
    match https_addr {
        Some(https) => {
            tracing::info!(http = %http_addr, https = %https, monitor = %monitor_addr, "listening")
        }
        None => tracing::info!(http = %http_addr, monitor = %monitor_addr, "listening"),
    }
    Ok(Running {
        http_addr,
        https_addr,
        monitor_addr,
        monitor,
        reloader,
        shutdown_delay: static_config.server.shutdown_delay,
        stop_http,
        stop_monitor,
        http_task,
        https_task,
        monitor_task,
    })
}

/// Once a second, closes idle upstream connections that are past their idle timeout or
/// were closed by the backend, so that a quiet gateway does not hold them open.
async fn sweep_idle_connections(state: Arc<ArcSwap<Snapshot>>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = listener::stopped(&mut stop) => return,
        }
        let snapshot = state.load();
        for backend in snapshot.clusters.iter().flat_map(|c| &c.backends) {
            if let Target::Http(http) = &backend.target {
                http.sweep();
            }
        }
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn local_addr(
    what: &'static str,
    listener: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { what, addr, source })
}

impl Running {
    /// Drains and stops: readiness fails at once; after `shutdown_delay` the traffic
    /// listeners stop accepting and waits for requests in flight (up to the drain timeout);
    /// then the monitor stops.
    pub async fn shutdown(self) {
        self.monitor.draining.store(true, Ordering::Release);
        if !self.shutdown_delay.is_zero() {
            tracing::info!(delay = ?self.shutdown_delay, "not ready; accepting until the delay ends");
            tokio::time::sleep(self.shutdown_delay).await;
        }
        // One signal stops both traffic listeners; they drain side by side.
        let _ = self.stop_http.send(true);
        if let Err(err) = self.http_task.await {
            tracing::error!(error = %err, "the traffic listener task failed");
        }
        if let Some(task) = self.https_task {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "the HTTPS listener task failed");
            }
        }
        let _ = self.stop_monitor.send(true);
        let _ = self.monitor_task.await;
    }
}

//! Hot reload: take in a new dynamic config while traffic flows, or refuse it without harm.
//!
//! Three triggers end in [`Reloader::reload`]: the conf-agent endpoint on the monitor port
//! (`monitor::reload`), the watch on the conf directory ([`watch`]) and SIGHUP (`main.rs`).
//! A reload:
//!
//! 1. waits for the reload in progress, if any: one runs at a time, so each one compiles
//!    against the snapshot it replaces;
//! 2. on a blocking thread, reads the main file and every dynamic file and checks them all,
//!    across files (`config::load_with`);
//! 3. compiles the new snapshot, taking over from the running one what did not change
//!    (`compile::snapshot_with`, `config::carry`);
//! 4. swaps it in with one `ArcSwap::store`, or, after any error, changes nothing;
//! 5. records the outcome for the caller, the log, `/status` and the metrics ([`status`]).
//!
//! Requests and streams in flight hold the snapshot they started with, so a swap never tears
//! one; the old snapshot is freed when the last of them ends. `docs/architecture.md` ("The
//! life of a reload") walks through it.

pub mod status;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::Mutex;

use crate::config::carry::Previous;
use crate::config::restart::StaticSections;
use crate::config::{self, compile, Config, ConfigError, DynamicDir, Snapshot};
use crate::metrics::Metrics;
use status::{LastReload, ReloadMetrics};

/// What started a reload; the `trigger` of `/status` and of the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The config the process started with.
    Start,
    /// `GET /reload/<name>` on the monitor port.
    Api,
    /// A change in the conf directory.
    Watch,
    /// SIGHUP.
    Signal,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Api => "api",
            Trigger::Watch => "watch",
            Trigger::Signal => "signal",
        }
    }
}

/// How a reload ended.
#[derive(Debug)]
pub enum Outcome {
    /// The new snapshot serves.
    Applied(Applied),
    /// Something was wrong; the running snapshot keeps serving.
    Rejected(Vec<ConfigError>),
    /// A watch event was ignored, and why: after a `path=` reload the live directory is
    /// read again only once it points where that reload read (see [`Reloader::reload`]).
    Skipped(String),
}

/// A reload that took effect.
#[derive(Debug)]
pub struct Applied {
    pub version: String,
    /// Static keys whose new values wait for a restart (`listen.http`, ...).
    pub restart_required: Vec<String>,
    /// Problems that did not stop the config (an expired certificate, ...).
    pub warnings: Vec<ConfigError>,
    /// HTTP backends that kept their connection pool, and those that got a new one.
    pub pools_kept: usize,
    pub pools_new: usize,
}

/// Reloads the dynamic config; shared by the three triggers.
#[derive(Debug)]
pub struct Reloader {
    config_path: PathBuf,
    /// The static sections the process started with; reloads compare against them.
    started: StaticSections,
    /// The dynamic directory the process started with; a reload without `path=` reads it.
    live_dir: Option<PathBuf>,
    /// Whether the HTTPS listener runs: the first certificate needs a restart to open it.
    https_listening: bool,
    state: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    reload_metrics: ReloadMetrics,
    last: ArcSwap<LastReload>,
    /// The bearer token `/reload/...` asks for; `None` asks for none.
    pub token: Option<String>,
    /// Held for the whole of a reload. It guards the directory of the last successful
    /// `path=` reload while the live directory does not point at it yet (the pin).
    lock: Arc<Mutex<Option<PathBuf>>>,
    /// Snapshots a reload replaced, kept until no request holds them any more, then freed
    /// off the runtime's threads ([`Reloader::reap`]): freeing thousands of routes takes
    /// milliseconds that the last request on an old snapshot should not pay for.
    retired: std::sync::Mutex<Vec<Arc<Snapshot>>>,
}

impl Reloader {
    /// A reloader for the process started from `config`, whose compiled snapshot `state`
    /// holds; records that start as the first successful load.
    pub fn new(
        config: &Config,
        state: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        https_listening: bool,
    ) -> Reloader {
        let reload_metrics = ReloadMetrics::register(&metrics.registry);
        let now = SystemTime::now();
        reload_metrics.succeeded(now);
        let version = state.load().version.clone();
        Reloader {
            config_path: config.path.clone(),
            started: config.statics.clone(),
            live_dir: config.dynamic_dir.clone(),
            https_listening,
            state,
            metrics,
            reload_metrics,
            last: ArcSwap::from_pointee(LastReload {
                trigger: Trigger::Start,
                ok: true,
                error: None,
                time: now,
                version,
                restart_required: Vec::new(),
                dir: config.dynamic_dir.clone(),
            }),
            token: config.static_config.reload.token.clone(),
            lock: Arc::new(Mutex::new(None)),
            retired: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Frees the replaced snapshots that nothing holds any more (the requests and streams
    /// that started on them have ended), with the pools that were not carried over; returns
    /// how many. Blocking work: call it off the runtime's threads.
    pub fn reap(&self) -> usize {
        let done: Vec<Arc<Snapshot>> = {
            let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            let (done, kept) = retired
                .drain(..)
                .partition(|snapshot| Arc::strong_count(snapshot) == 1);
            *retired = kept;
            done
        };
        done.len()
    }

    /// Whether replaced snapshots wait to be freed.
    pub fn has_retired(&self) -> bool {
        !self
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The main config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The dynamic directory the process started with.
    pub fn live_dir(&self) -> Option<&Path> {
        self.live_dir.as_deref()
    }

    /// The last reload's outcome (the start, until the first reload).
    pub fn last(&self) -> Arc<LastReload> {
        self.last.load_full()
    }

    /// Reloads: the main file again, and the dynamic files from `dir` (a conf-agent's
    /// `path=`; relative to the main file's directory) or, without one, from the live
    /// dynamic directory. Waits for a reload in progress first.
    ///
    /// After a successful `path=` reload, the directory it read is pinned: a watch event
    /// reloads the live directory only once that points at the pinned one (the conf-agent
    /// repoints its symlink after the reply), so an event that arrives in between cannot
    /// bring the previous version back. A reload without `path=` from the API or SIGHUP
    /// reads the live directory whatever it points at, and clears the pin.
    pub async fn reload(self: &Arc<Self>, trigger: Trigger, dir: Option<PathBuf>) -> Outcome {
        let mut pin = Arc::clone(&self.lock).lock_owned().await;
        let this = Arc::clone(self);
        // Reading and compiling thousands of routes takes milliseconds of blocking work:
        // off the runtime's threads. If the caller goes away, the reload still finishes.
        let work = tokio::task::spawn_blocking(move || this.apply(trigger, dir, &mut pin));
        match work.await {
            Ok(outcome) => outcome,
            Err(err) => {
                // A panic in the compiler is a bug; the running snapshot is untouched.
                tracing::error!(error = %err, "the reload task failed");
                Outcome::Rejected(vec![ConfigError {
                    file: self.config_path.clone(),
                    key: String::new(),
                    reason: format!("the reload failed: {err}"),
                }])
            }
        }
    }

    /// [`Reloader::reload`] on the calling thread, for benchmarks and tools without a
    /// runtime. Must not be called from async code.
    pub fn reload_blocking(&self, trigger: Trigger, dir: Option<PathBuf>) -> Outcome {
        let mut pin = self.lock.blocking_lock();
        self.apply(trigger, dir, &mut pin)
    }

    fn apply(&self, trigger: Trigger, dir: Option<PathBuf>, pin: &mut Option<PathBuf>) -> Outcome {
        let started = Instant::now();
        let explicit = dir.is_some();
        let dir = match self.choose_dir(trigger, dir, pin) {
            Ok(dir) => dir,
            Err(Choice::Skip(why)) => {
                tracing::info!(trigger = trigger.as_str(), "reload skipped: {why}");
                self.reload_metrics.skipped();
                return Outcome::Skipped(why);
            }
            Err(Choice::Reject(error)) => {
                let errors = vec![error];
                self.record_failure(trigger, None, &errors);
                return Outcome::Rejected(errors);
            }
        };
        let previous = self.state.load_full();
        let mut carry = Previous::new(&previous);
        let built = config::load_with(&self.config_path, &DynamicDir::Fixed(dir.clone())).and_then(
            |config| {
                let snapshot = compile::snapshot_with(
                    &config.dynamic,
                    &config.static_config.upstream,
                    &self.metrics,
                    &mut carry,
                )?;
                Ok((config, snapshot))
            },
        );
        let (config, snapshot) = match built {
            Ok(built) => built,
            Err(errors) => {
                self.record_failure(trigger, dir, &errors);
                return Outcome::Rejected(errors);
            }
        };
        let mut restart_required = self.started.changed(&config.statics);
        if snapshot.tls.is_some() && !self.https_listening {
            // The HTTPS listener opens only at start, when the config has a certificate.
            restart_required.push("certificates".to_owned());
        }
        let applied = Applied {
            version: snapshot.version.clone(),
            restart_required,
            warnings: snapshot.warnings.clone(),
            pools_kept: carry.pools_kept,
            pools_new: carry.pools_new,
        };
        let (routes, clusters) = (snapshot.routes.len(), snapshot.clusters.len());
        let now = SystemTime::now();
        self.metrics.set_cert_expiry(&snapshot.cert_expiry, now);
        self.state.store(Arc::new(snapshot));
        // After `store`, every guard on the old snapshot holds a counted reference, so the
        // count tells when the last request on it has ended.
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(previous);
        self.reap();
        self.metrics.set_config_version(&applied.version);
        self.reload_metrics.ok();
        self.reload_metrics.succeeded(now);
        // A `path=` reload pins its directory until the live one points there; any other
        // successful reload read the live directory, which is then the truth.
        *pin = match (explicit, &dir) {
            (true, Some(dir)) => Some(canonical(dir)),
            _ => None,
        };
        for warning in &applied.warnings {
            tracing::warn!("{warning}");
        }
        tracing::info!(
            trigger = trigger.as_str(),
            version = %applied.version,
            routes,
            clusters,
            pools_kept = applied.pools_kept,
            pools_new = applied.pools_new,
            ms = started.elapsed().as_millis() as u64,
            dir = dir.as_ref().map(|d| d.display().to_string()),
            "config reloaded"
        );
        if !applied.restart_required.is_empty() {
            tracing::warn!(
                keys = %applied.restart_required.join(", "),
                "these settings changed in the file but need a restart to take effect"
            );
        }
        self.last.store(Arc::new(LastReload {
            trigger,
            ok: true,
            error: None,
            time: now,
            version: applied.version.clone(),
            restart_required: applied.restart_required.clone(),
            dir,
        }));
        Outcome::Applied(applied)
    }

    /// Where this reload reads the dynamic files from, or why it does not run.
    fn choose_dir(
        &self,
        trigger: Trigger,
        dir: Option<PathBuf>,
        pin: &Option<PathBuf>,
    ) -> Result<Option<PathBuf>, Choice> {
        if let Some(dir) = dir {
            if self.live_dir.is_none() {
                return Err(Choice::Reject(ConfigError {
                    file: self.config_path.clone(),
                    key: "dynamic_dir".to_owned(),
                    reason: "is not set, so a reload cannot read a directory given with path=: \
                             set dynamic_dir to the directory the conf-agent manages"
                        .to_owned(),
                }));
            }
            let base = self.config_path.parent().unwrap_or(Path::new("."));
            return Ok(Some(base.join(dir)));
        }
        if let (Trigger::Watch, Some(pinned), Some(live)) = (trigger, pin, &self.live_dir) {
            if canonical(live) != *pinned {
                return Err(Choice::Skip(format!(
                    "{} does not point at {} yet, which the last reload read with path=",
                    live.display(),
                    pinned.display()
                )));
            }
        }
        Ok(self.live_dir.clone())
    }

    fn record_failure(&self, trigger: Trigger, dir: Option<PathBuf>, errors: &[ConfigError]) {
        let now = SystemTime::now();
        self.reload_metrics.failed();
        let running = self.state.load().version.clone();
        let text = status::join(errors);
        tracing::error!(
            trigger = trigger.as_str(),
            running = %running,
            dir = dir.as_ref().map(|d| d.display().to_string()),
            "config reload rejected, the running config keeps serving: {}",
            text.replace('\n', "; ")
        );
        self.last.store(Arc::new(LastReload {
            trigger,
            ok: false,
            error: Some(text),
            time: now,
            version: running,
            restart_required: Vec::new(),
            dir,
        }));
    }
}

/// Why [`Reloader::choose_dir`] does not read anything.
enum Choice {
    Skip(String),
    Reject(ConfigError),
}

/// `path` with symlinks resolved; itself when it cannot be (it does not exist right now).
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// Once a second, frees the snapshots that reloads replaced and that no request holds any
/// more (on a blocking thread), until `stop` turns true.
pub async fn reap_retired(reloader: Arc<Reloader>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = crate::listener::stopped(&mut stop) => return,
        }
        if reloader.has_retired() {
            let reloader = Arc::clone(&reloader);
            let _ = tokio::task::spawn_blocking(move || reloader.reap()).await;
        }
    }
}

#[cfg(test)]
mod tests;

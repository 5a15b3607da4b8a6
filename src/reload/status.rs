//! What the last reload did, for `/status`, and the reload metrics.

use std::path::PathBuf;
use std::time::SystemTime;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde_json::json;

use super::Trigger;
use crate::config::ConfigError;

/// The outcome of the last reload (or of the start, before the first one): `last_reload`
/// in `/status`.
#[derive(Debug, Clone)]
pub struct LastReload {
    pub trigger: Trigger,
    pub ok: bool,
    /// Every problem, `file:key: reason`, one per line; `None` when it took effect.
    pub error: Option<String>,
    pub time: SystemTime,
    /// The version serving after it: the new one, or after a failure the one still serving.
    pub version: String,
    /// Static keys that changed in the file and wait for a restart.
    pub restart_required: Vec<String>,
    /// Where the dynamic files were read from.
    pub dir: Option<PathBuf>,
}

impl LastReload {
    /// The `/status` form.
    pub fn to_json(&self) -> serde_json::Value {
        let unix = self
            .time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        json!({
            "ok": self.ok,
            "error": self.error,
            "time": humantime::format_rfc3339_millis(self.time).to_string(),
            "time_unix": unix,
            "trigger": self.trigger.as_str(),
            "version": self.version,
            "restart_required": self.restart_required,
            "dir": self.dir.as_ref().map(|d| d.display().to_string()),
        })
    }
}

/// Every problem on a line of its own, as `sluice check` prints them.
pub fn join(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `sluice_config_reload_total{result}`, `sluice_config_last_reload_success` and
/// `sluice_config_last_reload_success_timestamp_seconds`. Registered by the reloader into
/// the shared registry, beside `sluice_config_version_info`, which it sets on success.
#[derive(Debug, Clone)]
pub struct ReloadMetrics {
    ok: IntCounter,
    error: IntCounter,
    skipped: IntCounter,
    last_success: IntGauge,
    last_success_time: IntGauge,
}

impl ReloadMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> ReloadMetrics {
        let total = IntCounterVec::new(
            Opts::new(
                "sluice_config_reload_total",
                "Reloads of the dynamic config, by result (ok: it took effect; error: it was \
                 rejected and the running config kept serving; skipped: a watch event came \
                 before a conf-agent repointed the live directory at its last path= reload).",
            ),
            &["result"],
        )
        .expect("metric definition is valid");
        let last_success = IntGauge::new(
            "sluice_config_last_reload_success",
            "1 if the last reload (or the start) took effect, 0 if it was rejected.",
        )
        .expect("metric definition is valid");
        let last_success_time = IntGauge::new(
            "sluice_config_last_reload_success_timestamp_seconds",
            "When the running config was loaded, in seconds since the Unix epoch.",
        )
        .expect("metric definition is valid");
        for collector in [
            Box::new(total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(last_success.clone()),
            Box::new(last_success_time.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        ReloadMetrics {
            ok: total.with_label_values(&["ok"]),
            error: total.with_label_values(&["error"]),
            skipped: total.with_label_values(&["skipped"]),
            last_success,
            last_success_time,
        }
    }

    /// A config took effect at `time`. The start counts as one, but not in the total.
    pub fn succeeded(&self, time: SystemTime) {
        self.last_success.set(1);
        let unix = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.last_success_time.set(unix);
    }

    /// A reload took effect.
    pub fn ok(&self) {
        self.ok.inc();
    }

    /// A watch event did not reload (see `Outcome::Skipped`).
    pub fn skipped(&self) {
        self.skipped.inc();
    }

    /// A reload was rejected.
    pub fn failed(&self) {
        self.error.inc();
        self.last_success.set(0);
    }
}

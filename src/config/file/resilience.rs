//! The serde structs of model routing, traffic splits, load balancing, health, retries,
//! provider keys and concurrency caps; `compile/resilience.rs` and `compile/models.rs` check
//! them and build the runtime objects. Defaults are stated beside each field and mirrored in
//! `conf/sluice.toml`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::super::units::HumanDuration;

/// One share of a route's traffic split: `clusters = [{ name = "a", weight = 90 }, ...]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitTarget {
    /// The cluster that takes this share.
    pub name: String,
    /// Its share relative to the others. Default 1.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// `lb`: how a cluster spreads requests over its backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Smooth weighted round-robin (nginx's order), the default.
    #[default]
    RoundRobin,
    /// Power of two choices on requests in flight per unit of weight.
    LeastRequest,
    /// A ring keyed by `hash_on`, with bounded load.
    ConsistentHash,
    /// Weighted random.
    Random,
}

/// `panic_mode`: what a cluster does when none of its backends is healthy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PanicMode {
    /// Try them all anyway, as if healthy (the default): a wrong health verdict then
    /// costs errors, not an outage.
    #[default]
    TryAll,
    /// Answer 503 `no_healthy_backend` (after the route's fallbacks).
    Fail,
}

/// `[clusters.health_check]`: active HTTP checks of every backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The path asked for with `GET`. Default `/health`.
    #[serde(default = "default_check_path")]
    pub path: String,
    /// Time between two checks of a backend. Default 5s.
    #[serde(default = "default_check_interval")]
    pub interval: HumanDuration,
    /// Time a check may take, answer body included. Default 2s.
    #[serde(default = "default_check_timeout")]
    pub timeout: HumanDuration,
    /// Good checks in a row that bring a down backend back. Default 2.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Failed checks in a row that take a backend down. Default 3.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Statuses that count as healthy. Default `[200]`.
    #[serde(default = "default_expected_status")]
    pub expected_status: Vec<u16>,
}

fn default_check_path() -> String {
    "/health".to_owned()
}
fn default_check_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}
fn default_check_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(2))
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}
fn default_expected_status() -> Vec<u16> {
    vec![200]
}

/// `[clusters.outlier]`: passive outlier detection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outlier {
    /// Connect failures, timeouts or 5xx answers in a row that eject a backend; 0 turns
    /// ejection off. Default 5.
    pub consecutive_failures: u32,
    /// The first ejection's length; each further one in a row doubles it. Default 5s.
    pub base_ejection: HumanDuration,
    /// The longest ejection, and the longest pause a `Retry-After` may ask for. Default 5m.
    pub max_ejection: HumanDuration,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_failures: 5,
            base_ejection: HumanDuration(std::time::Duration::from_secs(5)),
            max_ejection: HumanDuration(std::time::Duration::from_secs(300)),
        }
    }
}

/// `[clusters.retry]`: trying a failed attempt again on another backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Attempts in all, the first included; 1 (the default) means no retry.
    pub attempts: u32,
    /// Answers tried again, besides connect failures, refused streams and per-try
    /// timeouts. Default `[502, 503, 429]`.
    pub on_status: Vec<u16>,
    /// Bounds each attempt's wait for its response head; unset: only the cluster's timeouts.
    pub per_try_timeout: Option<HumanDuration>,
    /// Retries allowed per request over a 10 s window. Default 0.2.
    pub budget_ratio: f64,
    /// Retries per second allowed whatever the traffic. Default 3.
    pub budget_min_per_second: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 1,
            on_status: vec![502, 503, 429],
            per_try_timeout: None,
            budget_ratio: 0.2,
            budget_min_per_second: 3,
        }
    }
}

/// `[clusters.credentials]`: provider keys that replace the client's credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The header the key is sent in. Default `authorization`.
    #[serde(default = "default_credentials_header")]
    pub header: String,
    /// Written before the key; default `"Bearer "` for `authorization`, `""` otherwise.
    pub prefix: Option<String>,
    /// The keys, picked by smooth weighted round-robin.
    pub keys: Vec<KeySource>,
    /// How long a key rests after a 429 without `Retry-After`. Default 60s.
    #[serde(default = "default_key_cooldown")]
    pub cooldown: HumanDuration,
}

fn default_credentials_header() -> String {
    "authorization".to_owned()
}
fn default_key_cooldown() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(60))
}

/// Where one key is: exactly one of `env` and `file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySource {
    /// An environment variable that holds the key.
    pub env: Option<String>,
    /// A file that holds the key (surrounding whitespace is ignored), relative to the file
    /// that names it.
    pub file: Option<String>,
    /// Share of requests relative to the other keys. Default 1.
    #[serde(default = "one")]
    pub weight: u32,
}

/// Model name rewrites, on a route or a cluster.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRewrite {
    /// Provider prefixes removed from the model name (`"openai/"`); the first that
    /// matches is removed.
    #[serde(default)]
    pub strip_prefix: Vec<String>,
    /// Public name → backend name.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
}

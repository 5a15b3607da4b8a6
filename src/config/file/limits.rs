//! The config sections of API-key auth and rate limits, as written.
//!
//! `[[consumers]]` and `[[limits]]` are dynamic (main file or the dynamic directory);
//! `[redis]` and `[ratelimit]` are static (main file only; a change needs a restart, since
//! they shape the connection and the store that outlive every reload).

use serde::Deserialize;

use crate::config::units::HumanDuration;

/// `[[consumers]]`: a named caller, its API keys, and what it may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// Unique name: what logs and metrics say instead of the key.
    pub name: String,
    /// SHA-256 of a key, as 64 hex digits (`printf %s "$KEY" | sha256sum`), or a list of
    /// them (for rotation).
    pub key_sha256: Option<OneOrMany>,
    /// An environment variable that holds a key.
    pub key_env: Option<String>,
    /// A file that holds a key (surrounding whitespace is ignored), relative to the file that
    /// names it.
    pub key_file: Option<String>,
    /// Models it may use (`prefix*` matches a prefix); empty means any.
    #[serde(default)]
    pub models: Vec<String>,
    /// Models it may not use, whatever `models` says.
    #[serde(default)]
    pub blocked_models: Vec<String>,
    /// Names of the routes it may use; empty means any.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Names of `[[limits]]` that apply to its requests, after the route's.
    #[serde(default)]
    pub limits: Vec<String>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(one) => std::slice::from_ref(one),
            OneOrMany::Many(many) => many,
        }
    }
}

/// `[[limits]]`: a token bucket (of requests or LLM tokens) or an in-flight cap, applied by
/// the routes and consumers that name it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Unique name: routes and consumers refer to it, metrics carry it.
    pub name: String,
    /// Requests per `per`. Set exactly one of `requests`, `tokens` and `concurrent`.
    pub requests: Option<u64>,
    /// LLM tokens (prompt and output) per `per`.
    pub tokens: Option<u64>,
    /// Requests in flight at once, from arrival to the end of the answer.
    pub concurrent: Option<u32>,
    /// The period of `requests` or `tokens`. Default `"1m"`.
    pub per: Option<HumanDuration>,
    /// The largest burst: the bucket's capacity. Default: `requests` or `tokens`.
    pub burst: Option<u64>,
    /// What a bucket is per: `consumer`, `route`, `model`, `client_ip`, `header:NAME`, or
    /// several. Default `[]`: one bucket for everyone.
    #[serde(default)]
    pub key: Vec<String>,
    /// `local` (default): buckets in this process; `redis`: in Redis, shared by replicas.
    #[serde(default)]
    pub backend: LimitBackend,
    /// For `backend = "redis"`: `open` (default) decides with a local bucket while Redis is
    /// unreachable, `closed` refuses with 503.
    pub on_redis_error: Option<OnRedisError>,
    /// Token limits: prompt tokens are estimated as body bytes / this. Default 4.
    pub bytes_per_token: Option<f64>,
    /// Token limits: output tokens assumed when a request sets no `max_tokens` (or
    /// `max_completion_tokens`, `max_output_tokens`). Default 256.
    pub default_max_tokens: Option<u64>,
}

/// Where a limit's buckets live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitBackend {
    #[default]
    Local,
    Redis,
}

/// What a Redis-backed limit does while Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisError {
    Open,
    Closed,
}

/// A route's `auth`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Keys are not read (default).
    #[default]
    Off,
    /// A key, if sent, must be valid.
    Optional,
    /// A valid key is required.
    Required,
}

/// `[redis]`: the Redis server of `backend = "redis"` limits. Static.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// `redis://[user:password@]host:port[/db]` or `unix:///path`.
    pub url: String,
    /// Longest a request waits for Redis; then the limit's `on_redis_error` decides.
    #[serde(default = "default_redis_timeout")]
    pub timeout: HumanDuration,
    /// Longest one connection attempt may take.
    #[serde(default = "default_redis_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// After a failure, Redis is not called for this long.
    #[serde(default = "default_redis_retry_interval")]
    pub retry_interval: HumanDuration,
    /// Prepended to every key sluice writes.
    #[serde(default = "default_redis_key_prefix")]
    pub key_prefix: String,
}

fn default_redis_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_millis(50))
}

fn default_redis_connect_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(1))
}

fn default_redis_retry_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(1))
}

fn default_redis_key_prefix() -> String {
    "sluice:rl:".to_owned()
}

/// `[ratelimit]`: bounds of the local bucket store. Static.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    /// Most buckets kept in this process; past it, the least recently used go.
    pub max_keys: usize,
    /// How often buckets that refilled to capacity are dropped.
    pub sweep_interval: HumanDuration,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            max_keys: 100_000,
            sweep_interval: HumanDuration(std::time::Duration::from_secs(10)),
        }
    }
}

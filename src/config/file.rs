//! The config file as it is written: serde structs with `deny_unknown_fields`.
//!
//! Nothing here is checked beyond its type; `compile.rs` checks meaning and builds the runtime
//! objects. Every default is stated once, in the `Default` impl or `default_*` function beside
//! the field, and mirrored in `conf/sluice.toml`.

mod limits;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

use super::units::{ByteSize, HumanDuration};
pub use limits::{
    AuthMode, Consumer, Limit, LimitBackend, OnRedisError, OneOrMany, RateLimit, Redis,
};

pub mod resilience;
pub use resilience::{
    Credentials, HealthCheck, KeySource, LbPolicy, ModelRewrite, Outlier, PanicMode, Retry,
    SplitTarget,
};

/// The main config file: the static part and, optionally, dynamic sections.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MainFile {
    /// Listen addresses; a change needs a restart.
    #[serde(default)]
    pub listen: Listen,
    /// Limits and timeouts of the downstream (client) side.
    #[serde(default)]
    pub server: Server,
    /// Defaults for every cluster's upstream connections.
    #[serde(default)]
    pub upstream: UpstreamDefaults,
    /// Logging.
    #[serde(default)]
    pub log: Log,
    /// How the dynamic config is reloaded: the conf-agent endpoint's token, the watch.
    #[serde(default)]
    pub reload: Reload,
    /// A directory of further dynamic files (`*.toml`, read in name order), relative to this
    /// file. Lets a conf-agent or a ConfigMap own the routes while this file owns the process.
    pub dynamic_dir: Option<String>,
    /// Upstream clusters defined in this file.
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// Routes defined in this file, in precedence order for ties.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Certificates served on the HTTPS listener, defined in this file.
    #[serde(default)]
    pub certificates: Vec<Certificate>,
    /// Settings of the HTTPS listener that reload with the certificates (client certificates).
    pub tls: Option<Tls>,
    /// The Redis server of `backend = "redis"` limits; static.
    pub redis: Option<Redis>,
    /// Bounds of the local rate-limit store; static.
    #[serde(default)]
    pub ratelimit: RateLimit,
    /// API-key holders defined in this file.
    #[serde(default)]
    pub consumers: Vec<Consumer>,
    /// Rate limits defined in this file.
    #[serde(default)]
    pub limits: Vec<Limit>,
}

/// A file of the dynamic directory: routes, clusters, certificates, `[tls]`, consumers and
/// limits only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicFile {
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub certificates: Vec<Certificate>,
    pub tls: Option<Tls>,
    #[serde(default)]
    pub consumers: Vec<Consumer>,
    #[serde(default)]
    pub limits: Vec<Limit>,
}

/// `[[certificates]]`: a certificate chain and its key, served to clients whose SNI names
/// one of the certificate's DNS names. Paths are relative to the file that names them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// Unique name; the `cert` label of `sluice_tls_cert_expiry_seconds`.
    pub name: String,
    /// PEM file: the certificate first, then its intermediates.
    pub cert: String,
    /// PEM file: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: String,
    /// Served to clients that send no SNI or a name no certificate has. When no certificate
    /// says `default = true`, the first one is the default.
    #[serde(default)]
    pub default: bool,
}

/// `[tls]`: the HTTPS listener's dynamic settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Client certificates (mTLS); unset means none are asked for.
    pub client_auth: Option<ClientAuth>,
}

/// `[tls.client_auth]`: asking clients for a certificate signed by `ca`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    /// PEM bundle of the CAs that sign client certificates.
    pub ca: String,
    /// `required` (default): a client without a valid certificate fails the handshake.
    /// `optional`: it may send none, but one it sends must verify.
    #[serde(default)]
    pub mode: ClientAuthMode,
}

/// Whether a client certificate is required.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    #[default]
    Required,
    Optional,
}

/// `[listen]`: where sluice accepts connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Plain HTTP/1.1 and h2c traffic. Default `0.0.0.0:8080`.
    pub http: SocketAddr,
    /// HTTPS traffic (HTTP/1.1 and HTTP/2 by ALPN). Default `0.0.0.0:8443`; bound only when
    /// the config has at least one certificate.
    pub https: SocketAddr,
    /// Health, readiness, metrics and status. Default `0.0.0.0:8421`.
    pub monitor: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            http: SocketAddr::from(([0, 0, 0, 0], 8080)),
            https: SocketAddr::from(([0, 0, 0, 0], 8443)),
            monitor: SocketAddr::from(([0, 0, 0, 0], 8421)),
        }
    }
}

/// `[server]`: what a client may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Worker threads of the runtime; 0 means one per CPU core.
    pub workers: usize,
    /// Connections open at once; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Time a client has to send a complete request head; slower clients are cut.
    pub header_read_timeout: HumanDuration,
    /// Longest a write to a client may stay blocked: a client that stops reading is cut.
    /// `"0s"` turns it off.
    pub send_timeout: HumanDuration,
    /// Longest a client may leave a request body that sluice is reading whole without
    /// sending more of it: then 408. `"0s"` turns it off.
    pub body_read_timeout: HumanDuration,
    /// Largest request head (HTTP/1.1 read buffer, HTTP/2 header list). At least 8KiB.
    pub max_header_size: ByteSize,
    /// Most header fields in one HTTP/1.1 request.
    pub max_headers: usize,
    /// Largest request body; larger ones get 413.
    pub max_request_body: ByteSize,
    /// Largest body sluice holds in memory: to read its `model` for routing (larger: 413),
    /// to read an LLM request, or to send it again on a retry or to a fallback (larger
    /// bodies are streamed and not retried).
    pub max_buffered_body: ByteSize,
    /// Accept HTTP/2 with prior knowledge (h2c) on the HTTP port.
    pub http2: bool,
    /// After SIGTERM, `/readyz` fails at once but the listener keeps accepting for this
    /// long, so that load balancers stop sending before connections are refused.
    pub shutdown_delay: HumanDuration,
    /// Time that requests in flight get to finish after the listener closes.
    pub drain_timeout: HumanDuration,
    /// Peers whose `X-Forwarded-*` headers are trusted (CIDR or bare address).
    pub trusted_proxies: Vec<String>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            workers: 0,
            max_connections: 10_000,
            header_read_timeout: HumanDuration(std::time::Duration::from_secs(10)),
            send_timeout: HumanDuration(std::time::Duration::from_secs(120)),
            body_read_timeout: HumanDuration(std::time::Duration::from_secs(60)),
            max_header_size: ByteSize(64 * 1024),
            max_headers: 100,
            max_request_body: ByteSize(32 * 1024 * 1024),
            max_buffered_body: ByteSize(32 * 1024 * 1024),
            http2: true,
            shutdown_delay: HumanDuration(std::time::Duration::ZERO),
            drain_timeout: HumanDuration(std::time::Duration::from_secs(30)),
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[upstream]`: defaults that every cluster inherits; `"0s"` turns a timeout off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamDefaults {
    /// Time to open the TCP connection.
    pub connect_timeout: HumanDuration,
    /// Time from sending the request to receiving the response head.
    pub response_header_timeout: HumanDuration,
    /// Time from the response head to the first byte of its body (an LLM's first token).
    pub first_byte_timeout: HumanDuration,
    /// Longest pause between two chunks of a response body (between tokens).
    pub idle_timeout: HumanDuration,
    /// Time for the whole exchange, the streamed response body included.
    pub total_timeout: HumanDuration,
    /// Idle upstream connections are closed after this long.
    pub pool_idle_timeout: HumanDuration,
    /// Idle connections kept per backend.
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamDefaults {
    fn default() -> Self {
        let secs = |s| HumanDuration(std::time::Duration::from_secs(s));
        UpstreamDefaults {
            connect_timeout: secs(5),
            response_header_timeout: secs(300),
            first_byte_timeout: secs(300),
            idle_timeout: secs(120),
            total_timeout: secs(1800),
            pool_idle_timeout: secs(90),
            pool_max_idle_per_host: 256,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A `tracing` filter: `info`, `debug`, `sluice=debug,hyper=info`. `RUST_LOG` wins.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
    /// One line per request at `info` on target `sluice::access`.
    pub access_log: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".to_owned(),
            format: LogFormat::Text,
            access_log: true,
        }
    }
}

/// `[reload]`: the ways a running sluice takes in a new dynamic config. A change needs a
/// restart (it is reported as such by a reload).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reload {
    /// When set, `GET /reload/...` on the monitor port must also carry
    /// `Authorization: Bearer <token>`; loopback peers only, either way.
    pub token: Option<String>,
    /// Watch the main file's directory and `dynamic_dir` and reload on changes (a
    /// ConfigMap's `..data` swap, a renamed file, a repointed symlink). Default on.
    pub watch: bool,
    /// How long the watch waits for the files to settle: a reload starts once no change
    /// has been seen for this long. Default 250 ms; 10 ms to 1 min.
    pub watch_debounce: HumanDuration,
}

impl Default for Reload {
    fn default() -> Self {
        Reload {
            token: None,
            watch: true,
            watch_debounce: HumanDuration(std::time::Duration::from_millis(250)),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[[clusters]]`: a named set of backends that serve the same thing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Unique name that routes refer to.
    pub name: String,
    /// Backends, picked by smooth weighted round-robin.
    pub backends: Vec<Backend>,
    /// `http1` (default), `h2c` (HTTP/2 with prior knowledge, `http://` only), `http2`
    /// (HTTP/2 over TLS) or `auto` (ALPN picks over TLS; HTTP/1.1 over `http://`).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// TLS to `https://` backends.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// Overrides of the `[upstream]` settings of the same names.
    pub connect_timeout: Option<HumanDuration>,
    pub response_header_timeout: Option<HumanDuration>,
    pub first_byte_timeout: Option<HumanDuration>,
    pub idle_timeout: Option<HumanDuration>,
    pub total_timeout: Option<HumanDuration>,
    pub pool_idle_timeout: Option<HumanDuration>,
    pub pool_max_idle_per_host: Option<usize>,
    /// How requests are spread over the backends. Default `round_robin`.
    #[serde(default)]
    pub lb: LbPolicy,
    /// The key of `lb = "consistent_hash"`: `"header:NAME"`, `"api_key"`, `"client_ip"` or
    /// `"prompt"`. Default `"client_ip"`.
    pub hash_on: Option<String>,
    /// Bytes of the prompt hashed by `hash_on = "prompt"`. Default 1024.
    pub hash_prompt_bytes: Option<usize>,
    /// Consistent hashing sends no backend more than this × the mean load. Default 1.25.
    pub balance_factor: Option<f64>,
    /// A backend that comes back up gets a share that ramps up over this long. Default off.
    pub slow_start: Option<HumanDuration>,
    /// When no backend is healthy: `try_all` (default) or `fail` (503).
    #[serde(default)]
    pub panic_mode: PanicMode,
    /// Active HTTP checks; none by default.
    pub health_check: Option<HealthCheck>,
    /// Passive outlier detection (on by default).
    #[serde(default)]
    pub outlier: Outlier,
    /// Retries on another backend (off by default: `attempts = 1`).
    #[serde(default)]
    pub retry: Retry,
    /// Provider keys that replace the client's credentials.
    pub credentials: Option<Credentials>,
    /// Requests in flight per backend; 0 (the default) is no cap.
    #[serde(default)]
    pub max_in_flight: u32,
    /// Requests that may wait for a slot per backend beyond the cap. Default 0.
    #[serde(default)]
    pub max_queue: u32,
    /// Longest wait in that queue. Default 10s.
    pub queue_timeout: Option<HumanDuration>,
    /// Model names rewritten for this cluster's backends, after the route's rewrite.
    #[serde(default)]
    pub model_rewrite: ModelRewrite,
}

/// One backend of a cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// `http://host:port`, `https://host:port` or `mock://name?tokens=N&delay=D` (the built-in
    /// mock model server).
    pub url: String,
    /// Share of requests relative to the cluster's other backends. Default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// The protocol spoken to a cluster's backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1, with a pool of keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over plain TCP.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`).
    Http2,
    /// Over TLS, ALPN picks HTTP/2 or HTTP/1.1; over plain TCP, HTTP/1.1.
    Auto,
}

/// `[clusters.tls]`: how sluice checks `https://` backends and proves itself to them. Paths
/// are relative to the file that names them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM bundle of further CAs trusted beside Mozilla's roots (a private CA).
    pub ca: Option<String>,
    /// The name sent as SNI and checked against the backend's certificate; default: the
    /// URL's host.
    pub server_name: Option<String>,
    /// PEM certificate chain presented to backends that ask for one (mTLS).
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<String>,
    /// Accepts any certificate the backend presents. Insecure: anyone on the path can read and
    /// change the traffic. A warning is logged at every load.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// `[[routes]]`: which requests go to which cluster, and how they are changed on the way.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// The cluster that serves this route (or `clusters` for a weighted split).
    pub cluster: Option<String>,
    /// What a request must look like; an empty match takes everything.
    #[serde(default, rename = "match")]
    pub matcher: Match,
    /// A weighted split over several clusters, instead of `cluster`.
    #[serde(default)]
    pub clusters: Vec<SplitTarget>,
    /// Clusters tried in order when the chosen one has no healthy backend or has used up
    /// its attempts.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Model names rewritten before the cluster's own rewrite.
    #[serde(default)]
    pub model_rewrite: ModelRewrite,
    /// sluice answers `GET …/models` and `GET …/models/{id}` on this route from its config.
    #[serde(default)]
    pub models_endpoint: bool,
    /// Replaces the matched `path_prefix` (or the whole `path`); `""` strips it.
    pub rewrite_prefix: Option<String>,
    /// Sets the upstream `Host`; by default it is the backend's `host:port`.
    pub host_rewrite: Option<String>,
    /// Sends the client's `Host` upstream unchanged.
    #[serde(default)]
    pub preserve_host: bool,
    /// Request headers set or removed before forwarding.
    #[serde(default)]
    pub request_headers: HeaderOps,
    /// Response headers set or removed before answering.
    #[serde(default)]
    pub response_headers: HeaderOps,
    /// Whether requests are read as OpenAI-style LLM calls (model, usage, first token).
    #[serde(default)]
    pub llm: LlmMode,
    /// Adds `stream_options.include_usage = true` to streamed requests that do not set it,
    /// so usage is always known; the extra usage chunk is then kept from the client.
    #[serde(default)]
    pub include_usage: bool,
    /// On an upstream failure mid-stream, sends an SSE `error` event before cutting the
    /// stream.
    #[serde(default)]
    pub sse_error_event: bool,
    /// Allows HTTP/1.1 `Upgrade: websocket` on this route (tunnelled to the backend).
    #[serde(default)]
    pub websocket: bool,
    /// A WebSocket tunnel with no traffic either way for this long is closed.
    pub websocket_idle_timeout: Option<HumanDuration>,
    /// A WebSocket tunnel is closed after this long, whatever its traffic.
    pub websocket_max_duration: Option<HumanDuration>,
    /// Overrides of the cluster's timeouts of the same names.
    pub response_header_timeout: Option<HumanDuration>,
    pub first_byte_timeout: Option<HumanDuration>,
    pub idle_timeout: Option<HumanDuration>,
    pub total_timeout: Option<HumanDuration>,
    /// Whether callers need an API key: `off` (default), `optional` or `required`.
    #[serde(default)]
    pub auth: AuthMode,
    /// A further header the API key may come in, read before `Authorization: Bearer` and
    /// `x-api-key`.
    pub auth_header: Option<String>,
    /// Names of `[[limits]]` applied to every request of this route.
    #[serde(default)]
    pub limits: Vec<String>,
}

/// When a route reads requests as LLM calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmMode {
    /// POSTs to `…/chat/completions`, `…/completions`, `…/embeddings` and `…/responses`.
    #[default]
    Auto,
    /// Every request.
    On,
    /// None.
    Off,
}

/// `[routes.match]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Exact host names or `*.example.com` wildcards; empty means any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The whole path, exactly.
    pub path: Option<String>,
    /// A path prefix; the longest matching prefix wins.
    pub path_prefix: Option<String>,
    /// A regular expression over the whole path.
    pub path_regex: Option<String>,
    /// Allowed methods; empty means any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Headers that must be present, with a given value if `value` is set.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    /// Model names (exact, `prefix*` or globs with `*` and `?`) that the JSON body's
    /// `model` must match; the body is read only for routes that have this.
    pub models: Option<Vec<String>>,
}

/// A header condition of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    /// Exact value; when absent the header only has to be present.
    pub value: Option<String>,
}

/// Header edits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Headers set (replacing any present).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers removed.
    #[serde(default)]
    pub remove: Vec<String>,
}

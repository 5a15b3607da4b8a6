//! sluice: a data plane for LLM traffic.
//!
//! An async HTTP reverse proxy that stands at a cluster's ingress in front of
//! OpenAI-compatible model backends. `docs/architecture.md` follows a request through these
//! modules.
//!
//! # Layout
//!
//! - [`app`]: wires config, listeners, monitor and reloads together; starts and drains.
//! - [`config`]: reads TOML files, checks them and compiles the immutable [`config::Snapshot`];
//!   `config::carry` hands state from the running snapshot to the next, `config::restart`
//!   names the static keys a reload cannot apply.
//! - [`reload`]: swaps in a new snapshot, all or nothing, from any of three triggers: the
//!   conf-agent endpoint (`monitor::reload`), the conf-directory watch (`reload::watch`),
//!   SIGHUP.
//! - [`listener`]: accepts client connections (TCP, or TLS on the HTTPS port) and serves
//!   them: HTTP/1.1 on the plain port with sluice's own server connection (`listener::h1`),
//!   TLS, h2c and upgrades with hyper.
//! - [`tls`]: the HTTPS side: certificates from PEM, SNI selection, the server config, the
//!   handshake.
//! - [`proxy`]: the request path in call order: `route` (host, path, method, headers, model)
//!   → `auth` (API key, consumer, allowed routes and models) → `limit` and `buffer` (the
//!   body, held when a stage needs it whole) → `models_endpoint` → `admit` (rate limits) →
//!   `dispatch` (split, fallbacks, `balance`, slots, `retry`) → `forward` (with `headers`) →
//!   `stream` (the body back, with its timeouts) → `record` (metrics, access log and token
//!   settlement, once); `upgrade` for WebSocket tunnels.
//! - [`ratelimit`]: token buckets and in-flight caps: `bucket` (the arithmetic), `local`
//!   (sharded, bounded in-process store), `redis` (the shared store and its Lua script),
//!   `key` (what a bucket is per), `limit` (a compiled limit), `metrics`.
//! - [`llm`]: OpenAI request and response shapes, model patterns and rewrites, the SSE
//!   parser, usage accounting, GenAI metrics.
//! - [`upstream`]: pooled clients to backends (HTTP/1.1 in `upstream::h1`, driven in the
//!   request's task; HTTP/2 through hyper; TLS to `https://` ones in `upstream::tls`), the
//!   in-process mock target, backend health and load (`health`, `check`), provider keys
//!   (`credentials`), and their metrics and `/status` details.
//! - [`mock`]: the built-in OpenAI-compatible mock model server behind `mock://` URLs.
//! - [`monitor`]: `/healthz`, `/readyz`, `/metrics`, `/status` and `/reload/<name>` on the
//!   monitor port.
//! - [`metrics`]: the Prometheus registry and per-route handles.
//! - [`memory`]: hands the heap's freed pages back to the OS after a burst (glibc).
//! - [`wire`]: HTTP/1.1 framing shared by the server and client sides (the chunked coding,
//!   field names).
//! - [`error`]: the one place where errors become HTTP status codes and JSON bodies.
//! - [`body`]: the one body type used everywhere.

// Denied rather than forbidden: `memory` alone calls two glibc functions.
#![deny(unsafe_code)]

pub mod app;
pub mod body;
pub mod config;
pub mod error;
pub mod listener;
pub mod llm;
pub mod memory;
pub mod metrics;
pub mod mock;
pub mod monitor;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod tls;
pub mod upstream;
pub mod wire;

//! LLM awareness: what OpenAI-style requests ask for and what their answers report.
//!
//! Everything here observes; the bytes forwarded are the bytes received, except for the
//! documented edits of [`request::add_include_usage`] and [`models::replace_model`].
//!
//! - [`models`]: model conditions of routes, aliases and rewrites, the `/v1/models` list.
//! - [`request`]: the model, `stream` and `stream_options` of a request body.
//! - [`json`]: the scanner that `request` reads bodies with, checking the syntax of what it
//!   skips.
//! - [`sse`]: the incremental event-stream parser that runs beside the forwarded bytes.
//! - [`usage`]: usage, finish reason and output detection in response JSON.
//! - [`strip`]: keeps the usage chunk that sluice asked for from a client that did not.
//! - [`tap`]: the per-response observer built from the two above.
//! - [`metrics`]: the GenAI metrics and the bound on model label values.

pub mod json;
pub mod metrics;
pub mod models;
pub mod request;
pub mod sse;
pub mod strip;
pub mod tap;
pub mod usage;

//! GenAI metrics, named as the OpenTelemetry semantic conventions name them, and the bound
//! on their model labels.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use super::tap::LlmTap;

/// Most distinct model names used as label values; later ones are counted as `other`.
pub const MAX_MODEL_LABELS: usize = 100;

/// The LLM metrics.
#[derive(Debug, Clone)]
pub struct LlmMetrics {
    /// `gen_ai_client_token_usage{gen_ai_token_type,gen_ai_request_model,route}`.
    tokens: HistogramVec,
    /// `gen_ai_server_time_to_first_token_seconds{gen_ai_request_model,route}`.
    ttft: HistogramVec,
    /// `gen_ai_server_time_per_output_token_seconds{gen_ai_request_model,route}`.
    tpot: HistogramVec,
    /// `gen_ai_server_request_duration_seconds{gen_ai_request_model,route}`.
    duration: HistogramVec,
    /// `sluice_llm_active_streams`: SSE answers streaming now.
    pub active_streams: IntGauge,
    /// `sluice_llm_streams_ended_total{route,reason}`.
    streams_ended: IntCounterVec,
    /// `sluice_llm_unparsed_total{route}`: events or bodies that could not be read.
    unparsed: IntCounterVec,
    /// `sluice_llm_usage_injected_total{route}`: streamed requests given `include_usage`.
    pub usage_injected: IntCounterVec,
    models: Arc<ModelLabels>,
    /// Route → model label → histograms; copied on the rare insert, read without a lock.
    cache: Arc<ArcSwap<HandleCache>>,
}

/// What one finished LLM exchange reports.
pub struct Finished<'a> {
    pub route: &'a str,
    pub model: Option<&'a str>,
    pub tap: &'a LlmTap,
    /// Seconds from the request's arrival to the end of its answer.
    pub duration: f64,
    pub started: tokio::time::Instant,
    /// How the answer ended: `complete`, `client_gone`, `upstream_error`, a timeout.
    pub outcome: &'static str,
}

impl LlmMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<LlmMetrics> {
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
        };
        let model_route = ["gen_ai_request_model", "route"];
        let metrics = LlmMetrics {
            tokens: histogram(
                "gen_ai_client_token_usage",
                "Tokens per request, by type (input or output), model and route.",
                &["gen_ai_token_type", "gen_ai_request_model", "route"],
                &[
                    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0,
                    1048576.0, 4194304.0,
                ],
            )?,
            ttft: histogram(
                "gen_ai_server_time_to_first_token_seconds",
                "Time from the request's arrival to the first output token of a stream.",
                &model_route,
                &[
                    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                    5.0, 7.5, 10.0,
                ],
            )?,
            tpot: histogram(
                "gen_ai_server_time_per_output_token_seconds",
                "Time per output token after the first, of streamed answers.",
                &model_route,
                &[
                    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
                ],
            )?,
            duration: histogram(
                "gen_ai_server_request_duration_seconds",
                "Time from the request's arrival to the end of its answer.",
                &model_route,
                &[
                    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92,
                ],
            )?,
            active_streams: IntGauge::new(
                "sluice_llm_active_streams",
                "Streamed (SSE) answers in progress.",
            )?,
            streams_ended: IntCounterVec::new(
                Opts::new(
                    "sluice_llm_streams_ended_total",
                    "Streamed answers by how they ended: complete, client_gone, \
                     upstream_error, first_byte_timeout, idle_timeout, total_timeout.",
                ),
                &["route", "reason"],
            )?,
            unparsed: IntCounterVec::new(
                Opts::new(
                    "sluice_llm_unparsed_total",
                    "SSE events or JSON bodies of LLM answers that could not be read \
                     (forwarded unchanged all the same).",
                ),
                &["route"],
            )?,
            usage_injected: IntCounterVec::new(
                Opts::new(
                    "sluice_llm_usage_injected_total",
                    "Streamed requests to which sluice added stream_options.include_usage.",
                ),
                &["route"],
            )?,
            models: Arc::new(ModelLabels::default()),
            cache: Arc::default(),
        };
        registry.register(Box::new(metrics.tokens.clone()))?;
        registry.register(Box::new(metrics.ttft.clone()))?;
        registry.register(Box::new(metrics.tpot.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.active_streams.clone()))?;
        registry.register(Box::new(metrics.streams_ended.clone()))?;
        registry.register(Box::new(metrics.unparsed.clone()))?;
        registry.register(Box::new(metrics.usage_injected.clone()))?;
        Ok(metrics)
    }

    /// Records one finished exchange.
    pub fn record(&self, done: &Finished) {
        let handles = self.handles(done.route, done.model.unwrap_or(""));
        handles.duration.observe(done.duration);
        let tap = done.tap;
        if let Some(usage) = tap.usage {
            handles.input_tokens.observe(usage.input as f64);
            if let Some(output) = usage.output {
                handles.output_tokens.observe(output as f64);
            }
        }
        if let Some(first) = tap.first_token {
            let ttft = first.saturating_duration_since(done.started);
            handles.ttft.observe(ttft.as_secs_f64());
        }
        if let Some(tpot) = tap.time_per_output_token() {
            handles.tpot.observe(tpot.as_secs_f64());
        }
        if tap.streamed {
            self.streams_ended
                .with_label_values(&[done.route, done.outcome])
                .inc();
        }
        if tap.unparsed > 0 {
            self.unparsed
                .with_label_values(&[done.route])
                .inc_by(tap.unparsed);
        }
    }

    /// The histograms of one route and model, resolved once and then read without hashing
    /// label values or taking the registry's lock. Keyed by label, so the cache is as
    /// bounded as the labels are.
    fn handles(&self, route: &str, model: &str) -> Arc<ModelHandles> {
        let cached = self.cache.load();
        if let Some(handles) = cached.get(route).and_then(|models| models.get(model)) {
            return Arc::clone(handles);
        }
        let label = self.models.label(model);
        if let Some(handles) = cached.get(route).and_then(|models| models.get(&label)) {
            return Arc::clone(handles);
        }
        let labels = [label.as_str(), route];
        let handles = Arc::new(ModelHandles {
            duration: self.duration.with_label_values(&labels),
            ttft: self.ttft.with_label_values(&labels),
            tpot: self.tpot.with_label_values(&labels),
            input_tokens: self.tokens.with_label_values(&["input", &label, route]),
            output_tokens: self.tokens.with_label_values(&["output", &label, route]),
        });
        self.cache.rcu(|cache| {
            let mut next = HandleCache::clone(cache);
            next.entry(route.to_owned())
                .or_default()
                .insert(label.clone(), Arc::clone(&handles));
            next
        });
        handles
    }
}

/// Route → model label → histograms.
type HandleCache = foldhash::HashMap<String, foldhash::HashMap<String, Arc<ModelHandles>>>;

/// The GenAI histograms of one route and model label.
#[derive(Debug)]
struct ModelHandles {
    duration: Histogram,
    ttft: Histogram,
    tpot: Histogram,
    input_tokens: Histogram,
    output_tokens: Histogram,
}

/// The model names used as label values: the first [`MAX_MODEL_LABELS`] seen, then
/// `other`. Reads take no lock; the rare insert copies the set.
#[derive(Debug, Default)]
pub struct ModelLabels {
    known: ArcSwap<HashSet<String>>,
}

impl ModelLabels {
    /// The label for `model`: itself while the bound allows, else `other`.
    pub fn label(&self, model: &str) -> String {
        if model.is_empty() {
            return "unknown".to_owned();
        }
        if self.known.load().contains(model) {
            return model.to_owned();
        }
        let mut admitted = false;
        self.known.rcu(|known| {
            admitted = known.contains(model) || known.len() < MAX_MODEL_LABELS;
            let mut next = HashSet::clone(known);
            if admitted {
                next.insert(model.to_owned());
            }
            next
        });
        if admitted {
            model.to_owned()
        } else {
            "other".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_labels_fold_into_other_past_the_bound() {
        let labels = ModelLabels::default();
        for i in 0..MAX_MODEL_LABELS {
            assert_eq!(labels.label(&format!("m{i}")), format!("m{i}"));
        }
        assert_eq!(labels.label("one-too-many"), "other");
        assert_eq!(labels.label("m3"), "m3");
        assert_eq!(labels.label(""), "unknown");
    }
}

//! What `/status` shows of balancing, health, load, retries and keys: added to the
//! monitor's JSON for each route and cluster. Keys show where they come from, never what
//! they are.

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::config::file::PanicMode;
use crate::config::snapshot::{Cluster, Route};
use crate::proxy::balance::LbKind;
use crate::upstream::health::Down;

/// Adds a route's split, fallbacks, model condition and endpoint to `out`.
pub fn route(r: &Route, out: &mut Value) {
    let split: Vec<Value> = r.targets[..r.split_len]
        .iter()
        .map(|t| json!({ "cluster": t.cluster.name, "weight": t.weight }))
        .collect();
    let fallbacks: Vec<&str> = r.targets[r.split_len..]
        .iter()
        .map(|t| t.cluster.name.as_str())
        .collect();
    out["clusters"] = json!(split);
    out["fallbacks"] = json!(fallbacks);
    out["models"] = json!(r.matcher.models.as_ref().map(|m| m.exact()));
    out["models_endpoint"] = json!(r.models_endpoint);
}

/// Adds a cluster's policy and each backend's health and load to `out`.
pub fn cluster(c: &Cluster, out: &mut Value) {
    let lb = match c.balancer.kind() {
        LbKind::RoundRobin => "round_robin",
        LbKind::LeastRequest => "least_request",
        LbKind::ConsistentHash => "consistent_hash",
        LbKind::Random => "random",
    };
    out["lb"] = json!(lb);
    out["panic_mode"] = json!(match c.panic_mode {
        PanicMode::TryAll => "try_all",
        PanicMode::Fail => "fail",
    });
    out["retry"] = json!({
        "attempts": c.retry.attempts,
        "on_status": c.retry.on_status.iter().map(|s| s.as_u16()).collect::<Vec<_>>(),
        "budget_ratio": c.retry.budget.ratio(),
        "budget_min_per_second": c.retry.budget.min_per_second(),
    });
    out["health_check"] = json!(c.health_check.as_ref().map(|h| json!({
        "path": h.path.as_str(),
        "interval_ms": h.interval.as_millis() as u64,
    })));
    out["max_in_flight"] = json!(c.concurrency.map(|c| c.max_in_flight));
    if let Some(keys) = &c.credentials {
        let list: Vec<Value> = keys
            .keys()
            .iter()
            .enumerate()
            .map(|(i, k)| {
                json!({
                    "source": k.source,
                    "weight": k.weight,
                    "resting_ms": keys.resting(i).map(|d| d.as_millis() as u64),
                })
            })
            .collect();
        out["credentials"] = json!({ "header": keys.header.as_str(), "keys": list });
    }
    let now = Instant::now();
    if let Some(backends) = out["backends"].as_array_mut() {
        for (b, entry) in c.backends.iter().zip(backends) {
            let state = &b.state;
            let (healthy, reason, for_ms) = match state.down(now) {
                None => (true, None, None),
                Some(Down::Check) => (false, Some("health_check"), None),
                Some(Down::Ejected(d)) => (false, Some("ejected"), Some(d.as_millis() as u64)),
                Some(Down::Paused(d)) => (false, Some("retry_after"), Some(d.as_millis() as u64)),
            };
            entry["healthy"] = json!(healthy);
            entry["down_reason"] = json!(reason);
            entry["down_for_ms"] = json!(for_ms);
            entry["in_flight"] = json!(state.in_flight());
            entry["queued"] = json!(state.queued());
        }
    }
}

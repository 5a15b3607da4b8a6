//! Compiling the model side of routes: `match.models`, model rewrites, the clusters a route
//! sends to (one, a weighted split, fallbacks) and the public model list.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use super::Errors;
use crate::config::file;
use crate::config::snapshot::{Cluster, Route, RouteTarget};
use crate::llm::models::{ModelMatch, ModelRewrite};
use crate::metrics::Metrics;
use crate::proxy::balance::RoundRobin;

/// Clusters a route may name in all: split members and fallbacks.
const MAX_TARGETS: usize = 64;

/// `match.models`: `None` when absent.
pub(super) fn model_match(
    key: &str,
    models: Option<&Vec<String>>,
    errors: &mut Errors,
) -> Option<Arc<ModelMatch>> {
    let models = models?;
    if models.is_empty() {
        errors.push(
            key.to_owned(),
            "needs at least one model name (remove it to match any model)",
        );
        return None;
    }
    let mut ok = true;
    for (i, model) in models.iter().enumerate() {
        if let Err(reason) = ModelMatch::new([model.as_str()]) {
            errors.push(format!("{key}[{i}]"), reason);
            ok = false;
        }
    }
    ok.then(|| ModelMatch::new(models.iter().map(String::as_str)).ok())
        .flatten()
        .map(Arc::new)
}

/// `model_rewrite`, on a route or a cluster.
pub(super) fn model_rewrite(
    key: &str,
    m: &file::ModelRewrite,
    errors: &mut Errors,
) -> ModelRewrite {
    for (i, prefix) in m.strip_prefix.iter().enumerate() {
        if prefix.is_empty() {
            errors.push(format!("{key}.strip_prefix[{i}]"), "must not be empty");
        }
    }
    for (from, to) in &m.aliases {
        if from.is_empty() || to.is_empty() {
            errors.push(
                format!("{key}.aliases"),
                "an alias needs a public name and a backend name, neither empty",
            );
        }
    }
    ModelRewrite {
        strip_prefixes: m.strip_prefix.clone(),
        aliases: m.aliases.clone().into_iter().collect(),
    }
}

/// The clusters of a route: its split (or single cluster) first, then its fallbacks.
/// `Some((targets, split_len))` when every one of them compiled.
pub(super) fn targets(
    key: &str,
    r: &file::Route,
    by_name: &HashMap<&str, &Arc<Cluster>>,
    defined: &HashMap<&str, &PathBuf>,
    metrics: &Metrics,
    errors: &mut Errors,
) -> Option<(Vec<RouteTarget>, usize)> {
    let before = errors.list.len();
    // (key of the name, cluster name, weight)
    let mut named: Vec<(String, &str, u32)> = Vec::new();
    match (&r.cluster, r.clusters.is_empty()) {
        (Some(cluster), true) => named.push((format!("{key}.cluster"), cluster.as_str(), 1)),
        (None, false) => {
            for (i, split) in r.clusters.iter().enumerate() {
                if split.weight == 0 {
                    errors.push(format!("{key}.clusters[{i}].weight"), "must be at least 1");
                }
                named.push((
                    format!("{key}.clusters[{i}].name"),
                    &split.name,
                    split.weight,
                ));
            }
        }
        (Some(_), false) => {
            errors.push(
                format!("{key}.clusters"),
                "set either `cluster` or `clusters`, not both",
            );
            return None;
        }
        (None, true) => {
            errors.push(
                key.to_owned(),
                "missing field `cluster`: a route needs `cluster` or `clusters`",
            );
            return None;
        }
    }
    let split_len = named.len();
    for (i, fallback) in r.fallbacks.iter().enumerate() {
        named.push((format!("{key}.fallbacks[{i}]"), fallback.as_str(), 1));
    }
    if named.len() > MAX_TARGETS {
        errors.push(
            format!("{key}.fallbacks"),
            format!("a route names at most {MAX_TARGETS} clusters in all"),
        );
    }
    let mut targets = Vec::new();
    for (i, (name_key, name, weight)) in named.iter().enumerate() {
        if named[..i].iter().any(|(_, other, _)| other == name) {
            errors.push(
                name_key.clone(),
                format!("cluster `{name}` is named twice by route `{}`", r.name),
            );
            continue;
        }
        match by_name.get(name) {
            Some(cluster) => targets.push(RouteTarget {
                cluster: Arc::clone(cluster),
                weight: *weight,
                metrics: metrics.route(&r.name, name),
            }),
            // Defined but broken: its own errors are reported already.
            None if defined.contains_key(name) => {}
            None => errors.push(
                name_key.clone(),
                format!(
                    "route `{}` names cluster `{name}`, which is not defined",
                    r.name
                ),
            ),
        }
    }
    (errors.list.len() == before && targets.len() == named.len()).then_some((targets, split_len))
}

/// The split's weighted order; `None` for a single cluster.
pub(super) fn split(targets: &[RouteTarget], split_len: usize) -> Option<RoundRobin> {
    (split_len > 1).then(|| {
        let weights: Vec<u32> = targets[..split_len].iter().map(|t| t.weight).collect();
        RoundRobin::new(&weights)
    })
}

/// The public model names: every exact name of a `match.models` and every alias, sorted.
pub(super) fn public_names(routes: &[Route], clusters: &[Arc<Cluster>]) -> Vec<String> {
    let mut names = BTreeSet::new();
    for route in routes {
        if let Some(models) = &route.matcher.models {
            names.extend(models.exact().iter().cloned());
        }
        names.extend(route.model_rewrite.aliases.keys().cloned());
    }
    for cluster in clusters {
        names.extend(cluster.model_rewrite.aliases.keys().cloned());
    }
    names.into_iter().collect()
}

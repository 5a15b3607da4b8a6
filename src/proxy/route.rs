//! Route matching: which route serves a request.
//!
//! # Precedence
//!
//! 1. **Host.** An exact host beats a wildcard (`*.example.com`, longest suffix first), which
//!    beats a route with no host. If no route of the most specific host group matches, the next
//!    group is tried, so a catch-all route still serves hosts that have their own routes.
//! 2. **Path**, within a host group: an exact `path`, then `path_regex` routes in config
//!    order, then the longest `path_prefix`. Regexes come before prefixes, as nginx's regex
//!    locations do, so that a catch-all `/` never shadows them.
//! 3. **Method and headers** filter the routes that share a path; among those, the first in
//!    config order wins.
//! 4. **Model.** A route with `match.models` also needs the `model` of the JSON body. The
//!    first lookup ([`ModelQuery::Unknown`]) stops at the first such route that accepts
//!    everything else and answers [`Lookup::NeedsModel`]; the caller then reads the body and
//!    looks up again with the model, so that routes sharing a path can split on it and a
//!    request that needs no model never has its body read.
//!
//! A lookup costs a hash probe per host label and per distinct prefix length, plus one regex
//! per regex route of the group; it allocates nothing.

use std::sync::Arc;

use foldhash::HashMap;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;

use crate::llm::models::ModelMatch;

/// How a route matches the path.
#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

/// The matching part of a route, compiled.
#[derive(Debug, Clone)]
pub struct RouteMatcher {
    /// Lower-case exact hosts and `*.suffix` wildcards; empty means any.
    pub hosts: Vec<String>,
    pub path: PathMatch,
    /// Empty means any method.
    pub methods: Vec<Method>,
    /// Header name and, when set, the exact value required.
    pub headers: Vec<(HeaderName, Option<HeaderValue>)>,
    /// Model names the JSON body's `model` must match; `None` means any, unread.
    pub models: Option<Arc<ModelMatch>>,
}

/// What the lookup knows of the request's model.
#[derive(Debug, Clone, Copy)]
pub enum ModelQuery<'a> {
    /// The body has not been read: a route with a model condition stops the lookup.
    Unknown,
    /// The body has been read: its model, or `None` when it has none (not JSON, no
    /// `model`, or not a string), which no model condition accepts.
    Known(Option<&'a str>),
    /// Any model: every route with a model condition is passed over and counted in
    /// `Search::passed`, so that the lookup ends on the route a request naming no matching
    /// model would take. See [`Router::reachable`].
    Any,
}

/// The answer of [`Router::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Found(Matched),
    /// A route with a model condition is next in precedence: read the body and ask again.
    NeedsModel,
    /// No route takes the request. `wanted_model`: a route would have, given another model
    /// (the client is told about its model, not about the path).
    NotFound {
        wanted_model: bool,
    },
}

/// A found route: its index and how much of the path its prefix covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched {
    pub route: usize,
    /// Bytes of the path matched by an exact or prefix rule; 0 for a regex.
    pub prefix_len: usize,
}

/// The compiled routing table of one snapshot.
#[derive(Debug, Default)]
pub struct Router {
    exact_hosts: HashMap<String, HostGroup>,
    /// Keyed by the suffix after `*`, such as `.example.com`.
    wildcard_hosts: HashMap<String, HostGroup>,
    any_host: HostGroup,
}

#[derive(Debug, Default)]
struct HostGroup {
    exact: HashMap<String, Vec<Candidate>>,
    prefix: HashMap<String, Vec<Candidate>>,
    /// Distinct prefix lengths, longest first.
    prefix_lengths: Vec<usize>,
    regex: Vec<(Regex, Candidate)>,
}

#[derive(Debug, Clone)]
struct Candidate {
    route: usize,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, Option<HeaderValue>)>,
    models: Option<Arc<ModelMatch>>,
}

/// One lookup's model and what it learnt on the way.
struct Search<'a> {
    model: ModelQuery<'a>,
    wanted_model: bool,
    /// With [`ModelQuery::Any`]: the routes with a model condition passed over.
    passed: Vec<usize>,
}

/// A candidate's verdict.
enum Step {
    Take,
    Skip,
    /// Needs the model, which is not known yet.
    Stop,
}

impl Candidate {
    fn step(&self, method: &Method, headers: &HeaderMap, search: &mut Search) -> Step {
        if !self.accepts(method, headers) {
            return Step::Skip;
        }
        let Some(models) = &self.models else {
            return Step::Take;
        };
        match search.model {
            ModelQuery::Unknown => Step::Stop,
            ModelQuery::Known(Some(model)) if models.matches(model) => Step::Take,
            ModelQuery::Known(_) => {
                search.wanted_model = true;
                Step::Skip
            }
            ModelQuery::Any => {
                search.passed.push(self.route);
                Step::Skip
            }
        }
    }

    fn accepts(&self, method: &Method, headers: &HeaderMap) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && self
                .headers
                .iter()
                .all(|(name, want)| match headers.get(name) {
                    None => false,
                    Some(got) => want.as_ref().is_none_or(|want| want == got),
                })
    }
}

impl Router {
    /// Builds the table; `matchers[i]` belongs to route `i`, and earlier routes win ties.
    pub fn new<'a>(matchers: impl IntoIterator<Item = &'a RouteMatcher>) -> Router {
        let mut router = Router::default();
        for (route, m) in matchers.into_iter().enumerate() {
            let candidate = Candidate {
                route,
                methods: m.methods.clone(),
                headers: m.headers.clone(),
                models: m.models.clone(),
            };
            if m.hosts.is_empty() {
                router.any_host.insert(&m.path, candidate);
                continue;
            }
            for host in &m.hosts {
                let group = match host.strip_prefix('*') {
                    Some(suffix) => router.wildcard_hosts.entry(suffix.to_owned()).or_default(),
                    None => router.exact_hosts.entry(host.clone()).or_default(),
                };
                group.insert(&m.path, candidate.clone());
            }
        }
        router
    }

    /// Finds the route for a request, treating routes with a model condition as not
    /// matching. `host` is lower-case and has no port.
    pub fn find(
        &self,
        host: &str,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<Matched> {
        match self.lookup(host, path, method, headers, ModelQuery::Known(None)) {
            Lookup::Found(found) => Some(found),
            Lookup::NeedsModel | Lookup::NotFound { .. } => None,
        }
    }

    /// Finds the route for a request with what is known of its model. `host` is lower-case
    /// and has no port.
    pub fn lookup(
        &self,
        host: &str,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
        model: ModelQuery,
    ) -> Lookup {
        self.search(
            host,
            path,
            method,
            headers,
            &mut Search {
                model,
                wanted_model: false,
                passed: Vec::new(),
            },
        )
    }

    /// Every route a request could end on, whatever model its body names: the routes with a
    /// model condition that accept everything else, then the route that takes it when none
    /// of them does (if any). For checks that must run before the body is read.
    pub fn reachable(
        &self,
        host: &str,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Vec<usize> {
        let mut search = Search {
            model: ModelQuery::Any,
            wanted_model: false,
            passed: Vec::new(),
        };
        if let Lookup::Found(found) = self.search(host, path, method, headers, &mut search) {
            search.passed.push(found.route);
        }
        search.passed
    }

    fn search(
        &self,
        host: &str,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
        search: &mut Search,
    ) -> Lookup {
        let in_group =
            |group: &HostGroup, search: &mut Search| group.find(path, method, headers, search);
        if let Some(group) = self.exact_hosts.get(host) {
            if let Some(found) = in_group(group, search) {
                return found;
            }
        }
        if !self.wildcard_hosts.is_empty() {
            // Suffixes from longest to shortest: ".b.example.com" before ".example.com".
            for (i, _) in host.match_indices('.') {
                if let Some(group) = self.wildcard_hosts.get(&host[i..]) {
                    if let Some(found) = in_group(group, search) {
                        return found;
                    }
                }
            }
        }
        in_group(&self.any_host, search).unwrap_or(Lookup::NotFound {
            wanted_model: search.wanted_model,
        })
    }
}

impl HostGroup {
    fn insert(&mut self, path: &PathMatch, candidate: Candidate) {
        match path {
            PathMatch::Exact(p) => self.exact.entry(p.clone()).or_default().push(candidate),
            PathMatch::Prefix(p) => {
                if !self.prefix_lengths.contains(&p.len()) {
                    self.prefix_lengths.push(p.len());
                    self.prefix_lengths.sort_unstable_by(|a, b| b.cmp(a));
                }
                self.prefix.entry(p.clone()).or_default().push(candidate);
            }
            PathMatch::Regex(r) => self.regex.push((r.clone(), candidate)),
        }
    }

    /// `Some` when the search ends in this group: a route, or a stop for the model.
    fn find(
        &self,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
        search: &mut Search,
    ) -> Option<Lookup> {
        let mut first = |list: &[Candidate], prefix_len| {
            list.iter()
                .find_map(|c| match c.step(method, headers, search) {
                    Step::Take => Some(Lookup::Found(Matched {
                        route: c.route,
                        prefix_len,
                    })),
                    Step::Stop => Some(Lookup::NeedsModel),
                    Step::Skip => None,
                })
        };
        if let Some(found) = self.exact.get(path).and_then(|l| first(l, path.len())) {
            return Some(found);
        }
        for (re, c) in &self.regex {
            if re.is_match(path) {
                if let Some(found) = first(std::slice::from_ref(c), 0) {
                    return Some(found);
                }
            }
        }
        for &len in &self.prefix_lengths {
            let Some(prefix) = path.get(..len) else {
                continue;
            };
            if let Some(found) = self.prefix.get(prefix).and_then(|l| first(l, len)) {
                return Some(found);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;

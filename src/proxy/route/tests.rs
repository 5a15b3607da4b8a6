use std::sync::Arc;

use crate::llm::models::ModelMatch;

use super::*;

fn route(hosts: &[&str], path: PathMatch) -> RouteMatcher {
    RouteMatcher {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        path,
        methods: Vec::new(),
        headers: Vec::new(),
        models: None,
    }
}

fn prefix(p: &str) -> PathMatch {
    PathMatch::Prefix(p.to_owned())
}

fn find(router: &Router, host: &str, path: &str) -> Option<usize> {
    router
        .find(host, path, &Method::GET, &HeaderMap::new())
        .map(|m| m.route)
}

#[test]
fn longest_prefix_wins_over_order() {
    let routes = [route(&[], prefix("/")), route(&[], prefix("/v1/"))];
    let router = Router::new(&routes);
    assert_eq!(find(&router, "any", "/v1/chat"), Some(1));
    assert_eq!(find(&router, "any", "/health"), Some(0));
}

#[test]
fn exact_path_beats_regex_which_beats_prefix() {
    let routes = [
        route(&[], prefix("/")),
        route(&[], prefix("/v1/")),
        route(
            &[],
            PathMatch::Regex(Regex::new("^/v1/(chat/)?completions$").unwrap()),
        ),
        route(&[], PathMatch::Exact("/v1/models".into())),
    ];
    let router = Router::new(&routes);
    assert_eq!(find(&router, "h", "/v1/models"), Some(3));
    assert_eq!(find(&router, "h", "/v1/chat/completions"), Some(2));
    assert_eq!(find(&router, "h", "/v1/embeddings"), Some(1));
    assert_eq!(find(&router, "h", "/v2"), Some(0));
}

#[test]
fn exact_host_beats_wildcard_beats_any() {
    let routes = [
        route(&[], prefix("/")),
        route(&["*.example.com"], prefix("/")),
        route(&["api.example.com"], prefix("/")),
        route(&["*.eu.example.com"], prefix("/")),
    ];
    let router = Router::new(&routes);
    assert_eq!(find(&router, "api.example.com", "/"), Some(2));
    assert_eq!(find(&router, "web.example.com", "/"), Some(1));
    assert_eq!(find(&router, "a.eu.example.com", "/"), Some(3));
    assert_eq!(find(&router, "example.com", "/"), Some(0));
    assert_eq!(find(&router, "other.org", "/"), Some(0));
}

#[test]
fn a_host_group_without_a_match_falls_through() {
    let routes = [
        route(&["api.example.com"], prefix("/admin")),
        route(&[], prefix("/")),
    ];
    let router = Router::new(&routes);
    assert_eq!(find(&router, "api.example.com", "/admin/x"), Some(0));
    assert_eq!(find(&router, "api.example.com", "/v1"), Some(1));
}

#[test]
fn method_and_headers_filter_and_order_breaks_ties() {
    let mut post = route(&[], prefix("/v1/"));
    post.methods = vec![Method::POST];
    let mut canary = route(&[], prefix("/v1/"));
    canary.headers = vec![(
        HeaderName::from_static("x-canary"),
        Some(HeaderValue::from_static("1")),
    )];
    let mut debug = route(&[], prefix("/v1/"));
    debug.headers = vec![(HeaderName::from_static("x-debug"), None)];
    let fallback = route(&[], prefix("/v1/"));
    let router = Router::new(&[post, canary, debug, fallback]);

    let at = |method: Method, headers: &[(&'static str, &'static str)]| {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, HeaderValue::from_static(v));
        }
        router.find("h", "/v1/x", &method, &map).map(|m| m.route)
    };
    assert_eq!(at(Method::POST, &[]), Some(0));
    assert_eq!(at(Method::GET, &[("x-canary", "1")]), Some(1));
    assert_eq!(at(Method::GET, &[("x-canary", "2")]), Some(3));
    assert_eq!(at(Method::GET, &[("x-debug", "anything")]), Some(2));
    assert_eq!(at(Method::GET, &[]), Some(3));
}

#[test]
fn prefix_length_is_reported_for_rewrites() {
    let routes = [route(&[], prefix("/api"))];
    let router = Router::new(&routes);
    let m = router
        .find("h", "/api/v1", &Method::GET, &HeaderMap::new())
        .unwrap();
    assert_eq!(m.prefix_len, 4);
}

#[test]
fn multibyte_paths_do_not_panic() {
    let routes = [route(&[], prefix("/ab"))];
    let router = Router::new(&routes);
    assert_eq!(find(&router, "h", "/é"), None);
}

fn with_models(path: PathMatch, models: &[&str]) -> RouteMatcher {
    RouteMatcher {
        models: Some(Arc::new(ModelMatch::new(models.iter().copied()).unwrap())),
        ..route(&[], path)
    }
}

fn lookup(router: &Router, path: &str, model: ModelQuery) -> Lookup {
    router.lookup("h", path, &Method::POST, &HeaderMap::new(), model)
}

fn found(route: usize, prefix_len: usize) -> Lookup {
    Lookup::Found(Matched { route, prefix_len })
}

#[test]
fn model_conditions_split_routes_that_share_a_path() {
    let chat = "/v1/chat/completions";
    let routes = [
        route(&[], PathMatch::Exact("/v1/models".into())),
        with_models(PathMatch::Exact(chat.into()), &["gpt-4o", "gpt-4o-*"]),
        with_models(PathMatch::Exact(chat.into()), &["llama-*"]),
        with_models(prefix("/v1/"), &["*-embed"]),
        route(&[], prefix("/v1/")),
    ];
    let router = Router::new(&routes);
    let len = chat.len();
    // Without the model, the lookup stops at the first model route in precedence.
    assert_eq!(
        lookup(&router, chat, ModelQuery::Unknown),
        Lookup::NeedsModel
    );
    // A route that comes before every model route needs no body.
    assert_eq!(
        lookup(&router, "/v1/models", ModelQuery::Unknown),
        found(0, 10)
    );
    let known = |m| lookup(&router, chat, ModelQuery::Known(Some(m)));
    assert_eq!(known("gpt-4o"), found(1, len));
    assert_eq!(known("gpt-4o-mini"), found(1, len));
    assert_eq!(known("llama-3-70b"), found(2, len));
    // The exact path's routes refuse it: the prefix routes come next.
    assert_eq!(known("bge-embed"), found(3, 4));
    assert_eq!(known("mistral"), found(4, 4));
    // No model: model routes are skipped; a route without a condition still takes it.
    assert_eq!(lookup(&router, chat, ModelQuery::Known(None)), found(4, 4));
    // `find` treats model routes as not matching.
    assert_eq!(
        router.find("h", chat, &Method::POST, &HeaderMap::new()),
        Some(Matched {
            route: 4,
            prefix_len: 4
        })
    );
}

#[test]
fn a_missing_model_is_reported_when_only_model_routes_would_match() {
    let routes = [with_models(prefix("/v1/"), &["gpt-4o"])];
    let router = Router::new(&routes);
    assert_eq!(
        lookup(&router, "/v1/chat/completions", ModelQuery::Known(None)),
        Lookup::NotFound { wanted_model: true }
    );
    assert_eq!(
        lookup(&router, "/v1/x", ModelQuery::Known(Some("other"))),
        Lookup::NotFound { wanted_model: true }
    );
    assert_eq!(
        lookup(&router, "/v2/x", ModelQuery::Unknown),
        Lookup::NotFound {
            wanted_model: false
        }
    );
}

#[test]
fn reachable_lists_every_route_a_model_could_pick() {
    let chat = "/v1/chat/completions";
    let routes = [
        with_models(PathMatch::Exact(chat.into()), &["gpt-4o"]),
        with_models(PathMatch::Exact(chat.into()), &["llama-*"]),
        with_models(prefix("/v1/"), &["*-embed"]),
        route(&[], prefix("/v1/")),
        route(&[], prefix("/")),
        with_models(prefix("/only/"), &["a"]),
    ];
    let router = Router::new(&routes);
    let reachable = |path| router.reachable("h", path, &Method::POST, &HeaderMap::new());
    // The lookup ends on the first route without a condition; routes after it are never
    // reached.
    assert_eq!(reachable(chat), [0, 1, 2, 3]);
    assert_eq!(reachable("/v2"), [4]);
    // Past the model route of a longer prefix, a shorter prefix takes any other model.
    assert_eq!(reachable("/only/x"), [5, 4]);
    assert_eq!(reachable("/v1/models"), [2, 3]);
}

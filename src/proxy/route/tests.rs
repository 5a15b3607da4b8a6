use super::*;

fn route(hosts: &[&str], path: PathMatch) -> RouteMatcher {
    RouteMatcher {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        path,
        methods: Vec::new(),
        headers: Vec::new(),
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

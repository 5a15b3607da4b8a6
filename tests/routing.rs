//! Routing and forwarding through a real gateway to real upstreams.

mod common;

use bytes::Bytes;
use common::{get, send, Gateway, Upstream};
use http::Request;
use http_body_util::Full;

/// One echo upstream per name, and a gateway whose clusters are named after them.
async fn gateway_with(names: &[&str], routes: &str) -> (Gateway, Vec<Upstream>) {
    let mut upstreams = Vec::new();
    let mut toml = String::new();
    for name in names {
        let upstream = Upstream::echo(name).await;
        toml.push_str(&format!(
            "[[clusters]]\nname = \"{name}\"\nbackends = [{{ url = \"{}\" }}]\n",
            upstream.url()
        ));
        upstreams.push(upstream);
    }
    toml.push_str(routes);
    (Gateway::start(&toml).await, upstreams)
}

async fn upstream_for(gw: &Gateway, method: &str, host: &str, path: &str) -> String {
    upstream_with(gw, method, host, path, &[]).await
}

async fn upstream_with(
    gw: &Gateway,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut req = Request::builder()
        .method(method)
        .uri(gw.url(path))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let answer = send(req.body(Full::<Bytes>::default()).unwrap()).await;
    if answer.status == 404 {
        answer.assert_error(404, "route_not_found");
        return "404".to_owned();
    }
    answer.header("x-upstream").to_owned()
}

#[tokio::test]
async fn routing_matrix() {
    let routes = r#"
        [[routes]]
        name = "catch-all"
        cluster = "default"

        [[routes]]
        name = "api-exact-host"
        cluster = "api"
        match = { hosts = ["api.example.com"], path_prefix = "/v1/" }

        [[routes]]
        name = "wildcard"
        cluster = "tenant"
        match = { hosts = ["*.example.com"], path_prefix = "/v1/" }

        [[routes]]
        name = "models-exact"
        cluster = "models"
        match = { path = "/v1/models" }

        [[routes]]
        name = "long-prefix"
        cluster = "chat"
        match = { path_prefix = "/v1/chat/" }

        [[routes]]
        name = "regex"
        cluster = "regex"
        match = { path_regex = "^/v[0-9]+/embeddings$" }

        [[routes]]
        name = "post-only"
        cluster = "writer"
        match = { path_prefix = "/jobs", methods = ["POST"] }

        [[routes]]
        name = "canary"
        cluster = "canary"
        match = { path_prefix = "/v1/", headers = [{ name = "x-canary", value = "1" }] }

        [[routes]]
        name = "debug"
        cluster = "debug"
        match = { path_prefix = "/v1/", headers = [{ name = "x-debug" }] }

        [[routes]]
        name = "v1"
        cluster = "v1"
        match = { path_prefix = "/v1/" }

        [[routes]]
        name = "strict"
        cluster = "api"
        match = { hosts = ["strict.internal"], path = "/only" }
    "#;
    let names = [
        "default", "api", "tenant", "models", "chat", "regex", "writer", "canary", "debug", "v1",
    ];
    let (gw, _upstreams) = gateway_with(&names, routes).await;

    // Host: exact beats wildcard beats any; the port and case of Host do not matter.
    assert_eq!(
        upstream_for(&gw, "GET", "api.example.com", "/v1/x").await,
        "api"
    );
    assert_eq!(
        upstream_for(&gw, "GET", "API.Example.COM:8080", "/v1/x").await,
        "api"
    );
    assert_eq!(
        upstream_for(&gw, "GET", "eu.example.com", "/v1/x").await,
        "tenant"
    );
    assert_eq!(
        upstream_for(&gw, "GET", "a.b.example.com", "/v1/x").await,
        "tenant"
    );
    assert_eq!(upstream_for(&gw, "GET", "example.com", "/v1/x").await, "v1");
    // A host group with no matching route falls through to host-less routes.
    assert_eq!(
        upstream_for(&gw, "GET", "api.example.com", "/other").await,
        "default"
    );

    // Path: exact beats regex, which beats the longest prefix, which beats a shorter one.
    assert_eq!(upstream_for(&gw, "GET", "h", "/v1/models").await, "models");
    assert_eq!(upstream_for(&gw, "GET", "h", "/v1/models/x").await, "v1");
    assert_eq!(
        upstream_for(&gw, "GET", "h", "/v1/chat/completions").await,
        "chat"
    );
    assert_eq!(
        upstream_for(&gw, "GET", "h", "/v2/embeddings").await,
        "regex"
    );
    assert_eq!(
        upstream_for(&gw, "GET", "h", "/v1/embeddings").await,
        "regex"
    );
    assert_eq!(
        upstream_for(&gw, "GET", "h", "/v1/embeddings/x").await,
        "v1"
    );
    assert_eq!(upstream_for(&gw, "GET", "h", "/").await, "default");

    // Method.
    assert_eq!(upstream_for(&gw, "POST", "h", "/jobs/1").await, "writer");
    assert_eq!(upstream_for(&gw, "GET", "h", "/jobs/1").await, "default");

    // Headers: value match, presence match, then config order among equals.
    let canary = [("x-canary", "1")];
    assert_eq!(
        upstream_with(&gw, "GET", "h", "/v1/x", &canary).await,
        "canary"
    );
    let other = [("x-canary", "0")];
    assert_eq!(upstream_with(&gw, "GET", "h", "/v1/x", &other).await, "v1");
    let debug = [("x-debug", "yes")];
    assert_eq!(
        upstream_with(&gw, "GET", "h", "/v1/x", &debug).await,
        "debug"
    );
    let both = [("x-debug", "yes"), ("x-canary", "1")];
    assert_eq!(
        upstream_with(&gw, "GET", "h", "/v1/x", &both).await,
        "canary"
    );
    gw.stop().await;
}

#[tokio::test]
async fn no_route_is_a_404_json_error() {
    let (gw, _u) = gateway_with(
        &["a"],
        r#"
        [[routes]]
        name = "only"
        cluster = "a"
        match = { hosts = ["strict.internal"], path = "/only" }
        "#,
    )
    .await;
    assert_eq!(
        upstream_for(&gw, "GET", "strict.internal", "/only").await,
        "a"
    );
    let answer = get(&gw.url("/only")).await;
    answer.assert_error(404, "route_not_found");
    assert!(!answer.header("x-request-id").is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn weighted_round_robin_follows_the_weights() {
    let upstreams = [
        Upstream::echo("heavy").await,
        Upstream::echo("light").await,
        Upstream::echo("lighter").await,
    ];
    let gw = Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "pool"
        backends = [
          {{ url = "{}", weight = 5 }},
          {{ url = "{}", weight = 2 }},
          {{ url = "{}", weight = 1 }},
        ]
        [[routes]]
        name = "all"
        cluster = "pool"
        "#,
        upstreams[0].url(),
        upstreams[1].url(),
        upstreams[2].url()
    ))
    .await;
    // 100 whole cycles of the 8-slot schedule: the shares are exact.
    for _ in 0..800 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    let counts: Vec<usize> = upstreams.iter().map(|u| u.seen().len()).collect();
    assert_eq!(counts, vec![500, 200, 100]);
    gw.stop().await;
}

#[tokio::test]
async fn prefix_rewrite_header_edits_and_host_policy() {
    let (gw, upstreams) = gateway_with(
        &["a"],
        r#"
        [[routes]]
        name = "strip"
        cluster = "a"
        rewrite_prefix = ""
        match = { path_prefix = "/api" }
        request_headers = { set = { "x-gateway" = "sluice" }, remove = ["cookie"] }
        response_headers = { set = { "x-served-by" = "sluice" }, remove = ["x-upstream"] }

        [[routes]]
        name = "rewrite"
        cluster = "a"
        rewrite_prefix = "/v1/"
        host_rewrite = "models.internal"
        match = { path_prefix = "/openai/" }

        [[routes]]
        name = "slash"
        cluster = "a"
        rewrite_prefix = "/"
        match = { path_prefix = "/svc" }

        [[routes]]
        name = "preserve"
        cluster = "a"
        preserve_host = true
        match = { path_prefix = "/keep" }
        "#,
    )
    .await;
    let upstream = &upstreams[0];
    let req = |path: &str| {
        Request::get(gw.url(path))
            .header("host", "public.example.com")
            .header("cookie", "secret=1")
            .body(Full::<Bytes>::default())
            .unwrap()
    };

    let answer = send(req("/api/v1/chat?x=1")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-served-by"), "sluice");
    assert_eq!(answer.header("x-upstream"), "");
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.uri, "/v1/chat?x=1");
    assert_eq!(seen.headers["x-gateway"], "sluice");
    assert!(seen.headers.get("cookie").is_none());
    assert_eq!(seen.headers["host"], upstream.addr.to_string().as_str());

    send(req("/api")).await;
    assert_eq!(upstream.seen().pop().unwrap().uri, "/");

    send(req("/openai/chat/completions")).await;
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.uri, "/v1/chat/completions");
    assert_eq!(seen.headers["host"], "models.internal");

    send(req("/svc/v1/models")).await;
    assert_eq!(upstream.seen().pop().unwrap().uri, "/v1/models");

    send(req("/keep/x")).await;
    assert_eq!(
        upstream.seen().pop().unwrap().headers["host"],
        "public.example.com"
    );
    gw.stop().await;
}

#[tokio::test]
async fn bodies_pass_through_unchanged() {
    let (gw, upstreams) =
        gateway_with(&["a"], "[[routes]]\nname = \"all\"\ncluster = \"a\"\n").await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let answer = send(
        Request::post(gw.url("/upload"))
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(upstreams[0].seen()[0].body.as_ref(), body.as_slice());
    gw.stop().await;
}

//! HTTP/2 with prior knowledge (h2c), from clients and to upstreams.

mod common;

use bytes::Bytes;
use common::{Gateway, Upstream};
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

async fn h2c_get(url: &str) -> (Version, String, String) {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let response = client
        .request(Request::get(url).body(Full::default()).unwrap())
        .await
        .expect("h2c request failed");
    let version = response.version();
    let upstream = response
        .headers()
        .get("x-upstream")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        version,
        upstream,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn h2c_clients_are_served_and_h2c_upstreams_are_reached() {
    let h1 = Upstream::echo("h1").await;
    let h2 = Upstream::echo("h2").await;
    let gw = Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "h1"
        backends = [{{ url = "{}" }}]
        [[clusters]]
        name = "h2"
        protocol = "h2c"
        backends = [{{ url = "{}" }}]
        [[routes]]
        name = "h2-rewrite"
        cluster = "h2"
        host_rewrite = "models.internal"
        match = {{ path_prefix = "/h2r/" }}
        [[routes]]
        name = "h2"
        cluster = "h2"
        match = {{ path_prefix = "/h2/", hosts = ["models.example.com"] }}
        [[routes]]
        name = "h1"
        cluster = "h1"
        "#,
        h1.url(),
        h2.url()
    ))
    .await;

    // An HTTP/2 client reaching an HTTP/1.1 upstream.
    let (version, upstream, _) = h2c_get(&gw.url("/a")).await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(upstream, "h1");
    assert_eq!(h1.seen().pop().unwrap().version, Version::HTTP_11);

    // The :authority of an HTTP/2 request routes like Host does, and h2c reaches the upstream.
    let url = format!("http://models.example.com:{}/h2/x", gw.http.port());
    let stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(Request::get(url).body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream"], "h2");
    let seen = h2.seen().pop().unwrap();
    assert_eq!(seen.version, Version::HTTP_2);
    assert_eq!(seen.uri, format!("http://{}/h2/x", h2.addr));

    // With host_rewrite, `:authority` carries the rewritten host.
    h2c_get(&gw.url("/h2r/y")).await;
    assert_eq!(h2.seen().pop().unwrap().uri, "http://models.internal/h2r/y");
    gw.stop().await;
}

#[tokio::test]
async fn http2_can_be_turned_off() {
    let upstream = Upstream::echo("a").await;
    let gw = Gateway::start(&format!(
        "[server]\nhttp2 = false\n[[clusters]]\nname = \"a\"\nbackends = [{{ url = \"{}\" }}]\n\
         [[routes]]\nname = \"all\"\ncluster = \"a\"\n",
        upstream.url()
    ))
    .await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let result = client
        .request(Request::get(gw.url("/")).body(Full::default()).unwrap())
        .await;
    assert!(
        result.is_err(),
        "an h2c request was served with http2 = false"
    );
    assert!(upstream.seen().is_empty());
    gw.stop().await;
}

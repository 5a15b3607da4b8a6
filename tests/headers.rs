//! Header handling through the gateway: hop-by-hop fields, X-Forwarded-*, request ids.

mod common;

use common::{raw, Gateway, Upstream};
use http::Response;
use http_body_util::Full;

async fn gateway(upstream: &Upstream, trusted: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
        [server]
        trusted_proxies = [{trusted}]
        [[clusters]]
        name = "a"
        backends = [{{ url = "{}" }}]
        [[routes]]
        name = "all"
        cluster = "a"
        "#,
        upstream.url()
    ))
    .await
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    // The upstream answers with hop-by-hop fields of its own.
    let upstream = Upstream::start(|_| async {
        Response::builder()
            .header("connection", "x-upstream-private")
            .header("x-upstream-private", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "keep-alive")
            .header("upgrade", "h2c")
            .header("x-kept", "yes")
            .body(Full::default())
            .unwrap()
    })
    .await;
    let gw = gateway(&upstream, "").await;
    let answer = raw(
        gw.http,
        b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close, x-private\r\nX-Private: secret\r\n\
          Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
          Upgrade: websocket\r\nX-Kept: yes\r\n\r\n",
    )
    .await
    .to_ascii_lowercase();

    let seen = upstream.seen().pop().unwrap();
    for name in [
        "x-private",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "transfer-encoding",
    ] {
        assert!(
            seen.headers.get(name).is_none(),
            "{name} reached the upstream"
        );
    }
    assert_eq!(seen.headers["x-kept"], "yes");

    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    for field in [
        "x-upstream-private",
        "keep-alive:",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            !answer.contains(field),
            "{field} reached the client: {answer}"
        );
    }
    assert!(answer.contains("x-kept: yes"));
    gw.stop().await;
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_client_are_replaced() {
    let upstream = Upstream::echo("a").await;
    let gw = gateway(&upstream, "").await;
    raw(
        gw.http,
        b"GET / HTTP/1.1\r\nHost: public.example.com\r\nX-Forwarded-For: 6.6.6.6\r\n\
          X-Forwarded-Proto: https\r\nX-Forwarded-Host: spoofed\r\nConnection: close\r\n\r\n",
    )
    .await;
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "public.example.com");
    gw.stop().await;
}

#[tokio::test]
async fn forwarded_headers_from_a_trusted_proxy_are_kept_and_appended() {
    let upstream = Upstream::echo("a").await;
    let gw = gateway(&upstream, "\"127.0.0.0/8\"").await;
    raw(
        gw.http,
        b"GET / HTTP/1.1\r\nHost: internal\r\nX-Forwarded-For: 203.0.113.7\r\n\
          X-Forwarded-Proto: https\r\nX-Forwarded-Host: public.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-host"], "public.example.com");
    gw.stop().await;
}

#[tokio::test]
async fn request_id_is_generated_or_kept_and_returned() {
    let upstream = Upstream::echo("a").await;
    let gw = gateway(&upstream, "").await;

    let answer = raw(
        gw.http,
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    let seen = upstream.seen().pop().unwrap();
    let generated = seen.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 32);
    assert!(
        answer.contains(&format!("x-request-id: {generated}")),
        "{answer}"
    );

    let answer = raw(
        gw.http,
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: client-chosen-1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        upstream.seen().pop().unwrap().headers["x-request-id"],
        "client-chosen-1"
    );
    assert!(answer.contains("x-request-id: client-chosen-1"), "{answer}");
    gw.stop().await;
}

//! TLS to upstreams: `https://` backends with a private CA, an SNI override, a client
//! certificate, HTTP/2 by ALPN, and the clear 502 when a certificate does not verify. The
//! upstreams are real TLS servers on 127.0.0.1 with certificates made by the test.

mod common;

use common::pki::{self, Ca};
use common::{get, Gateway, Upstream};
use http::Version;

const CONNECTS: &str = r#"sluice_upstream_connects_total{cluster="c"}"#;
const CONNECT_ERRORS: &str = r#"sluice_upstream_connect_errors_total{cluster="c"}"#;

/// One cluster `c` with `cluster_keys` and a backend at `url`, a route taking everything, and
/// `files` written beside the config.
async fn gateway(url: &str, cluster_keys: &str, files: &[(&str, String)]) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    Gateway::start_in(
        dir,
        &format!(
            "[[clusters]]\nname = \"c\"\nbackends = [{{ url = \"{url}\" }}]\n{cluster_keys}\n\
             [[routes]]\nname = \"all\"\ncluster = \"c\"\n"
        ),
    )
    .await
}

#[tokio::test]
async fn an_upstream_with_a_private_ca_is_reached_over_http1_and_http2() {
    let ca = Ca::new("private CA");
    let identity = ca.server(&["127.0.0.1"]);
    let both = pki::server_config(&identity, &[b"h2", b"http/1.1"], None);
    let upstream = Upstream::echo_tls("private", both).await;
    let files = [("ca.pem", ca.pem())];

    // `http1` (the default) offers only http/1.1 and keeps its connection in the pool.
    let gw = gateway(&upstream.https_url(), "tls = { ca = \"ca.pem\" }", &files).await;
    for _ in 0..2 {
        let answer = get(&gw.url("/v1/models")).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.header("x-upstream"), "private");
    }
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.uri, "/v1/models");
    assert_eq!(seen.headers["host"], upstream.addr.to_string());
    assert_eq!(gw.metric(CONNECTS).await, 1.0);
    gw.stop().await;

    // `auto`: the backend's ALPN picks h2; `http2` asks for it outright.
    for protocol in ["auto", "http2"] {
        let keys = format!("protocol = \"{protocol}\"\ntls = {{ ca = \"ca.pem\" }}");
        let gw = gateway(&upstream.https_url(), &keys, &files).await;
        for _ in 0..2 {
            let answer = get(&gw.url("/v1/models?x=1")).await;
            assert_eq!(answer.status, 200, "{protocol}: {}", answer.text());
        }
        let seen = upstream.seen().pop().unwrap();
        assert_eq!(seen.version, Version::HTTP_2, "{protocol}");
        assert_eq!(seen.uri, format!("https://{}/v1/models?x=1", upstream.addr));
        // Both requests shared one HTTP/2 connection.
        assert_eq!(gw.metric(CONNECTS).await, 1.0, "{protocol}");
        gw.stop().await;
    }
}

#[tokio::test]
async fn auto_falls_back_to_http1_when_the_upstream_offers_only_http1() {
    let ca = Ca::new("private CA");
    let identity = ca.server(&["127.0.0.1"]);
    let h1_only = pki::server_config(&identity, &[b"http/1.1"], None);
    let upstream = Upstream::echo_tls("h1", h1_only).await;
    let keys = "protocol = \"auto\"\ntls = { ca = \"ca.pem\" }";
    let gw = gateway(&upstream.https_url(), keys, &[("ca.pem", ca.pem())]).await;
    for _ in 0..3 {
        let answer = get(&gw.url("/v1/models")).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.uri, "/v1/models");
    // The first connection went to the HTTP/1.1 pool and was reused.
    assert_eq!(gw.metric(CONNECTS).await, 1.0);
    gw.stop().await;
}

#[tokio::test]
async fn server_name_overrides_the_name_sent_and_verified() {
    let ca = Ca::new("private CA");
    let identity = ca.server(&["models.internal"]);
    let upstream =
        Upstream::echo_tls("named", pki::server_config(&identity, &[b"http/1.1"], None)).await;
    let files = [("ca.pem", ca.pem())];

    let keys = "tls = { ca = \"ca.pem\", server_name = \"models.internal\" }";
    let gw = gateway(&upstream.https_url(), keys, &files).await;
    let answer = get(&gw.url("/")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    gw.stop().await;

    // Without it, the certificate does not name 127.0.0.1.
    let gw = gateway(&upstream.https_url(), "tls = { ca = \"ca.pem\" }", &files).await;
    let answer = get(&gw.url("/")).await;
    answer.assert_error(502, "upstream_tls_error");
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("not valid for name"), "{message}");
    gw.stop().await;
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_upstreams_that_ask() {
    let ca = Ca::new("private CA");
    let clients = Ca::new("upstream's client CA");
    let identity = ca.server(&["127.0.0.1"]);
    let config = pki::server_config(&identity, &[b"http/1.1"], Some(clients.roots()));
    let upstream = Upstream::echo_tls("mtls", config).await;
    let sluice_id = clients.client("sluice");
    let files = [
        ("ca.pem", ca.pem()),
        ("client.pem", sluice_id.cert_pem.clone()),
        ("client.key", sluice_id.key_pem.clone()),
    ];
    let keys = "[clusters.tls]\nca = \"ca.pem\"\nclient_cert = \"client.pem\"\n\
                client_key = \"client.key\"";
    let gw = gateway(&upstream.https_url(), keys, &files).await;
    let answer = get(&gw.url("/")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let expiry = gw
        .metric(r#"sluice_tls_cert_expiry_seconds{cert="cluster/c"}"#)
        .await;
    assert!(expiry > 86_400.0, "{expiry}");
    gw.stop().await;

    // Without one the upstream refuses the connection (with TLS 1.3 the refusal arrives
    // after the handshake, as the request is sent), and nothing reaches it.
    let gw = gateway(&upstream.https_url(), "tls = { ca = \"ca.pem\" }", &files).await;
    let answer = get(&gw.url("/")).await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(upstream.seen().len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_whose_certificate_does_not_verify_gets_a_clear_502() {
    let ca = Ca::new("private CA");
    let identity = ca.server(&["127.0.0.1"]);
    let upstream = Upstream::echo_tls(
        "private",
        pki::server_config(&identity, &[b"http/1.1"], None),
    )
    .await;

    // Mozilla's roots do not know the private CA.
    let gw = gateway(&upstream.https_url(), "", &[]).await;
    let answer = get(&gw.url("/v1/models")).await;
    answer.assert_error(502, "upstream_tls_error");
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with("TLS handshake with the upstream failed: 127.0.0.1: ")
            && message.contains("invalid peer certificate: UnknownIssuer"),
        "{message}"
    );
    assert!(!answer.header("x-request-id").is_empty());
    assert_eq!(gw.metric(CONNECT_ERRORS).await, 1.0);
    assert!(upstream.seen().is_empty());
    gw.stop().await;

    // Only the loudly named option lets it through.
    let keys = "tls = { insecure_skip_verify = true }";
    let gw = gateway(&upstream.https_url(), keys, &[]).await;
    let answer = get(&gw.url("/v1/models")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    gw.stop().await;
}

#[tokio::test]
async fn a_plain_http_server_behind_an_https_url_is_a_tls_error() {
    let plain = Upstream::echo("plain").await;
    let url = format!("https://{}", plain.addr);
    let gw = gateway(&url, "", &[]).await;
    let answer = get(&gw.url("/")).await;
    answer.assert_error(502, "upstream_tls_error");
    gw.stop().await;
}

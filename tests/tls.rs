//! The HTTPS listener: certificates by SNI, ALPN, client certificates, bad clients. Every
//! certificate is made by the test (rcgen); every connection is a real TLS connection to the
//! gateway on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::pki::{self, Ca, Issued, Key};
use common::{Answer, Gateway, Upstream};
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

/// Generous guard against hangs; no assertion depends on it.
const HANG_GUARD: Duration = Duration::from_secs(10);

/// What one HTTPS exchange saw.
#[derive(Debug)]
struct Exchange {
    /// DNS names of the certificate the gateway served.
    names: Vec<String>,
    alpn: Option<Vec<u8>>,
    resumed: bool,
    suite: Option<rustls::CipherSuite>,
    version: Version,
    answer: Answer,
}

/// Connects to `addr` with `config` as `name` (SNI unless `config.enable_sni` is off), and
/// sends `GET path` with `headers`, over HTTP/2 if ALPN agreed to it.
async fn exchange(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Exchange, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(config)
        .connect(pki::server_name(name), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, conn) = tls.get_ref();
    let names = pki::dns_names(&conn.peer_certificates().unwrap()[0]);
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
    let io = TokioIo::new(tls);
    let mut request = Request::get(path).header("host", name);
    if alpn.as_deref() == Some(b"h2") {
        request = Request::get(format!("https://{name}{path}"));
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Full::<Bytes>::default()).unwrap();
    let response = if alpn.as_deref() == Some(b"h2") {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        sender.send_request(request).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(conn);
        sender.send_request(request).await
    }
    .map_err(|e| format!("request: {}", chain(&e)))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Exchange {
        names,
        alpn,
        resumed,
        suite,
        version: parts.version,
        answer: Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        },
    })
}

/// An error and its causes, in one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A gateway whose config is `toml` after the certificates in `files` are written beside it.
async fn gateway(files: &[(&str, &Issued)], extra: &[(&str, String)], toml: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    for (name, issued) in files {
        issued.write(dir.path(), name);
    }
    for (name, text) in extra {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let gw = Gateway::start_in(dir, toml).await;
    assert!(gw.https.is_some(), "no HTTPS listener");
    gw
}

/// One cluster `c` to `upstream` and a route taking everything.
fn routes(upstream: &Upstream) -> String {
    format!(
        "[[clusters]]\nname = \"c\"\nbackends = [{{ url = \"{}\" }}]\n\
         [[routes]]\nname = \"all\"\ncluster = \"c\"\n",
        upstream.url()
    )
}

fn certificate(name: &str, file: &str, default: bool) -> String {
    format!(
        "[[certificates]]\nname = \"{name}\"\ncert = \"{file}.pem\"\nkey = \"{file}.key\"\n\
         default = {default}\n"
    )
}

#[tokio::test]
async fn sni_picks_the_exact_then_the_wildcard_certificate_else_the_default() {
    let ca = Ca::new("test CA");
    let upstream = Upstream::echo("u").await;
    let api = ca.server(&["api.example.com"]);
    let wild = ca.server(&["*.example.com"]);
    let fallback = ca.server(&["default.test"]);
    let gw = gateway(
        &[("api", &api), ("wild", &wild), ("fallback", &fallback)],
        &[],
        &format!(
            "{}{}{}{}",
            certificate("wild", "wild", false),
            certificate("api", "api", false),
            certificate("fallback", "fallback", true),
            routes(&upstream)
        ),
    )
    .await;
    let https = gw.https.unwrap();
    let config = pki::client_config(ca.roots(), &[b"http/1.1"], None);

    // An exact name beats the wildcard that also covers it, even listed after it.
    let x = exchange(https, config.clone(), "api.example.com", "/v1/models", &[])
        .await
        .unwrap();
    assert_eq!(x.names, ["api.example.com"]);
    assert_eq!(x.answer.status, 200);
    assert_eq!(x.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["host"], upstream.addr.to_string());
    assert!(!seen.headers.contains_key("x-sluice-client-subject"));

    let x = exchange(https, config.clone(), "chat.example.com", "/", &[])
        .await
        .unwrap();
    assert_eq!(x.names, ["*.example.com"]);

    // No SNI at all: the default certificate (checked as `default.test`).
    let mut no_sni = (*config).clone();
    no_sni.enable_sni = false;
    let x = exchange(https, Arc::new(no_sni), "default.test", "/", &[])
        .await
        .unwrap();
    assert_eq!(x.names, ["default.test"]);
    assert_eq!(x.answer.status, 200);

    // A name no certificate has gets the default too; the client then refuses it.
    let err = exchange(https, config.clone(), "other.org", "/", &[])
        .await
        .unwrap_err();
    assert!(err.contains("not valid for name \"other.org\""), "{err}");

    let ok = r#"sluice_tls_handshakes_total{alpn="http/1.1",result="ok",version="1.3"}"#;
    assert_eq!(gw.metric(ok).await, 3.0);
    for cert in ["api", "wild", "fallback"] {
        let expiry = gw
            .metric(&format!(
                r#"sluice_tls_cert_expiry_seconds{{cert="{cert}"}}"#
            ))
            .await;
        assert!(expiry > 86_400.0, "{cert}: {expiry}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn the_first_certificate_is_the_default_and_rsa_keys_are_served() {
    let ca = Ca::new("test CA");
    let upstream = Upstream::echo("u").await;
    let rsa = ca.server_with(&["rsa.test"], Key::Rsa);
    let ecdsa = ca.server(&["ecdsa.test"]);
    let gw = gateway(
        &[("rsa", &rsa), ("ecdsa", &ecdsa)],
        &[],
        &format!(
            "{}{}{}",
            certificate("rsa", "rsa", false),
            certificate("ecdsa", "ecdsa", false),
            routes(&upstream)
        ),
    )
    .await;
    let https = gw.https.unwrap();
    let config = pki::client_config(ca.roots(), &[], None);
    let x = exchange(https, config.clone(), "rsa.test", "/", &[])
        .await
        .unwrap();
    assert_eq!(
        (x.names, x.answer.status.as_u16()),
        (vec!["rsa.test".into()], 200)
    );
    let x = exchange(https, config.clone(), "ecdsa.test", "/", &[])
        .await
        .unwrap();
    assert_eq!(x.names, ["ecdsa.test"]);
    // No ALPN offered: HTTP/1.1.
    assert_eq!((x.alpn, x.version), (None, Version::HTTP_11));
    let mut no_sni = (*config).clone();
    no_sni.enable_sni = false;
    let x = exchange(https, Arc::new(no_sni), "rsa.test", "/", &[])
        .await
        .unwrap();
    assert_eq!(x.names, ["rsa.test"]);
    gw.stop().await;
}

#[tokio::test]
async fn http2_is_served_over_tls_when_alpn_picks_it() {
    let ca = Ca::new("test CA");
    let upstream = Upstream::echo("u").await;
    let api = ca.server(&["api.example.com"]);
    // `server.http2 = false` turns off h2c on the plain port only; over TLS ALPN decides.
    let gw = gateway(
        &[("api", &api)],
        &[],
        &format!(
            "[server]\nhttp2 = false\n{}{}",
            certificate("api", "api", false),
            routes(&upstream)
        ),
    )
    .await;
    let https = gw.https.unwrap();
    let config = pki::client_config(ca.roots(), &[b"h2", b"http/1.1"], None);
    let x = exchange(https, config, "api.example.com", "/v1/models", &[])
        .await
        .unwrap();
    assert_eq!(x.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(x.version, Version::HTTP_2);
    // The client lists AES-256-GCM first; the gateway picks by its own order.
    assert_eq!(x.suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    assert_eq!(x.answer.status, 200);
    assert_eq!(x.answer.header("x-upstream"), "u");
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-host"], "api.example.com");
    let h2 = r#"sluice_tls_handshakes_total{alpn="h2",result="ok",version="1.3"}"#;
    assert_eq!(gw.metric(h2).await, 1.0);
    gw.stop().await;
}

#[tokio::test]
async fn a_returning_client_resumes_its_session() {
    let ca = Ca::new("test CA");
    let upstream = Upstream::echo("u").await;
    let api = ca.server(&["api.example.com"]);
    let gw = gateway(
        &[("api", &api)],
        &[],
        &format!("{}{}", certificate("api", "api", false), routes(&upstream)),
    )
    .await;
    let https = gw.https.unwrap();
    // One client config: its session store keeps the ticket of the first connection.
    let config = pki::client_config(ca.roots(), &[b"http/1.1"], None);
    let first = exchange(https, config.clone(), "api.example.com", "/", &[])
        .await
        .unwrap();
    assert!(!first.resumed);
    let second = exchange(https, config, "api.example.com", "/", &[])
        .await
        .unwrap();
    assert!(second.resumed, "the second handshake was a full one");
    assert_eq!(second.answer.status, 200);
    gw.stop().await;
}

/// A gateway asking for client certificates signed by `clients` (`mode`), whose route
/// `team-a` matches the subject header and whose catch-all takes the rest.
async fn mtls_gateway(
    server: &Issued,
    clients: &Ca,
    mode: &str,
    upstream: &Upstream,
    other: &Upstream,
) -> Gateway {
    gateway(
        &[("api", server)],
        &[("clients-ca.pem", clients.pem())],
        &format!(
            r#"
            {}
            [tls.client_auth]
            ca = "clients-ca.pem"
            mode = "{mode}"

            [[clusters]]
            name = "team-a"
            backends = [{{ url = "{}" }}]
            [[clusters]]
            name = "others"
            backends = [{{ url = "{}" }}]

            [[routes]]
            name = "team-a"
            cluster = "team-a"
            match = {{ headers = [{{ name = "x-sluice-client-subject", value = "CN=team-a" }}] }}
            [[routes]]
            name = "others"
            cluster = "others"
            "#,
            certificate("api", "api", false),
            upstream.url(),
            other.url()
        ),
    )
    .await
}

#[tokio::test]
async fn required_client_certificates_are_verified_and_their_subject_routes() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let strangers = Ca::new("someone else's CA");
    let team_a = Upstream::echo("team-a").await;
    let others = Upstream::echo("others").await;
    let server = ca.server(&["api.example.com"]);
    let gw = mtls_gateway(&server, &clients, "required", &team_a, &others).await;
    let https = gw.https.unwrap();

    // A client with a certificate from the client CA: its subject picks the route and goes
    // upstream; a forged header is replaced.
    let id = clients.client("team-a");
    let config = pki::client_config(ca.roots(), &[b"http/1.1"], Some(&id));
    let forged = [("x-sluice-client-subject", "CN=admin")];
    let x = exchange(https, config, "api.example.com", "/", &forged)
        .await
        .unwrap();
    assert_eq!(x.answer.status, 200);
    assert_eq!(x.answer.header("x-upstream"), "team-a");
    let seen = team_a.seen().pop().unwrap();
    assert_eq!(seen.headers["x-sluice-client-subject"], "CN=team-a");
    assert_eq!(
        seen.headers
            .get_all("x-sluice-client-subject")
            .iter()
            .count(),
        1
    );

    // Another client of the same CA is served by the other route.
    let id = clients.client("team-b");
    let config = pki::client_config(ca.roots(), &[b"h2"], Some(&id));
    let x = exchange(https, config, "api.example.com", "/", &[])
        .await
        .unwrap();
    assert_eq!(x.answer.header("x-upstream"), "others");
    assert_eq!(
        others.seen().pop().unwrap().headers["x-sluice-client-subject"],
        "CN=team-b"
    );

    // No certificate, or one from another CA: the handshake fails, nothing goes upstream.
    let before = team_a.seen().len() + others.seen().len();
    let config = pki::client_config(ca.roots(), &[b"http/1.1"], None);
    let err = exchange(https, config, "api.example.com", "/", &[])
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRequired"), "{err}");
    let stranger = strangers.client("team-a");
    let config = pki::client_config(ca.roots(), &[b"http/1.1"], Some(&stranger));
    let err = exchange(https, config, "api.example.com", "/", &[])
        .await
        .unwrap_err();
    assert!(err.contains("UnknownCA"), "{err}");
    assert_eq!(team_a.seen().len() + others.seen().len(), before);
    let failed = r#"sluice_tls_handshakes_total{alpn="",result="error",version=""}"#;
    assert_eq!(gw.metric(failed).await, 2.0);

    // On the plain port the header is never believed.
    let plain = common::send(
        Request::get(gw.url("/"))
            .header("x-sluice-client-subject", "CN=team-a")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(plain.header("x-upstream"), "others");
    assert!(!others
        .seen()
        .pop()
        .unwrap()
        .headers
        .contains_key("x-sluice-client-subject"));
    gw.stop().await;
}

#[tokio::test]
async fn optional_client_certificates_may_be_left_out() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let strangers = Ca::new("someone else's CA");
    let team_a = Upstream::echo("team-a").await;
    let others = Upstream::echo("others").await;
    let server = ca.server(&["api.example.com"]);
    let gw = mtls_gateway(&server, &clients, "optional", &team_a, &others).await;
    let https = gw.https.unwrap();

    let config = pki::client_config(ca.roots(), &[b"http/1.1"], None);
    let x = exchange(https, config, "api.example.com", "/", &[])
        .await
        .unwrap();
    assert_eq!(x.answer.header("x-upstream"), "others");
    assert!(!others
        .seen()
        .pop()
        .unwrap()
        .headers
        .contains_key("x-sluice-client-subject"));

    let id = clients.client("team-a");
    let config = pki::client_config(ca.roots(), &[b"http/1.1"], Some(&id));
    let x = exchange(https, config, "api.example.com", "/", &[])
        .await
        .unwrap();
    assert_eq!(x.answer.header("x-upstream"), "team-a");

    // A certificate that is sent must still verify.
    let stranger = strangers.client("team-a");
    let config = pki::client_config(ca.roots(), &[b"http/1.1"], Some(&stranger));
    assert!(exchange(https, config, "api.example.com", "/", &[])
        .await
        .is_err());
    gw.stop().await;
}

/// Sends `bytes` on a new TCP connection to `addr` and reads until the server closes it.
async fn send_raw(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let read = timeout(HANG_GUARD, stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the TLS port kept a bad connection open");
    out
}

#[tokio::test]
async fn plaintext_garbage_and_silence_on_the_tls_port_are_closed_without_harm() {
    let ca = Ca::new("test CA");
    let upstream = Upstream::echo("u").await;
    let api = ca.server(&["api.example.com"]);
    let gw = gateway(
        &[("api", &api)],
        &[],
        &format!(
            "[server]\nheader_read_timeout = \"300ms\"\n{}{}",
            certificate("api", "api", false),
            routes(&upstream)
        ),
    )
    .await;
    let https = gw.https.unwrap();

    // Plain HTTP gets no HTTP answer, only a close (and maybe a TLS alert).
    let out = send_raw(https, b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n").await;
    assert!(
        !String::from_utf8_lossy(&out).contains("HTTP/1.1"),
        "{out:?}"
    );
    send_raw(
        https,
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2, 3, 4, 5, 6, 7],
    )
    .await;
    send_raw(https, &[0u8; 4096]).await;
    // A client that says nothing is closed when header_read_timeout ends.
    send_raw(https, b"").await;

    let failed = r#"sluice_tls_handshakes_total{alpn="",result="error",version=""}"#;
    assert_eq!(gw.metric(failed).await, 3.0);
    let timed_out = r#"sluice_tls_handshakes_total{alpn="",result="timeout",version=""}"#;
    assert_eq!(gw.metric(timed_out).await, 1.0);
    assert!(upstream.seen().is_empty());

    // The gateway still serves both ports.
    let config = pki::client_config(ca.roots(), &[b"h2"], None);
    let x = exchange(https, config, "api.example.com", "/", &[])
        .await
        .unwrap();
    assert_eq!(x.answer.status, 200);
    assert_eq!(common::get(&gw.url("/")).await.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn no_certificate_means_no_https_listener() {
    let upstream = Upstream::echo("u").await;
    let gw = Gateway::start(&routes(&upstream)).await;
    assert!(gw.https.is_none());
    gw.stop().await;
}

//! Reloads and TLS: rotated certificates reach the next handshake while open connections
//! carry on; an `https://` backend keeps its pool until its CAs change.

mod common;

use bytes::Bytes;
use common::pki::{self, Ca};
use common::reload::{assert_applied, reload};
use common::{get, Gateway, Upstream};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// An HTTPS connection to the gateway as `name`: the DNS names of the certificate it was
/// served, and an HTTP/1.1 sender on it.
async fn connect(
    addr: std::net::SocketAddr,
    ca: &Ca,
    name: &str,
) -> (
    Vec<String>,
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) {
    let config = pki::client_config(ca.roots(), &[b"http/1.1"], None);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(config)
        .connect(pki::server_name(name), tcp)
        .await
        .unwrap();
    let names = pki::dns_names(&tls.get_ref().1.peer_certificates().unwrap()[0]);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    (names, sender)
}

async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
) -> (u16, Bytes) {
    let req = Request::get("/v1/models")
        .header("host", host)
        .body(Full::default())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn a_rotated_certificate_reaches_new_handshakes_and_open_connections_carry_on() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().unwrap();
    ca.server(&["old.test"]).write(dir.path(), "api");
    let gw = Gateway::start_in(
        dir,
        "[reload]\nwatch = false\n\
         [[certificates]]\nname = \"api\"\ncert = \"api.pem\"\nkey = \"api.key\"\n\
         [[clusters]]\nname = \"m\"\nbackends = [{ url = \"mock://m\" }]\n\
         [[routes]]\nname = \"all\"\ncluster = \"m\"\n",
    )
    .await;
    let https = gw.https.unwrap();
    let (names, mut open) = connect(https, &ca, "old.test").await;
    assert_eq!(names, ["old.test"]);
    assert_eq!(get_on(&mut open, "old.test").await.0, 200);

    // cert-manager rotates the files in place; the config text is unchanged.
    ca.server(&["old.test", "new.test"]).write(gw.dir(), "api");
    let reply = reload(&gw, "tls_conf", None).await;
    assert_applied(&reply);
    assert_eq!(reply["restart_required"], serde_json::json!([]));

    let (names, mut fresh) = connect(https, &ca, "new.test").await;
    assert_eq!(names, ["old.test", "new.test"]);
    assert_eq!(get_on(&mut fresh, "new.test").await.0, 200);
    // The connection made before the reload still serves requests.
    assert_eq!(get_on(&mut open, "old.test").await.0, 200);
    gw.stop().await;
}

#[tokio::test]
async fn the_first_certificate_needs_a_restart_and_says_so() {
    let ca = Ca::new("test CA");
    let gw = Gateway::start(
        "[reload]\nwatch = false\n[[clusters]]\nname = \"m\"\nbackends = [{ url = \"mock://m\" }]\n\
         [[routes]]\nname = \"all\"\ncluster = \"m\"\n",
    )
    .await;
    assert!(gw.https.is_none());
    ca.server(&["a.test"]).write(gw.dir(), "api");
    let main = gw.dir().join("sluice.toml");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        format!("{text}[[certificates]]\nname = \"api\"\ncert = \"api.pem\"\nkey = \"api.key\"\n"),
    )
    .unwrap();
    let reply = reload(&gw, "sluice", None).await;
    assert_applied(&reply);
    assert_eq!(
        reply["restart_required"],
        serde_json::json!(["certificates"])
    );
    assert_eq!(get(&gw.url("/v1/models")).await.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn an_https_backend_keeps_its_pool_until_its_cas_change() {
    let ca = Ca::new("upstream CA");
    let identity = ca.server(&["127.0.0.1"]);
    let upstream = Upstream::echo_tls(
        "secure",
        pki::server_config(&identity, &[b"http/1.1"], None),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let main = format!(
        "[reload]\nwatch = false\n[[clusters]]\nname = \"s\"\n\
         backends = [{{ url = \"{}\" }}]\ntls = {{ ca = \"ca.pem\" }}\n\
         [[routes]]\nname = \"all\"\ncluster = \"s\"\n",
        upstream.https_url()
    );
    let gw = Gateway::start_in(dir, &main).await;
    let connects = r#"sluice_upstream_connects_total{cluster="s"}"#;
    assert_eq!(get(&gw.url("/x")).await.status, 200);
    for _ in 0..3 {
        assert_applied(&reload(&gw, "sluice", None).await);
        assert_eq!(get(&gw.url("/x")).await.status, 200);
    }
    assert_eq!(gw.metric(connects).await, 1.0);

    // Another CA joins the bundle: the client config changes, so the backend gets a new
    // pool (and still verifies, through the first CA).
    let other = Ca::new("next CA");
    std::fs::write(
        gw.dir().join("ca.pem"),
        format!("{}{}", ca.pem(), other.pem()),
    )
    .unwrap();
    assert_applied(&reload(&gw, "sluice", None).await);
    assert_eq!(get(&gw.url("/x")).await.status, 200);
    assert_eq!(gw.metric(connects).await, 2.0);
    gw.stop().await;
}

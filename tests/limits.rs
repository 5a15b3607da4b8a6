//! Downstream limits through a real gateway: request body size, header size and count, slow
//! and silent clients, malformed requests, and the connection cap.
//!
//! Header-size, header-count and malformed-request answers come from hyper itself (before
//! sluice sees a request), so they are plain status lines with an empty body, not JSON errors.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{channel_body, connect_h1, get, open, raw, send, Gateway, Tap, TapEvent, Upstream};
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Generous guard against hangs; no assertion depends on it.
const HANG_GUARD: Duration = Duration::from_secs(10);

/// A `[server]` section, one cluster `c` on `backend`, and a route taking everything.
fn config(server: &str, backend: &str) -> String {
    format!(
        r#"
        [server]
        {server}

        [[clusters]]
        name = "c"
        backends = [{{ url = "{backend}" }}]

        [[routes]]
        name = "all"
        cluster = "c"
        "#
    )
}

fn post(url: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

// --- request body ---------------------------------------------------------------------------

#[tokio::test]
async fn declared_body_over_the_limit_is_413_and_never_forwarded() {
    let tap = Tap::start().await;
    let gw = Gateway::start(&config(r#"max_request_body = "1KiB""#, &tap.url())).await;

    let answer = timeout(HANG_GUARD, send(post(&gw.url("/big"), vec![b'x'; 2048])))
        .await
        .expect("hang");
    answer.assert_error(413, "request_too_large");
    assert!(!answer.header("x-request-id").is_empty());
    // One byte over the limit is over it too.
    let answer = timeout(HANG_GUARD, send(post(&gw.url("/big"), vec![b'x'; 1025])))
        .await
        .expect("hang");
    answer.assert_error(413, "request_too_large");

    // A request within the limit goes through on a fresh upstream connection. Had either
    // oversized request been forwarded, its connection would have been accepted first (the
    // kernel's accept queue is FIFO), so exactly one connection means none was.
    let answer = timeout(HANG_GUARD, send(post(&gw.url("/small"), b"ok".to_vec())))
        .await
        .expect("hang");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "ok");
    assert_eq!(
        tap.accepted(),
        1,
        "an oversized request reached the upstream"
    );
    gw.stop().await;
}

#[tokio::test]
async fn body_exactly_at_the_limit_passes_intact() {
    let upstream = Upstream::echo("u").await;
    let gw = Gateway::start(&config(r#"max_request_body = "1KiB""#, &upstream.url())).await;
    let body: Vec<u8> = (0..1024).map(|i| b'a' + (i % 26) as u8).collect();

    let answer = timeout(HANG_GUARD, send(post(&gw.url("/echo"), body.clone())))
        .await
        .expect("hang");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.json()["body"],
        String::from_utf8(body.clone()).unwrap()
    );
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.as_ref(), body.as_slice());
    gw.stop().await;
}

#[tokio::test]
async fn chunked_body_within_the_limit_passes_intact() {
    let upstream = Upstream::echo("u").await;
    let gw = Gateway::start(&config(r#"max_request_body = "1KiB""#, &upstream.url())).await;
    let (tx, body) = channel_body();
    let parts: Vec<Bytes> = vec![
        Bytes::from(vec![b'a'; 500]),
        Bytes::from(vec![b'b'; 500]),
        Bytes::from(vec![b'c'; 24]),
    ];
    let expected: Vec<u8> = parts.iter().flat_map(|p| p.to_vec()).collect();

    timeout(HANG_GUARD, async {
        let request = Request::post(gw.url("/echo")).body(body).unwrap();
        let feed = async move {
            for part in parts {
                tx.send(part).await.unwrap();
            }
        };
        let (response, ()) = tokio::join!(open(request), feed);
        assert_eq!(response.status(), 200);
        let echoed = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&echoed).unwrap();
        assert_eq!(json["body"], String::from_utf8(expected.clone()).unwrap());
        // It did travel chunked: the client sent no length.
        assert!(json["headers"].get("content-length").is_none(), "{json}");
    })
    .await
    .expect("hang");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.as_ref(), expected.as_slice());
    gw.stop().await;
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413_and_the_upstream_never_gets_it_whole() {
    let mut tap = Tap::start().await;
    let gw = Gateway::start(&config(r#"max_request_body = "1KiB""#, &tap.url())).await;
    let (tx, body) = channel_body();

    timeout(HANG_GUARD, async {
        let request = Request::post(gw.url("/stream")).body(body).unwrap();
        let response = tokio::spawn(open(request));
        // Within the limit so far: the gateway forwards the head and this chunk.
        tx.send(Bytes::from(vec![b'a'; 800])).await.unwrap();
        match tap.next_event().await {
            TapEvent::Head { uri } => assert_eq!(uri, "/stream"),
            other => panic!("expected the request head first, got {other:?}"),
        }
        // This chunk crosses the limit. The client keeps its body open: only the gateway can
        // end the exchange.
        tx.send(Bytes::from(vec![b'b'; 800])).await.unwrap();
        let response = response.await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let answer = common::Answer {
            status,
            headers: Default::default(),
            body: bytes,
        };
        answer.assert_error(413, "request_too_large");
        // The upstream's view of that body: it must fail, never end as if complete.
        match tap.next_event().await {
            TapEvent::Body { uri, body } => {
                assert_eq!(uri, "/stream");
                assert!(
                    body.is_err(),
                    "the upstream received a complete body of {} bytes",
                    body.unwrap().len()
                );
            }
            other => panic!("expected the body's end, got {other:?}"),
        }
        drop(tx);
    })
    .await
    .expect("hang");
    gw.stop().await;
}

#[tokio::test]
async fn chunked_body_over_the_limit_to_the_mock_backend_is_413_too() {
    let gw = Gateway::start(&config(r#"max_request_body = "1KiB""#, "mock://m")).await;
    let (tx, body) = channel_body();
    timeout(HANG_GUARD, async {
        let request = Request::post(gw.url("/v1/chat/completions"))
            .body(body)
            .unwrap();
        let response = tokio::spawn(open(request));
        tx.send(Bytes::from(vec![b'a'; 800])).await.unwrap();
        tx.send(Bytes::from(vec![b'b'; 800])).await.unwrap();
        let response = response.await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let answer = common::Answer {
            status,
            headers: Default::default(),
            body: bytes,
        };
        answer.assert_error(413, "request_too_large");
        drop(tx);
    })
    .await
    .expect("hang");
    gw.stop().await;
}

#[tokio::test]
async fn a_body_that_stops_coming_gets_408_and_is_never_forwarded() {
    let tap = Tap::start().await;
    let gw = Gateway::start(&config(r#"body_read_timeout = "1s""#, &tap.url())).await;
    // An LLM request, so its body is read whole: 1,000 bytes promised, 12 sent, then silence
    // with the connection kept open.
    let mut client = TcpStream::connect(gw.http).await.unwrap();
    client
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":\"m\"",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    timeout(HANG_GUARD, client.read_to_end(&mut answer))
        .await
        .expect("the gateway waited for the body forever")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    assert_eq!(tap.accepted(), 0, "a half request reached the backend");
    gw.stop().await;
}

// --- request head ---------------------------------------------------------------------------

/// A raw GET with `extra` header lines.
fn raw_get(extra: &str) -> Vec<u8> {
    format!("GET /echo HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn oversized_head_gets_431() {
    let upstream = Upstream::echo("u").await;
    let gw = Gateway::start(&config(r#"max_header_size = "8KiB""#, &upstream.url())).await;

    // Well under the limit: served.
    let small = format!("X-Big: {}\r\n", "a".repeat(4 * 1024));
    let answer = timeout(HANG_GUARD, raw(gw.http, &raw_get(&small)))
        .await
        .expect("hang");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");

    // 16 KiB in one header: 431 with a JSON error, and the connection closes.
    let big = format!("X-Big: {}\r\n", "a".repeat(16 * 1024));
    let answer = timeout(HANG_GUARD, raw(gw.http, &raw_get(&big)))
        .await
        .expect("hang");
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(
        answer.ends_with(r#""code":"request_header_fields_too_large","message":"request head too large","type":"invalid_request_error"}}"#),
        "{answer}"
    );
    assert_eq!(
        upstream.seen().len(),
        1,
        "the oversized request was forwarded"
    );
    gw.stop().await;
}

#[tokio::test]
async fn too_many_headers_get_431() {
    let upstream = Upstream::echo("u").await;
    let gw = Gateway::start(&config("max_headers = 10", &upstream.url())).await;

    // Host + 7 + Connection = 9 fields: served.
    let few: String = (0..7).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = timeout(HANG_GUARD, raw(gw.http, &raw_get(&few)))
        .await
        .expect("hang");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");

    // Host + 18 + Connection = 20 fields.
    let many: String = (0..18).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = timeout(HANG_GUARD, raw(gw.http, &raw_get(&many)))
        .await
        .expect("hang");
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{answer}"
    );
    assert_eq!(
        upstream.seen().len(),
        1,
        "the request with 20 headers was forwarded"
    );
    gw.stop().await;
}

#[tokio::test]
async fn malformed_request_line_gets_400_and_the_gateway_keeps_serving() {
    let upstream = Upstream::echo("u").await;
    let gw = Gateway::start(&config("", &upstream.url())).await;

    let answer = timeout(HANG_GUARD, raw(gw.http, b"GARBAGE\r\n\r\n"))
        .await
        .expect("hang");
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    let answer = timeout(
        HANG_GUARD,
        raw(gw.http, b"GET /\x01bad HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await
    .expect("hang");
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );

    let answer = timeout(HANG_GUARD, get(&gw.url("/after")))
        .await
        .expect("hang");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-upstream"), "u");
    assert_eq!(upstream.seen().len(), 1);
    gw.stop().await;
}

// --- slow and silent clients ----------------------------------------------------------------

/// Reads until the server closes the connection; returns what it sent before.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    out
}

#[tokio::test]
async fn incomplete_head_is_cut_after_header_read_timeout() {
    let upstream = Upstream::echo("u").await;
    let gw = Gateway::start(&config(r#"header_read_timeout = "300ms""#, &upstream.url())).await;

    let mut stream = TcpStream::connect(gw.http).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let sent = timeout(HANG_GUARD, read_until_closed(&mut stream))
        .await
        .expect("hang: the slow client was never cut");
    // hyper closes without an answer (no 408).
    assert!(
        sent.is_empty() || sent.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&sent)
    );
    assert!(upstream.seen().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn silent_client_is_cut_after_header_read_timeout() {
    // A client that connects and sends nothing holds a connection slot just like a slow one.
    let upstream = Upstream::echo("u").await;
    let gw = Gateway::start(&config(r#"header_read_timeout = "300ms""#, &upstream.url())).await;

    let mut stream = TcpStream::connect(gw.http).await.unwrap();
    let sent = timeout(HANG_GUARD, read_until_closed(&mut stream))
        .await
        .expect("hang: a client that sends nothing was never cut");
    assert!(
        sent.is_empty() || sent.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&sent)
    );
    gw.stop().await;
}

#[tokio::test]
async fn silent_client_is_cut_after_header_read_timeout_without_h2c() {
    let upstream = Upstream::echo("u").await;
    let gw = Gateway::start(&config(
        "header_read_timeout = \"300ms\"\nhttp2 = false",
        &upstream.url(),
    ))
    .await;

    let mut stream = TcpStream::connect(gw.http).await.unwrap();
    let sent = timeout(HANG_GUARD, read_until_closed(&mut stream))
        .await
        .expect("hang: a client that sends nothing was never cut");
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
    gw.stop().await;
}

// --- connection cap -------------------------------------------------------------------------

#[tokio::test]
async fn max_connections_holds_the_next_client_until_one_closes() {
    let upstream = Upstream::echo("u").await;
    let gw = Gateway::start(&config(
        "max_connections = 2\nheader_read_timeout = \"60s\"",
        &upstream.url(),
    ))
    .await;
    let request = |path: &'static str| {
        Request::get(path)
            .header("host", "x")
            .body(Full::<Bytes>::default())
            .unwrap()
    };

    timeout(HANG_GUARD, async {
        // Two keep-alive connections, each served once and then left idle.
        let (mut first, first_conn) = connect_h1(gw.http).await;
        let (mut second, _second_conn) = connect_h1(gw.http).await;
        assert_eq!(
            first.send_request(request("/1")).await.unwrap().status(),
            200
        );
        assert_eq!(
            second.send_request(request("/2")).await.unwrap().status(),
            200
        );

        // The third is accepted by the kernel but not served.
        let (mut third, _third_conn) = connect_h1(gw.http).await;
        let mut answer = Box::pin(third.send_request(request("/3")));
        assert!(
            timeout(Duration::from_millis(300), &mut answer)
                .await
                .is_err(),
            "a third connection was served while two were open"
        );
        assert_eq!(gw.metric("sluice_open_connections").await, 2.0);

        // Closing one lets the third in, and takes the first off the open count with
        // its permit.
        first_conn.abort();
        let response = answer.await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(upstream.seen().len(), 3);
        assert_eq!(gw.metric("sluice_open_connections").await, 2.0);
        drop(second);
    })
    .await
    .expect("hang: the third connection was never served");
    gw.stop().await;
}

//! Upstream failures through a real gateway: refused and hanging connects, silent and slow
//! backends, garbage and truncated answers. Each must become a clear 502/504 before the head,
//! or a body that ends with an error after it, never a fake clean end.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{drain, get, open, send, Gateway, RawUpstream, Script};
use http::Request;
use http_body_util::Full;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// Generous guard against hangs; no assertion depends on it.
const HANG_GUARD: Duration = Duration::from_secs(10);

/// One cluster `c` with one backend, cluster keys `extra`, and a route taking everything.
fn config(backend: &str, extra: &str) -> String {
    format!(
        r#"
        [[clusters]]
        name = "c"
        backends = [{{ url = "{backend}" }}]
        {extra}

        [[routes]]
        name = "all"
        cluster = "c"
        "#
    )
}

const CONNECT_ERRORS: &str = r#"sluice_upstream_connect_errors_total{cluster="c"}"#;

#[tokio::test]
async fn refused_connection_is_502_and_counted() {
    // A port bound but not listening: connecting to it is refused, and since the socket keeps
    // the port, no other test can start listening on it meanwhile.
    let closed = TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = closed.local_addr().unwrap().port();
    let gw = Gateway::start(&config(&format!("http://127.0.0.1:{port}"), "")).await;
    let before = gw.metric(CONNECT_ERRORS).await;

    let answer = timeout(HANG_GUARD, get(&gw.url("/v1/models")))
        .await
        .expect("hang");
    answer.assert_error(502, "upstream_connect_error");
    assert!(!answer.header("x-request-id").is_empty());
    assert!(gw.metric(CONNECT_ERRORS).await >= before + 1.0);
    drop(closed);
    gw.stop().await;
}

/// A listener whose accept queue is full, so that the kernel drops further SYNs and a
/// connect to it hangs. Returns the socket and the connections that fill its queue.
async fn black_hole() -> (tokio::net::TcpListener, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    // Connect until one does not complete: from then on the queue is full. A short timeout is
    // a negative check here (the connect never completes), not a measure of speed.
    for _ in 0..64 {
        match timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(err)) => panic!("filler connect failed: {err}"),
            Err(_) => return (listener, fillers),
        }
    }
    panic!("the accept queue never filled up");
}

#[tokio::test]
async fn connect_timeout_is_504_and_counted() {
    let (hole, _fillers) = black_hole().await;
    let url = format!("http://{}", hole.local_addr().unwrap());
    let gw = Gateway::start(&config(&url, r#"connect_timeout = "200ms""#)).await;
    let before = gw.metric(CONNECT_ERRORS).await;

    let answer = timeout(HANG_GUARD, get(&gw.url("/v1/models")))
        .await
        .expect("hang");
    answer.assert_error(504, "upstream_connect_timeout");
    assert!(!answer.header("x-request-id").is_empty());
    assert!(gw.metric(CONNECT_ERRORS).await >= before + 1.0);
    gw.stop().await;
}

#[tokio::test]
async fn silent_upstream_is_504_response_header_timeout() {
    let mut upstream = RawUpstream::start(Script::ReplyThenStall(b"")).await;
    let gw = Gateway::start(&config(
        &upstream.url(),
        r#"response_header_timeout = "200ms""#,
    ))
    .await;

    let request = Request::get(gw.url("/v1/models"))
        .header("x-request-id", "req-header-timeout")
        .body(Full::<Bytes>::default())
        .unwrap();
    let answer = timeout(HANG_GUARD, send(request)).await.expect("hang");
    answer.assert_error(504, "upstream_response_header_timeout");
    // The client's own request id comes back on the gateway's error.
    assert_eq!(answer.header("x-request-id"), "req-header-timeout");
    // The request did reach the upstream: this is not a connect failure.
    let head = timeout(HANG_GUARD, upstream.next_head())
        .await
        .expect("hang");
    assert!(head.starts_with("GET /v1/models HTTP/1.1\r\n"), "{head}");
    assert_eq!(gw.metric(CONNECT_ERRORS).await, 0.0);
    gw.stop().await;
}

#[tokio::test]
async fn total_timeout_shorter_than_header_timeout_is_504_total() {
    let upstream = RawUpstream::start(Script::ReplyThenStall(b"")).await;
    let gw = Gateway::start(&config(
        &upstream.url(),
        r#"
        response_header_timeout = "30s"
        total_timeout = "200ms"
        "#,
    ))
    .await;

    let answer = timeout(HANG_GUARD, get(&gw.url("/v1/models")))
        .await
        .expect("hang");
    answer.assert_error(504, "upstream_total_timeout");
    assert!(!answer.header("x-request-id").is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn total_timeout_cuts_a_stalled_stream_with_an_error() {
    // A head and one chunk, then nothing: the terminating chunk never comes.
    let upstream = RawUpstream::start(Script::ReplyThenStall(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
          5\r\nhello\r\n",
    ))
    .await;
    // Long enough for the head to get through on a loaded machine; the body then stalls.
    let gw = Gateway::start(&config(&upstream.url(), r#"total_timeout = "1s""#)).await;

    timeout(HANG_GUARD, async {
        let response = open(
            Request::get(gw.url("/v1/chat/completions"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let (data, error) = drain(response.into_body()).await;
        assert_eq!(data.as_ref(), b"hello");
        assert!(
            error.is_some(),
            "a stream cut by the total timeout must not end cleanly"
        );
    })
    .await
    .expect("hang: the total timeout did not cut the stream");
    gw.stop().await;
}

#[tokio::test]
async fn garbage_answer_is_502_bad_gateway() {
    let upstream = RawUpstream::start(Script::ReplyThenClose(b"garbage\r\n\r\n")).await;
    let gw = Gateway::start(&config(&upstream.url(), "")).await;

    let answer = timeout(HANG_GUARD, get(&gw.url("/v1/models")))
        .await
        .expect("hang");
    answer.assert_error(502, "bad_gateway");
    assert!(!answer.header("x-request-id").is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn garbage_answer_on_a_kept_open_connection_is_502() {
    // Same, but the upstream keeps the connection open after its garbage: the gateway must
    // not wait for more.
    let upstream = RawUpstream::start(Script::ReplyThenStall(b"garbage\r\n\r\n")).await;
    let gw = Gateway::start(&config(&upstream.url(), "")).await;

    let answer = timeout(HANG_GUARD, get(&gw.url("/v1/models")))
        .await
        .expect("hang");
    answer.assert_error(502, "bad_gateway");
    gw.stop().await;
}

#[tokio::test]
async fn upstream_closing_at_once_is_502() {
    let upstream = RawUpstream::start(Script::CloseAtOnce).await;
    let gw = Gateway::start(&config(&upstream.url(), "")).await;

    let answer = timeout(HANG_GUARD, get(&gw.url("/v1/models")))
        .await
        .expect("hang");
    answer.assert_error(502, "bad_gateway");
    assert!(!answer.header("x-request-id").is_empty());
    // The connection was made: this is not counted as a connect error.
    assert_eq!(gw.metric(CONNECT_ERRORS).await, 0.0);
    gw.stop().await;
}

#[tokio::test]
async fn upstream_closing_before_the_head_ends_is_502() {
    let upstream =
        RawUpstream::start(Script::ReplyThenClose(b"HTTP/1.1 200 OK\r\ncontent-le")).await;
    let gw = Gateway::start(&config(&upstream.url(), "")).await;

    let answer = timeout(HANG_GUARD, get(&gw.url("/v1/models")))
        .await
        .expect("hang");
    answer.assert_error(502, "bad_gateway");
    gw.stop().await;
}

#[tokio::test]
async fn upstream_closing_mid_body_is_a_truncated_body_not_a_clean_end() {
    let upstream = RawUpstream::start(Script::ReplyThenClose(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n0123456789",
    ))
    .await;
    let gw = Gateway::start(&config(&upstream.url(), "")).await;

    timeout(HANG_GUARD, async {
        let response = open(
            Request::get(gw.url("/v1/models"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await;
        assert_eq!(response.status(), 200);
        let (data, error) = drain(response.into_body()).await;
        assert_eq!(data.as_ref(), b"0123456789");
        assert!(error.is_some(), "a truncated body must not end cleanly");
    })
    .await
    .expect("hang");
    gw.stop().await;
}

#[tokio::test]
async fn upstream_closing_mid_chunked_body_is_an_error_not_a_clean_end() {
    let upstream = RawUpstream::start(Script::ReplyThenClose(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ))
    .await;
    let gw = Gateway::start(&config(&upstream.url(), "")).await;

    timeout(HANG_GUARD, async {
        let response = open(
            Request::get(gw.url("/v1/chat/completions"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await;
        assert_eq!(response.status(), 200);
        let (data, error) = drain(response.into_body()).await;
        assert_eq!(data.as_ref(), b"hello");
        assert!(error.is_some(), "a cut stream must not end cleanly");
    })
    .await
    .expect("hang");
    gw.stop().await;
}

use bytes::BytesMut;
use http::{Method, StatusCode, Version};

use super::{parse, Framing, Head, Limits};

const LIMITS: Limits = Limits {
    max_size: 1024,
    max_fields: 8,
};

fn head(text: &str) -> Head {
    let mut buf = BytesMut::from(text);
    parse(&mut buf, LIMITS).unwrap().expect("a whole head")
}

fn refused(text: &str) -> StatusCode {
    let mut buf = BytesMut::from(text);
    parse(&mut buf, LIMITS).expect_err(text).class().status
}

#[test]
fn a_head_is_parsed_and_split_off_the_buffer() {
    let mut buf = BytesMut::from(
        "\r\nPOST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET",
    );
    let head = parse(&mut buf, LIMITS).unwrap().unwrap();
    assert_eq!(head.parts.method, Method::POST);
    assert_eq!(head.parts.uri, "/v1/chat/completions?x=1");
    assert_eq!(head.parts.version, Version::HTTP_11);
    assert_eq!(head.parts.headers["host"], "a");
    assert_eq!(head.framing, Framing::Length(5));
    assert!(head.keep_alive && !head.expect_continue && !head.upgrade);
    assert_eq!(&buf[..], b"helloGET");
}

#[test]
fn a_partial_head_waits_for_more() {
    let mut buf = BytesMut::from("GET / HTTP/1.1\r\nHost: a\r\n");
    assert!(parse(&mut buf, LIMITS).unwrap().is_none());
    assert_eq!(buf.len(), 25);
}

#[test]
fn keep_alive_follows_the_version_and_connection() {
    assert!(!head("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    let upgrade =
        head("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert!(upgrade.upgrade);
    // An `Upgrade` the `Connection` field does not name is not a request to switch.
    assert!(!head("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n").upgrade);
    assert!(
        head("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
            .expect_continue
    );
    assert!(
        !head("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
            .expect_continue
    );
}

#[test]
fn framing_follows_rfc_9112() {
    assert_eq!(
        head("GET / HTTP/1.1\r\nHost: h\r\n\r\n").framing,
        Framing::Empty
    );
    assert_eq!(
        head("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").framing,
        Framing::Empty
    );
    assert_eq!(
        head("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7, 7\r\n\r\n").framing,
        Framing::Length(7)
    );
    assert_eq!(
        head("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n").framing,
        Framing::Chunked
    );
}

#[test]
fn ambiguous_framing_is_refused() {
    let bad = StatusCode::BAD_REQUEST;
    for text in [
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
    ] {
        assert_eq!(refused(text), bad, "{text}");
    }
    assert_eq!(
        refused("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        StatusCode::NOT_IMPLEMENTED
    );
    assert_eq!(
        refused(
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        StatusCode::NOT_IMPLEMENTED
    );
}

#[test]
fn heads_beyond_the_limits_get_431_and_others_400_or_505() {
    let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(2000));
    assert_eq!(refused(&long), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // A partial head already past the limit is refused without waiting for its end.
    let mut partial = BytesMut::from(&long[..1500]);
    assert_eq!(
        parse(&mut partial, LIMITS).unwrap_err().class().status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let many = format!("GET / HTTP/1.1\r\nHost: h\r\n{}\r\n", "a: b\r\n".repeat(9));
    assert_eq!(refused(&many), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(
        refused("GET / HTTP/1.1\r\nHost: h\r\nbad name: x\r\n\r\n"),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        refused("GET  / HTTP/1.1\r\nHost: h\r\n\r\n"),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        refused("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        StatusCode::HTTP_VERSION_NOT_SUPPORTED
    );
}

#[test]
fn a_large_max_headers_uses_the_heap() {
    let limits = Limits {
        max_size: 64 * 1024,
        max_fields: 500,
    };
    let text = format!(
        "GET / HTTP/1.1\r\nHost: h\r\n{}\r\n",
        "a: b\r\n".repeat(300)
    );
    let mut buf = BytesMut::from(text.as_str());
    let head = parse(&mut buf, limits).unwrap().unwrap();
    assert_eq!(head.parts.headers.get_all("a").iter().count(), 300);
}

#[test]
fn absolute_form_targets_keep_their_path() {
    let head = head("GET http://example.com/v1/models HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(head.parts.uri.path(), "/v1/models");
    assert_eq!(head.parts.uri.host(), Some("example.com"));
}

use http::Request;

use super::*;

fn parse(wire: &[u8], method: Method) -> Result<Option<Head>, HeadError> {
    let mut buf = BytesMut::from(wire);
    parse_response(&mut buf, &method)
}

fn head(wire: &str) -> Head {
    parse(wire.as_bytes(), Method::GET).unwrap().unwrap()
}

#[test]
fn framing_follows_rfc_9112() {
    let cases = [
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            Framing::Length(5),
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            Framing::Length(5),
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            Framing::Chunked,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n",
            Framing::Chunked,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            Framing::Close,
            false,
        ),
        ("HTTP/1.1 200 OK\r\n\r\n", Framing::Close, false),
        ("HTTP/1.1 204 No Content\r\n\r\n", Framing::Empty, true),
        (
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
            Framing::Empty,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: Close\r\n\r\n",
            Framing::Length(5),
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n",
            Framing::Length(5),
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\n",
            Framing::Length(5),
            true,
        ),
        // Both: read as chunked, and the connection is not trusted with another request.
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
            Framing::Chunked,
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n",
            Framing::Chunked,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: gzip\r\n\r\n",
            Framing::Close,
            false,
        ),
    ];
    for (wire, framing, keep_alive) in cases {
        let parsed = head(wire);
        assert_eq!(parsed.framing, framing, "{wire:?}");
        assert_eq!(parsed.keep_alive, keep_alive, "{wire:?}");
        if wire.contains("transfer-encoding") {
            assert!(
                !parsed.response.headers().contains_key("content-length"),
                "{wire:?}"
            );
        }
    }
}

#[test]
fn a_head_request_has_no_body_whatever_its_length() {
    let parsed = parse(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n",
        Method::HEAD,
    )
    .unwrap()
    .unwrap();
    assert_eq!(parsed.framing, Framing::Empty);
    assert_eq!(parsed.response.headers()["content-length"], "1234");
}

#[test]
fn interim_responses_are_skipped_and_the_body_stays_in_the_buffer() {
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 2\r\n\r\nok"[..],
    );
    let parsed = parse_response(&mut buf, &Method::POST).unwrap().unwrap();
    assert_eq!(parsed.response.status(), StatusCode::CREATED);
    let values: Vec<_> = parsed.response.headers().get_all("x-a").iter().collect();
    assert_eq!(values, ["1", "2"]);
    assert_eq!(&buf[..], b"ok");
}

#[test]
fn a_partial_head_waits_for_more() {
    assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-le", Method::GET)
        .unwrap()
        .is_none());
    assert!(parse(b"HTTP/1.1 100 Continue\r\n\r\n", Method::GET)
        .unwrap()
        .is_none());
}

#[test]
fn bad_heads_are_refused() {
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    while huge.len() <= MAX_HEAD {
        huge.extend_from_slice(b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let cases: [&[u8]; 7] = [
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        &huge,
        &many,
    ];
    for wire in cases {
        assert!(
            parse(wire, Method::GET).is_err(),
            "{:?}",
            String::from_utf8_lossy(&wire[..wire.len().min(60)])
        );
    }
}

fn encode(req: Request<()>, length: Option<u64>, empty: bool) -> (String, Sending) {
    let (parts, ()) = req.into_parts();
    let mut out = Vec::new();
    let sending = encode_request(&parts, length, empty, &mut out).unwrap();
    (String::from_utf8(out).unwrap(), sending)
}

#[test]
fn request_heads_carry_the_framing_of_their_body() {
    let get = Request::get("/v1/models?x=1")
        .header("host", "b")
        .body(())
        .unwrap();
    assert_eq!(
        encode(get, Some(0), true),
        (
            "GET /v1/models?x=1 HTTP/1.1\r\nhost: b\r\n\r\n".to_owned(),
            Sending::Nothing
        )
    );

    let post = || Request::post("http://b/v1/chat").header("host", "b");
    assert_eq!(
        encode(post().body(()).unwrap(), Some(0), true),
        (
            "POST /v1/chat HTTP/1.1\r\nhost: b\r\ncontent-length: 0\r\n\r\n".to_owned(),
            Sending::Nothing
        )
    );
    assert_eq!(
        encode(post().body(()).unwrap(), Some(12), false),
        (
            "POST /v1/chat HTTP/1.1\r\nhost: b\r\ncontent-length: 12\r\n\r\n".to_owned(),
            Sending::Length(12)
        )
    );
    // A GET whose body turned out to be of unknown length goes without one.
    let get = Request::get("/").header("host", "b").body(()).unwrap();
    assert_eq!(
        encode(get, None, false),
        (
            "GET / HTTP/1.1\r\nhost: b\r\n\r\n".to_owned(),
            Sending::Nothing
        )
    );
    assert_eq!(
        encode(post().body(()).unwrap(), None, false),
        (
            "POST /v1/chat HTTP/1.1\r\nhost: b\r\ntransfer-encoding: chunked\r\n\r\n".to_owned(),
            Sending::Chunked
        )
    );
    // The request's own Content-Length stands; a Transfer-Encoding of the client's is
    // never passed on.
    let kept = post()
        .header("content-length", "7")
        .header("transfer-encoding", "chunked")
        .body(())
        .unwrap();
    assert_eq!(
        encode(kept, None, false),
        (
            "POST /v1/chat HTTP/1.1\r\nhost: b\r\ncontent-length: 7\r\n\r\n".to_owned(),
            Sending::Length(7)
        )
    );
}

#[test]
fn conflicting_request_lengths_are_refused() {
    let req = Request::post("/")
        .header("content-length", "7")
        .header("content-length", "8")
        .body(())
        .unwrap();
    let (parts, ()) = req.into_parts();
    assert!(encode_request(&parts, None, false, &mut Vec::new()).is_err());
}

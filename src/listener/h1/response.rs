//! The answer's head on the wire, and how its body is framed to the client.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName};
use http::{response, StatusCode, Version};

use crate::wire::content_length;
pub use crate::wire::Framing;

/// What the request said that shapes the answer.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub head: bool,
    pub version: Version,
    /// The connection stays open after this answer, as far as the request and the server's
    /// state go (a framing by close overrides it).
    pub keep_alive: bool,
}

/// The `Keep-Alive` field, hop-by-hop like `Connection` and never passed on.
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Writes the status line and header fields of `parts` to `out`, with the framing and
/// connection fields of this connection. `length` is the body's exact length, if known.
/// Answers the framing and whether the connection stays open afterwards.
pub fn encode(
    parts: &response::Parts,
    length: Option<u64>,
    asked: Asked,
    out: &mut Vec<u8>,
) -> (Framing, bool) {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let no_length = status.is_informational() || status == StatusCode::NO_CONTENT;
    let mut announced = None;
    for (name, value) in &parts.headers {
        if name == header::CONNECTION || name == header::TRANSFER_ENCODING || name == KEEP_ALIVE {
            continue;
        }
        if name == header::CONTENT_LENGTH {
            // One valid value, and only where a length may be said.
            match content_length(value.as_bytes()) {
                Some(n) if announced.is_none() && !no_length => announced = Some(n),
                _ => continue,
            }
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(header::DATE) {
        DATE.with_borrow_mut(|date| field(out, b"date", date.now()));
    }
    let bodiless = asked.head || no_length || status == StatusCode::NOT_MODIFIED;
    let framing = match (announced, length) {
        _ if bodiless => Framing::Empty,
        (Some(n), _) => Framing::Length(n),
        (None, Some(n)) => {
            field(
                out,
                b"content-length",
                itoa::Buffer::new().format(n).as_bytes(),
            );
            Framing::Length(n)
        }
        (None, None) if asked.version == Version::HTTP_11 => {
            field(out, b"transfer-encoding", b"chunked");
            Framing::Chunked
        }
        (None, None) => Framing::Close,
    };
    let keep_alive = asked.keep_alive && framing != Framing::Close;
    if !keep_alive {
        field(out, b"connection", b"close");
    } else if asked.version == Version::HTTP_10 {
        field(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep_alive)
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `Date` of this second, formatted once per second per worker thread.
    static DATE: RefCell<CachedDate> = const { RefCell::new(CachedDate { second: 0, text: Vec::new() }) };
}

struct CachedDate {
    second: u64,
    text: Vec<u8>,
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now).into_bytes();
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Response;

    fn encoded(
        response: Response<()>,
        length: Option<u64>,
        asked: Asked,
    ) -> (String, Framing, bool) {
        let (parts, ()) = response.into_parts();
        let mut out = Vec::new();
        let (framing, keep_alive) = encode(&parts, length, asked, &mut out);
        (String::from_utf8(out).unwrap(), framing, keep_alive)
    }

    const GET_11: Asked = Asked {
        head: false,
        version: Version::HTTP_11,
        keep_alive: true,
    };

    #[test]
    fn a_body_of_unknown_length_is_chunked_to_http11_and_closed_to_http10() {
        let (text, framing, keep) = encoded(Response::new(()), None, GET_11);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("\r\ntransfer-encoding: chunked\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\ndate: "), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!((framing, keep), (Framing::Chunked, true));

        let old = Asked {
            version: Version::HTTP_10,
            ..GET_11
        };
        let (text, framing, keep) = encoded(Response::new(()), None, old);
        assert!(!text.contains("transfer-encoding"), "{text}");
        assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
        assert_eq!((framing, keep), (Framing::Close, false));
        let (text, framing, keep) = encoded(Response::new(()), Some(3), old);
        assert!(text.contains("\r\ncontent-length: 3\r\n"), "{text}");
        assert!(text.contains("\r\nconnection: keep-alive\r\n"), "{text}");
        assert_eq!((framing, keep), (Framing::Length(3), true));
    }

    #[test]
    fn hop_by_hop_fields_are_the_connections_own() {
        let response = Response::builder()
            .header("connection", "upgrade")
            .header("keep-alive", "timeout=5")
            .header("transfer-encoding", "chunked")
            .header("content-length", "5")
            .header("content-length", "6")
            .header("date", "Sun, 06 Nov 1994 08:49:37 GMT")
            .header("x-kept", "yes")
            .body(())
            .unwrap();
        let (text, framing, _) = encoded(response, None, GET_11);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             x-kept: yes\r\n\r\n"
        );
        assert_eq!(framing, Framing::Length(5));
    }

    #[test]
    fn bodiless_answers_have_no_framing_but_head_keeps_its_length() {
        for status in [204, 304] {
            let response = Response::builder()
                .status(status)
                .header("content-length", "0")
                .body(())
                .unwrap();
            let (text, framing, keep) = encoded(response, None, GET_11);
            assert!(!text.contains("transfer-encoding"), "{text}");
            assert_eq!(text.contains("content-length"), status == 304, "{text}");
            assert_eq!((framing, keep), (Framing::Empty, true));
        }
        let head = Asked {
            head: true,
            ..GET_11
        };
        let response = Response::builder()
            .header("content-length", "42")
            .body(())
            .unwrap();
        let (text, framing, _) = encoded(response, None, head);
        assert!(text.contains("\r\ncontent-length: 42\r\n"), "{text}");
        assert_eq!(framing, Framing::Empty);
    }

    #[test]
    fn a_closing_connection_says_so() {
        let closing = Asked {
            keep_alive: false,
            ..GET_11
        };
        let (text, _, keep) = encoded(Response::new(()), Some(0), closing);
        assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
        assert!(!keep);
    }
}

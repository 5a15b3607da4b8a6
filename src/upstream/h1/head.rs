//! Message heads on the wire: the request head written to a backend, and the response head
//! read back with how its body is framed (RFC 9112 §6.3).

use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, Response, StatusCode, Version};
use smallvec::SmallVec;

pub use crate::wire::Framing;
use crate::wire::{content_length, tokens};

/// Most header fields in a response head.
const MAX_HEADERS: usize = 100;
/// Room for the fields the proxy adds to an answer: `X-Request-Id`, and one more. Rate-limit
/// headers, when a route sets them, grow the map. The backend's `Connection`, removed first,
/// leaves one more slot. Kept small on purpose: a map of up to six fields has 624 bytes of
/// entries, which glibc serves from its per-thread cache; the next size up, 1,248 bytes, goes
/// through its slower general path on every response.
const ADDED_FIELDS: usize = 1;
/// Most bytes of a response head; a longer one is refused.
pub const MAX_HEAD: usize = 64 * 1024;

/// How the request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    /// No body.
    Nothing,
    /// Exactly this many bytes, announced by `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the length is not known up front.
    Chunked,
}

/// Writes the request line and header fields of `parts` to `out`, with the framing header
/// the body needs. `length` is the body's exact length if known; `empty` says it has none.
/// A `Content-Length` already set (the proxy keeps the client's, or rewrites it) is kept.
pub fn encode_request(
    parts: &request::Parts,
    length: Option<u64>,
    empty: bool,
    out: &mut Vec<u8>,
) -> Result<Sending, HeadError> {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut announced = None;
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING {
            // The framing is this connection's own.
            continue;
        }
        if name == header::CONTENT_LENGTH {
            let length = content_length(value.as_bytes())
                .ok_or(HeadError("invalid request Content-Length"))?;
            if announced.is_some_and(|seen| seen != length) {
                return Err(HeadError("conflicting request Content-Length values"));
            }
            if announced.is_some() {
                continue;
            }
            announced = Some(length);
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let sending = match (announced, length) {
        (Some(length), _) => Sending::Length(length),
        (None, _) if empty => {
            // A method that means to carry a body says it is empty, as clients do.
            if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
                field(out, b"content-length", b"0");
            }
            Sending::Nothing
        }
        (None, Some(length)) => {
            field(
                out,
                b"content-length",
                itoa::Buffer::new().format(length).as_bytes(),
            );
            Sending::Length(length)
        }
        // A body of unknown length on a method that has none in practice (an HTTP/2 client
        // that ends the stream with an empty DATA frame): sent without one, as hyper does.
        (None, None) if matches!(parts.method, Method::GET | Method::HEAD | Method::CONNECT) => {
            Sending::Nothing
        }
        (None, None) => {
            field(out, b"transfer-encoding", b"chunked");
            Sending::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    Ok(match sending {
        Sending::Length(0) => Sending::Nothing,
        other => other,
    })
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub response: Response<()>,
    pub framing: Framing,
    /// The connection may carry another request once this body is read.
    pub keep_alive: bool,
}

/// A response head that cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid response from backend: {0}")]
pub struct HeadError(pub &'static str);

/// Parses a response head off the front of `buf`, skipping interim (1xx) responses.
/// `None` when `buf` does not hold a whole head yet.
pub fn parse_response(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, HeadError> {
    // Filled by `parse_one` rather than returned in `Parsed`: moving it costs a copy of the
    // whole inline array each time.
    let mut fields = SmallVec::new();
    loop {
        fields.clear();
        let Some(parsed) = parse_one(buf, &mut fields)? else {
            return Ok(None);
        };
        if parsed.status.is_informational() {
            if parsed.status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(HeadError(
                    "101 Switching Protocols to a request that did not ask",
                ));
            }
            buf.advance(parsed.len);
            continue;
        }
        let (framing, keep_alive) = framing(&parsed, method)?;
        // The values are slices of the head's bytes, shared rather than copied.
        let head = buf.split_to(parsed.len).freeze();
        let mut headers = HeaderMap::with_capacity(fields.len() + ADDED_FIELDS);
        for (name, start, end) in fields.drain(..) {
            // A length beside a transfer coding is not passed on (RFC 9112 §6.3): the
            // client's side frames the body itself.
            if parsed.chunked.is_some() && name == header::CONTENT_LENGTH {
                continue;
            }
            let value = HeaderValue::from_maybe_shared(head.slice(start..end))
                .map_err(|_| HeadError("invalid header value"))?;
            headers.append(name, value);
        }
        let mut response = Response::new(());
        *response.status_mut() = parsed.status;
        *response.version_mut() = parsed.version;
        *response.headers_mut() = headers;
        return Ok(Some(Head {
            response,
            framing,
            keep_alive,
        }));
    }
}

/// A response head's fields, each value as offsets into the buffer.
type Fields = SmallVec<[(HeaderName, usize, usize); 16]>;

/// One response head as httparse saw it, and what the fields that frame the body said,
/// gathered in the same pass.
struct Parsed {
    len: usize,
    status: StatusCode,
    version: Version,
    /// `Connection` listed `close` / `keep-alive`.
    close: bool,
    keep_alive: bool,
    /// `Transfer-Encoding` was present; whether its last coding is `chunked`.
    chunked: Option<bool>,
    /// The `Content-Length`, if one was given; `Err` if a value was invalid or they differ.
    length: Result<Option<u64>, HeadError>,
}

fn parse_one(buf: &BytesMut, fields: &mut Fields) -> Result<Option<Parsed>, HeadError> {
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
        Ok(_) => return Err(HeadError("response head too large")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError("too many header fields")),
        Err(_) => return Err(HeadError("malformed response head")),
    };
    let mut parsed = Parsed {
        len,
        status: StatusCode::from_u16(response.code.unwrap_or(0))
            .map_err(|_| HeadError("invalid status code"))?,
        version: if response.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        },
        close: false,
        keep_alive: false,
        chunked: None,
        length: Ok(None),
    };
    let base = buf.as_ptr() as usize;
    for field in response.headers.iter() {
        let name = crate::wire::field_name(field.name.as_bytes())
            .map_err(|_| HeadError("invalid header name"))?;
        let value = field.value;
        if name == header::CONNECTION {
            for token in tokens(value) {
                parsed.close |= token.eq_ignore_ascii_case(b"close");
                parsed.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == header::TRANSFER_ENCODING {
            // The last field's last coding decides.
            let last = tokens(value).last().unwrap_or_default();
            parsed.chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONTENT_LENGTH {
            parsed.length = match (parsed.length, content_length(value)) {
                (Ok(None), Some(length)) => Ok(Some(length)),
                (Ok(Some(seen)), Some(length)) if seen == length => Ok(Some(length)),
                (Ok(Some(_)), Some(_)) => Err(HeadError("conflicting Content-Length values")),
                (Err(err), _) => Err(err),
                (_, None) => Err(HeadError("invalid Content-Length")),
            };
        }
        let start = value.as_ptr() as usize - base;
        fields.push((name, start, start + value.len()));
    }
    Ok(Some(parsed))
}

/// The body's framing and whether the connection stays open after it (RFC 9112 §6.3).
fn framing(parsed: &Parsed, method: &Method) -> Result<(Framing, bool), HeadError> {
    let keep_alive = if parsed.version == Version::HTTP_11 {
        !parsed.close
    } else {
        parsed.keep_alive && !parsed.close
    };
    let status = parsed.status;
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, keep_alive));
    }
    match parsed.chunked {
        // With a Content-Length beside it, the message was meant for a smuggling proxy: read
        // it as chunked and never reuse the connection. HTTP/1.0 has no transfer codings: the
        // same (RFC 9112 §6.1).
        Some(true) => Ok((
            Framing::Chunked,
            keep_alive && matches!(parsed.length, Ok(None)) && parsed.version == Version::HTTP_11,
        )),
        // Another coding last: the body runs until the backend closes.
        Some(false) => Ok((Framing::Close, false)),
        None => match parsed.length.clone()? {
            Some(length) => Ok((Framing::Length(length), keep_alive)),
            None => Ok((Framing::Close, false)),
        },
    }
}

#[cfg(test)]
mod tests;

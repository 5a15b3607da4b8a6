//! Message heads on the wire: the request head written to a backend, and the response head
//! read back with how its body is framed (RFC 9112 §6.3).

use bytes::{Buf, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, Response, StatusCode, Version};
use smallvec::SmallVec;

/// Most header fields in a response head.
const MAX_HEADERS: usize = 100;
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
            let length =
                content_length(value).ok_or(HeadError("invalid request Content-Length"))?;
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

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a `HEAD` request, 204 or 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes the connection.
    Close,
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
    loop {
        let Some(parsed) = parse_one(buf)? else {
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
        // The values are slices of the head's bytes, shared rather than copied.
        let head = buf.split_to(parsed.len).freeze();
        let mut headers = HeaderMap::with_capacity(parsed.fields.len());
        for (name, start, end) in parsed.fields {
            let value = HeaderValue::from_maybe_shared(head.slice(start..end))
                .map_err(|_| HeadError("invalid header value"))?;
            headers.append(name, value);
        }
        let (framing, keep_alive) = framing(parsed.status, parsed.version, &mut headers, method)?;
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

/// One response head as httparse saw it, its values as offsets into the buffer.
struct Parsed {
    len: usize,
    status: StatusCode,
    version: Version,
    fields: SmallVec<[(HeaderName, usize, usize); 16]>,
}

fn parse_one(buf: &BytesMut) -> Result<Option<Parsed>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
        Ok(_) => return Err(HeadError("response head too large")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError("too many header fields")),
        Err(_) => return Err(HeadError("malformed response head")),
    };
    let status = StatusCode::from_u16(parsed.code.unwrap_or(0))
        .map_err(|_| HeadError("invalid status code"))?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = buf.as_ptr() as usize;
    let mut offsets = SmallVec::new();
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| HeadError("invalid header name"))?;
        let start = field.value.as_ptr() as usize - base;
        offsets.push((name, start, start + field.value.len()));
    }
    Ok(Some(Parsed {
        len,
        status,
        version,
        fields: offsets,
    }))
}

/// The body's framing and whether the connection stays open after it.
fn framing(
    status: StatusCode,
    version: Version,
    headers: &mut HeaderMap,
    method: &Method,
) -> Result<(Framing, bool), HeadError> {
    let mut keep_alive = if version == Version::HTTP_11 {
        !has_token(headers, &header::CONNECTION, "close")
    } else {
        has_token(headers, &header::CONNECTION, "keep-alive")
    };
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, keep_alive));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Chunked only when it is the last coding; otherwise the body runs to the close.
        let chunked = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        // With a Content-Length beside it, the message was meant for a smuggling proxy:
        // read it as chunked, pass no length on, and never reuse the connection (RFC 9112
        // §6.3).
        if headers.remove(header::CONTENT_LENGTH).is_some() || !chunked {
            keep_alive = false;
        }
        let framing = if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        };
        return Ok((framing, keep_alive));
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let this = content_length(value).ok_or(HeadError("invalid Content-Length"))?;
        if length.is_some_and(|seen| seen != this) {
            return Err(HeadError("conflicting Content-Length values"));
        }
        length = Some(this);
    }
    Ok(match length {
        Some(length) => (Framing::Length(length), keep_alive),
        None => (Framing::Close, false),
    })
}

/// A `Content-Length` value: digits only, possibly a list of one repeated value.
fn content_length(value: &HeaderValue) -> Option<u64> {
    let mut length = None;
    for part in value.as_bytes().split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let this = std::str::from_utf8(part).ok()?.parse::<u64>().ok()?;
        if length.is_some_and(|seen| seen != this) {
            return None;
        }
        length = Some(this);
    }
    length
}

/// Whether a comma-separated header such as `Connection` lists `token`.
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests;

//! A client's request head, read off the wire, and how its body is framed (RFC 9112 §6).

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, Request, Uri, Version};
use smallvec::SmallVec;

use crate::error::ProxyError;
use crate::wire::{content_length, tokens};

/// Header fields parsed into a buffer on the stack; a `max_headers` above it uses the heap.
const STACK_FIELDS: usize = 128;

/// Room for the fields the proxy adds on the way (`X-Forwarded-*`, `X-Request-Id`, `Host`),
/// so that adding them does not grow the map.
const ADDED_FIELDS: usize = 6;

/// How a request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    pub parts: request::Parts,
    pub framing: Framing,
    /// The client lets the connection carry another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a go-ahead before sending its body.
    pub expect_continue: bool,
    /// The client asks to switch protocols (`Connection: upgrade` with `Upgrade`).
    pub upgrade: bool,
    /// The head as it came, for handing the connection to another server.
    pub raw: Bytes,
}

/// The limits a head is read within.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes of a head.
    pub max_size: usize,
    /// Most header fields.
    pub max_fields: usize,
}

/// Parses a request head off the front of `buf`. `None` when `buf` does not hold a whole
/// head yet. Empty lines before the request line are skipped (RFC 9112 §2.2).
pub fn parse(buf: &mut BytesMut, limits: Limits) -> Result<Option<Head>, ProxyError> {
    let blank = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    buf.advance(blank);
    let mut stack = [const { MaybeUninit::<httparse::Header>::uninit() }; STACK_FIELDS];
    let mut heap = Vec::new();
    let fields = if limits.max_fields <= STACK_FIELDS {
        &mut stack[..limits.max_fields]
    } else {
        heap.resize_with(limits.max_fields, MaybeUninit::uninit);
        &mut heap[..]
    };
    let mut request = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .allow_multiple_spaces_in_request_line_delimiters(false)
        .parse_request_with_uninit_headers(&mut request, buf, fields);
    let too_large = ProxyError::HeadTooLarge("request head too large");
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len <= limits.max_size => len,
        Ok(httparse::Status::Partial) if buf.len() <= limits.max_size => return Ok(None),
        Ok(_) => return Err(too_large),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ProxyError::HeadTooLarge("too many header fields"))
        }
        Err(httparse::Error::Version) if names_other_version(buf) => {
            return Err(ProxyError::VersionNotSupported)
        }
        Err(_) => return Err(ProxyError::BadHead("malformed request head")),
    };
    let version = if request.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| ProxyError::BadHead("invalid method"))?;
    let base = buf.as_ptr() as usize;
    let offsets = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let target = offsets(request.path.unwrap_or_default().as_bytes());
    let mut seen = Seen::default();
    let mut names: SmallVec<[(HeaderName, std::ops::Range<usize>); 16]> = SmallVec::new();
    for field in request.headers.iter() {
        let name = crate::wire::field_name(field.name.as_bytes())
            .map_err(|_| ProxyError::BadHead("invalid header name"))?;
        seen.note(&name, field.value)?;
        names.push((name, offsets(field.value)));
    }
    // Values and the target are slices of one copy of the head. A copy rather than a split
    // of the read buffer: what keeps a slice (the access log's URI, for as long as a stream
    // lasts) then keeps the head's bytes alive, not the whole buffer they were read into.
    let raw = Bytes::copy_from_slice(&buf[..len]);
    buf.advance(len);
    let uri = Uri::from_maybe_shared(raw.slice(target))
        .map_err(|_| ProxyError::BadHead("invalid request target"))?;
    let mut headers = HeaderMap::with_capacity(names.len() + ADDED_FIELDS);
    // Drained rather than moved into an iterator, which would copy the inline array.
    for (name, value) in names.drain(..) {
        let value = HeaderValue::from_maybe_shared(raw.slice(value))
            .map_err(|_| ProxyError::BadHead("invalid header value"))?;
        headers.append(name, value);
    }
    let framing = seen.framing(version)?;
    let keep_alive = match version {
        Version::HTTP_11 => !seen.close,
        _ => seen.keep_alive && !seen.close,
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Head {
        parts,
        framing,
        keep_alive,
        expect_continue: seen.expect_continue && version == Version::HTTP_11,
        upgrade: seen.upgrade && seen.upgrade_token,
        raw,
    }))
}

/// Whether the request line is well formed but for its version, `HTTP/2.0` say (rather
/// than a line httparse read a stray word of as the version).
fn names_other_version(buf: &[u8]) -> bool {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ');
    let (Some(_method), Some(_target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return false;
    };
    matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit())
}

/// What the fields that frame the message said, gathered in the parsing pass.
#[derive(Debug, Default)]
struct Seen {
    close: bool,
    keep_alive: bool,
    upgrade_token: bool,
    upgrade: bool,
    expect_continue: bool,
    hosts: u8,
    /// `Transfer-Encoding` fields: whether any was seen, and whether the codings are
    /// exactly `chunked`, once.
    coded: bool,
    chunked_only: bool,
    chunked_last: bool,
    length: Option<u64>,
}

impl Seen {
    fn note(&mut self, name: &HeaderName, value: &[u8]) -> Result<(), ProxyError> {
        if name == header::CONNECTION {
            for token in tokens(value) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                self.upgrade_token |= token.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name == header::TRANSFER_ENCODING {
            // Several fields are one list: only one `chunked`, and last, is served.
            for token in tokens(value).filter(|t| !t.is_empty()) {
                let chunked = token.eq_ignore_ascii_case(b"chunked");
                self.chunked_only = !self.coded && chunked;
                self.chunked_last = chunked;
                self.coded = true;
            }
        } else if name == header::CONTENT_LENGTH {
            let length =
                content_length(value).ok_or(ProxyError::BadHead("invalid Content-Length"))?;
            if self.length.is_some_and(|seen| seen != length) {
                return Err(ProxyError::BadHead("conflicting Content-Length values"));
            }
            self.length = Some(length);
        } else if name == header::HOST {
            self.hosts = self.hosts.saturating_add(1);
        } else if name == header::UPGRADE {
            self.upgrade = true;
        } else if name == header::EXPECT {
            self.expect_continue |= value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
        Ok(())
    }

    /// The body's framing (RFC 9112 §6.3). Every ambiguous case is refused rather than
    /// guessed at: a proxy that reads a body's end differently from its backend lets a
    /// request hide inside another.
    fn framing(&self, version: Version) -> Result<Framing, ProxyError> {
        match (self.hosts, version) {
            (0, Version::HTTP_11) => return Err(ProxyError::BadHead("no Host field")),
            (2.., _) => return Err(ProxyError::BadHead("more than one Host field")),
            _ => {}
        }
        if !self.coded {
            return Ok(match self.length {
                Some(0) | None => Framing::Empty,
                Some(length) => Framing::Length(length),
            });
        }
        if self.length.is_some() {
            return Err(ProxyError::BadHead(
                "both Transfer-Encoding and Content-Length are present",
            ));
        }
        if version == Version::HTTP_10 {
            return Err(ProxyError::BadHead(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if !self.chunked_last {
            return Err(ProxyError::BadHead(
                "the last transfer coding is not chunked",
            ));
        }
        if !self.chunked_only {
            return Err(ProxyError::UnsupportedCoding);
        }
        Ok(Framing::Chunked)
    }
}

#[cfg(test)]
mod tests;

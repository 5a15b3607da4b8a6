//! HTTP/1.1 on the wire, as both sides of sluice speak it: the client side toward clients
//! (`listener::h1`) and the client toward backends (`upstream::h1`). The chunked coding and
//! the field names and values that frame a message.

use http::header::{self, HeaderName, InvalidHeaderName};

pub mod chunked;

/// A field name as read off the wire, checked as `HeaderName::from_bytes` checks it. The
/// names that nearly every request and response carries are matched here first,
/// case-insensitively, at a few instructions per byte; `HeaderName::from_bytes` lowercases
/// each name through a table and then matches it among all the standard names, about 120
/// instructions per field (`benches/load/instructions.sh`).
pub fn field_name(name: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    // Only `A`-`Z` and `a`-`z` turn into a lowercase letter under `| 0x20`: an exact
    // case-insensitive test for the letters, and the other bytes are compared as they are.
    let is = |known: &[u8]| {
        name.iter().zip(known).all(|(&a, &b)| {
            if b.is_ascii_lowercase() {
                a | 0x20 == b
            } else {
                a == b
            }
        })
    };
    let common = match name.len() {
        4 if is(b"host") => header::HOST,
        4 if is(b"date") => header::DATE,
        6 if is(b"server") => header::SERVER,
        6 if is(b"accept") => header::ACCEPT,
        10 if is(b"connection") => header::CONNECTION,
        10 if is(b"user-agent") => header::USER_AGENT,
        12 if is(b"content-type") => header::CONTENT_TYPE,
        14 if is(b"content-length") => header::CONTENT_LENGTH,
        17 if is(b"transfer-encoding") => header::TRANSFER_ENCODING,
        _ => return HeaderName::from_bytes(name),
    };
    Ok(common)
}

/// How a response body is framed on the wire (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: an answer to `HEAD`, a 1xx, 204 or 304.
    Empty,
    /// Exactly this many bytes, announced by `Content-Length`.
    Length(u64),
    Chunked,
    /// Until the connection closes.
    Close,
}

/// A `Content-Length` value: digits only, possibly a list of one repeated value.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let this = part
            .iter()
            .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0'));
        if length.is_some_and(|seen| seen != this) {
            return None;
        }
        length = Some(this);
    }
    length
}

/// The trimmed tokens of a comma-separated value such as `Connection`'s.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Appends `data` to `out` as one chunk of the chunked coding.
pub fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(data.len() + CHUNK_FRAMING);
    chunk_size(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Most bytes that the chunked coding adds around one chunk's data: a size line of up to
/// 16 hex digits and its CRLF, and the CRLF after the data.
pub const CHUNK_FRAMING: usize = 16 + 2 + 2;

/// Appends the size line of a chunk of `len` bytes, whose data the caller writes next.
pub fn chunk_size(out: &mut Vec<u8>, len: usize) {
    let mut size = [0u8; 16];
    out.extend_from_slice(hex(len, &mut size));
    out.extend_from_slice(b"\r\n");
}

/// `n` in lower-case hex, written into `buf`.
fn hex(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{chunk, content_length, field_name, hex};
    use http::HeaderName;

    #[test]
    fn field_names_read_as_http_reads_them() {
        let names: [&[u8]; 14] = [
            b"Host",
            b"DATE",
            b"server",
            b"Accept",
            b"Connection",
            b"user-AGENT",
            b"Content-Type",
            b"content-length",
            b"Transfer-Encoding",
            b"X-Request-Id",
            b"content\rtype",
            b"hos t",
            b"",
            b"Content-Typ",
        ];
        for name in names {
            assert_eq!(
                field_name(name).ok(),
                HeaderName::from_bytes(name).ok(),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        // Every case of every byte of a common name.
        let name = b"content-length";
        for mask in 0..1u32 << name.len() {
            let cased: Vec<u8> = (0..name.len())
                .map(|i| match mask >> i & 1 {
                    1 => name[i].to_ascii_uppercase(),
                    _ => name[i],
                })
                .collect();
            assert_eq!(field_name(&cased).unwrap(), http::header::CONTENT_LENGTH);
        }
    }

    #[test]
    fn chunk_sizes_are_lower_case_hex() {
        let mut buf = [0u8; 16];
        assert_eq!(hex(0, &mut buf), b"0");
        assert_eq!(hex(0x1af, &mut buf), b"1af");
        assert_eq!(hex(usize::MAX, &mut buf), b"ffffffffffffffff");
        let mut out = Vec::new();
        chunk(&mut out, b"hello");
        assert_eq!(out, b"5\r\nhello\r\n");
    }

    #[test]
    fn content_lengths_are_digits_or_one_repeated_value() {
        assert_eq!(content_length(b"42"), Some(42));
        assert_eq!(content_length(b" 7 , 7"), Some(7));
        assert_eq!(content_length(b"7, 8"), None);
        assert_eq!(content_length(b"+7"), None);
        assert_eq!(content_length(b""), None);
        assert_eq!(content_length(b"99999999999999999999"), None);
    }
}

//! The chunked transfer coding of a message body (RFC 9112 §7.1), decoded in place.
//!
//! The decoder takes whatever the read buffer holds and hands back data without copying it:
//! each piece of chunk data is split off the buffer. Extensions and trailers are read and
//! dropped (a reverse proxy to OpenAI-style backends has no use for them), within bounds so
//! that a peer cannot make the decoder hold an unbounded line.

use bytes::{Buf, Bytes, BytesMut};

/// Longest chunk-size line, extensions included.
const MAX_SIZE_LINE: usize = 4096;
/// Most bytes of trailer fields after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk, in the trailer section; counts the bytes read so far.
    Trailers(usize),
    /// The body is complete.
    Done,
}

/// What one step of decoding gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    /// The body ended; the buffer holds only what followed it.
    End,
    /// The buffer holds no complete next item.
    More,
}

/// A malformed chunked body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid chunked body: {0}")]
pub struct ChunkedError(&'static str);

impl Chunked {
    /// Decodes from the front of `buf` until it yields data, the end, or needs more bytes.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, ChunkedError> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(line) = take_line(buf, MAX_SIZE_LINE, "chunk size line too long")?
                    else {
                        return Ok(Step::More);
                    };
                    let size = chunk_size(&line)?;
                    *self = if size == 0 {
                        Chunked::Trailers(0)
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let take = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Step::Data(data));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkedError("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers(seen) => {
                    let left = MAX_TRAILERS.saturating_sub(seen);
                    let Some(line) = take_line(buf, left, "trailers too long")? else {
                        return Ok(Step::More);
                    };
                    *self = if line.is_empty() {
                        Chunked::Done
                    } else {
                        Chunked::Trailers(seen + line.len() + 2)
                    };
                }
                Chunked::Done => return Ok(Step::End),
            }
        }
    }
}

/// Takes one CRLF-ended line off `buf`, without its CRLF; `None` if the line is not complete.
fn take_line(
    buf: &mut BytesMut,
    max: usize,
    too_long: &'static str,
) -> Result<Option<BytesMut>, ChunkedError> {
    let Some(end) = memchr::memchr(b'\n', buf) else {
        return if buf.len() > max {
            Err(ChunkedError(too_long))
        } else {
            Ok(None)
        };
    };
    // The line with its LF is `end + 1` bytes; it must fit in `max`.
    if end >= max {
        return Err(ChunkedError(too_long));
    }
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(ChunkedError("line not ended by CRLF"));
    }
    let mut line = buf.split_to(end + 1);
    line.truncate(end - 1);
    Ok(Some(line))
}

/// The size of a chunk-size line: hex digits, then optional whitespace and extensions.
fn chunk_size(line: &[u8]) -> Result<u64, ChunkedError> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 {
        return Err(ChunkedError("chunk size is not hex"));
    }
    // Optional whitespace, then nothing or an extension.
    let after = line[digits..].iter().find(|b| !matches!(b, b' ' | b'\t'));
    if !matches!(after, None | Some(b';')) {
        return Err(ChunkedError("chunk size is not hex"));
    }
    line[..digits].iter().try_fold(0u64, |size, &digit| {
        let value = (digit as char).to_digit(16).unwrap_or(0);
        size.checked_mul(16)
            .map(|size| size + u64::from(value))
            .ok_or(ChunkedError("chunk size overflows"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `piece` bytes and collects the data and whether it ended.
    fn decode(wire: &[u8], piece: usize) -> Result<(Vec<u8>, bool, BytesMut), ChunkedError> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for part in wire.chunks(piece.max(1)) {
            buf.extend_from_slice(part);
            loop {
                match state.step(&mut buf)? {
                    Step::Data(data) => out.extend_from_slice(&data),
                    Step::End => return Ok((out, true, buf)),
                    Step::More => break,
                }
            }
        }
        Ok((out, false, buf))
    }

    #[test]
    fn decodes_chunks_whatever_the_read_boundaries() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for piece in 1..wire.len() {
            let (data, ended, rest) = decode(wire, piece).unwrap();
            assert_eq!(data, b"hello, world", "piece {piece}");
            assert!(ended, "piece {piece}");
            // What follows the body stays in the buffer (it tells the connection is unclean).
            assert!(b"NEXT".starts_with(&rest), "piece {piece}: {rest:?}");
        }
    }

    #[test]
    fn upper_case_hex_and_large_chunks() {
        let body = vec![b'a'; 0x1AF];
        let mut wire = b"1AF\r\n".to_vec();
        wire.extend_from_slice(&body);
        wire.extend_from_slice(b"\r\n0\r\n\r\n");
        let (data, ended, _) = decode(&wire, 100).unwrap();
        assert_eq!(data, body);
        assert!(ended);
    }

    #[test]
    fn an_unfinished_body_asks_for_more() {
        let (data, ended, _) = decode(b"5\r\nhel", 64).unwrap();
        assert_eq!(data, b"hel");
        assert!(!ended);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for wire in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n",
            b"-5\r\n",
            b"ffffffffffffffffff\r\n",
            b"5 x\r\n",
        ] {
            assert!(
                decode(wire, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn trailers_end_at_their_bound_exactly() {
        // One trailer line of `x`s, then the empty line: `x`s + 4 bytes in all.
        let section = |xs: usize| {
            let mut wire = b"0\r\n".to_vec();
            wire.extend(std::iter::repeat_n(b'x', xs));
            wire.extend_from_slice(b"\r\n\r\n");
            decode(&wire, 1000)
        };
        assert!(section(MAX_TRAILERS - 4).unwrap().1);
        assert_eq!(
            section(MAX_TRAILERS - 3).unwrap_err(),
            ChunkedError("trailers too long")
        );
    }

    #[test]
    fn endless_lines_are_refused() {
        let size_line = vec![b'1'; MAX_SIZE_LINE + 2];
        assert_eq!(
            decode(&size_line, 512).unwrap_err(),
            ChunkedError("chunk size line too long")
        );
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..2000 {
            trailers.extend_from_slice(b"x-filler: 0123456789\r\n");
        }
        assert_eq!(
            decode(&trailers, 512).unwrap_err(),
            ChunkedError("trailers too long")
        );
    }
}

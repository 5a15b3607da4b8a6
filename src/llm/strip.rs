//! Keeps the usage chunk from a client that did not ask for it.
//!
//! When sluice adds `stream_options.include_usage` to a request, the backend ends the
//! stream with one extra chunk (`"choices":[]` and a `usage` object) that the client never
//! asked for and some clients choke on. This filter forwards whole events only, drops that
//! one, and holds a partial event until its end. It runs only on streams whose request
//! sluice changed.

use bytes::{Bytes, BytesMut};

use super::usage::Doc;

/// Event-by-event filter of one stream.
#[derive(Debug, Default)]
pub struct UsageStrip {
    pending: BytesMut,
}

impl UsageStrip {
    /// The bytes of `chunk` that can go to the client now: complete events, less the usage
    /// chunk. `None` when everything is held.
    pub fn filter(&mut self, chunk: &[u8]) -> Option<Bytes> {
        self.pending.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        while let Some(end) = event_end(&self.pending) {
            let event = self.pending.split_to(end);
            if !is_usage_only(&event) {
                out.extend_from_slice(&event);
            }
        }
        (!out.is_empty()).then(|| out.freeze())
    }

    /// What is left when the stream ends (an event without its blank line).
    pub fn flush(&mut self) -> Option<Bytes> {
        (!self.pending.is_empty()).then(|| self.pending.split().freeze())
    }
}

/// The index just past the first blank line (LF LF, CRLF CRLF or CR CR).
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = memchr::memchr2(b'\n', b'\r', buf)?;
    while i + 1 < buf.len() {
        match &buf[i..] {
            [b'\n', b'\n', ..] | [b'\r', b'\r', ..] => return Some(i + 2),
            [b'\r', b'\n', b'\r', b'\n', ..] => return Some(i + 4),
            _ => i += 1,
        }
    }
    None
}

/// An event whose data is a chunk with no choices and a usage object.
fn is_usage_only(event: &[u8]) -> bool {
    if memchr::memmem::find(event, b"\"usage\"").is_none() {
        return false;
    }
    let mut data = Vec::new();
    for line in event.split(|&b| b == b'\n' || b == b'\r') {
        if let Some(value) = line.strip_prefix(b"data:") {
            data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
            data.push(b'\n');
        }
    }
    Doc::parse(&data).is_some_and(|doc| doc.is_usage_only())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n";
    const USAGE: &str =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    #[test]
    fn drops_the_usage_chunk_and_keeps_the_rest() {
        let mut strip = UsageStrip::default();
        let stream = format!("{TOKEN}{USAGE}{DONE}");
        let out = strip.filter(stream.as_bytes()).unwrap();
        assert_eq!(std::str::from_utf8(&out).unwrap(), format!("{TOKEN}{DONE}"));
        assert_eq!(strip.flush(), None);
    }

    #[test]
    fn holds_a_split_event_until_it_is_whole() {
        let mut strip = UsageStrip::default();
        let (a, b) = USAGE.split_at(20);
        assert_eq!(strip.filter(TOKEN.as_bytes()).unwrap(), TOKEN.as_bytes());
        assert_eq!(strip.filter(a.as_bytes()), None);
        assert_eq!(strip.filter(b.as_bytes()), None);
        assert_eq!(strip.filter(DONE.as_bytes()).unwrap(), DONE.as_bytes());
    }

    #[test]
    fn crlf_events_and_a_trailing_partial_event() {
        let mut strip = UsageStrip::default();
        let usage = USAGE.replace("\n\n", "\r\n\r\n");
        assert_eq!(strip.filter(usage.as_bytes()), None);
        assert_eq!(
            strip.filter(b": ping\r\n\r\ndata: tail"),
            Some(Bytes::from_static(b": ping\r\n\r\n"))
        );
        assert_eq!(strip.flush(), Some(Bytes::from_static(b"data: tail")));
    }
}

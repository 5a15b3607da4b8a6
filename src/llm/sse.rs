//! An incremental parser for `text/event-stream`, run beside the bytes that are forwarded.
//!
//! It never changes what the client receives: it is fed copies of the chunks as they pass
//! and reports complete events. It follows the WHATWG event-stream rules: lines end with
//! CRLF, LF or CR (also when the pair is split across reads), a leading BOM is dropped,
//! `:` starts a comment, `data:` lines join with `\n`, and a blank line dispatches the
//! event. A line longer than the bound stops the inspection for the rest of the stream;
//! forwarding goes on regardless.

use memchr::memchr2;

/// One dispatched event. `data` is the joined `data:` lines without the final newline.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, `message` when absent.
    pub kind: &'a str,
    pub data: &'a [u8],
}

/// Parser state for one stream.
#[derive(Debug)]
pub struct SseParser {
    /// The current, incomplete line.
    line: Vec<u8>,
    data: Vec<u8>,
    kind: String,
    /// The last byte seen was a CR, so an LF at the start of the next chunk ends nothing.
    after_cr: bool,
    at_start: bool,
    max_line: usize,
    /// Set when a line exceeded `max_line`; nothing more is inspected.
    pub overflowed: bool,
    /// Comment lines seen (`: ping` keep-alives).
    pub comments: u64,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Buffer capacity kept between lines and events: enough for a typical chat chunk. A
/// buffer that a larger event grew (a tool call, a long usage chunk) is freed once that
/// event is done, so an open stream does not hold the largest event it ever saw.
const KEEP: usize = 1024;

impl SseParser {
    /// A parser that gives up on lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            data: Vec::new(),
            kind: String::new(),
            after_cr: false,
            at_start: true,
            max_line,
            overflowed: false,
            comments: 0,
        }
    }

    /// Feeds the next chunk; `on_event` is called for every event it completes.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(Event<'_>)) {
        if self.overflowed {
            return;
        }
        if self.at_start {
            // The BOM may itself arrive split: hold the first bytes until it is decided.
            self.line.extend_from_slice(chunk);
            if self.line.len() < BOM.len() && BOM.starts_with(&self.line) {
                return;
            }
            self.at_start = false;
            let head = std::mem::take(&mut self.line);
            return self.feed_lines(head.strip_prefix(BOM).unwrap_or(&head), &mut on_event);
        }
        if self.after_cr && chunk.first() == Some(&b'\n') {
            chunk = &chunk[1..];
        }
        self.after_cr = false;
        self.feed_lines(chunk, &mut on_event);
    }

    fn feed_lines(&mut self, mut chunk: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        while let Some(end) = memchr2(b'\n', b'\r', chunk) {
            if self.line.is_empty() {
                self.take_line(&chunk[..end], on_event);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&chunk[..end]);
                self.take_line(&line, on_event);
                if line.capacity() <= KEEP {
                    line.clear();
                    self.line = line;
                }
            }
            if self.overflowed {
                return;
            }
            let crlf = chunk[end] == b'\r';
            chunk = &chunk[end + 1..];
            if crlf {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        if self.line.len() + chunk.len() > self.max_line {
            self.give_up();
        } else {
            self.line.extend_from_slice(chunk);
        }
    }

    fn take_line(&mut self, line: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        if line.len() > self.max_line {
            return self.give_up();
        }
        if line.is_empty() {
            if !self.data.is_empty() {
                self.data.pop(); // the newline after the last data line
                on_event(Event {
                    kind: if self.kind.is_empty() {
                        "message"
                    } else {
                        &self.kind
                    },
                    data: &self.data,
                });
            }
            self.data.clear();
            self.kind.clear();
            if self.data.capacity() > KEEP {
                self.data = Vec::new();
            }
            return;
        }
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() > self.max_line {
                    return self.give_up();
                }
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.kind.clear();
                self.kind.push_str(&String::from_utf8_lossy(value));
            }
            // `id`, `retry` and unknown fields carry nothing sluice reads.
            _ => {}
        }
    }

    fn give_up(&mut self) {
        self.overflowed = true;
        self.line = Vec::new();
        self.data = Vec::new();
    }
}

#[cfg(test)]
mod tests;

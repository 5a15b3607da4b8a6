//! The response side of an LLM exchange, observed as it streams: usage, first token,
//! finish reason. It reads copies of the forwarded chunks and never changes them.

use std::borrow::Cow;

use bytes::Bytes;
use smallvec::SmallVec;
use tokio::time::Instant;

use super::sse::SseParser;
use super::usage::{Doc, Usage};

/// Longest SSE line inspected; longer lines stop the inspection, not the stream.
const MAX_SSE_LINE: usize = 1 << 20;
/// Largest non-streamed JSON body read for its usage.
const MAX_JSON_BODY: usize = 4 << 20;

/// What a response is, for inspection.
#[derive(Debug)]
enum Shape {
    Sse(Box<SseParser>),
    /// A JSON body, kept (as shared `Bytes`, not copied) until it ends. Inline: a short
    /// answer comes in one frame, and a list on the heap cost an allocation per request.
    Json {
        frames: SmallVec<[Bytes; 1]>,
        len: usize,
    },
    /// Not inspected: another content type, or a JSON body past the bound.
    Opaque,
}

/// Observations of one response.
#[derive(Debug)]
pub struct LlmTap {
    shape: Shape,
    /// The last usage reported (streams may repeat it cumulatively; the last one counts).
    pub usage: Option<Usage>,
    pub finish_reason: Option<Cow<'static, str>>,
    /// When the first output token arrived.
    pub first_token: Option<Instant>,
    /// When the last output token arrived.
    pub last_token: Option<Instant>,
    /// Events whose data was neither JSON nor `[DONE]`, or a stream that overflowed.
    pub unparsed: u64,
    pub streamed: bool,
}

/// What the events of one chunk said, in order: a later usage or finish reason replaces
/// an earlier one.
#[derive(Debug, Default)]
struct Seen {
    usage: Option<Usage>,
    finish_reason: Option<Cow<'static, str>>,
    output: bool,
    unparsed: u64,
}

impl Seen {
    fn add(&mut self, doc: &Doc<'_>) {
        if let Some(usage) = doc.usage() {
            self.usage = Some(usage);
        }
        if let Some(reason) = doc.finish_reason() {
            self.finish_reason = Some(super::usage::reason(reason));
        }
        self.output |= doc.has_output();
    }
}

impl LlmTap {
    /// A tap for a response with this `content-type`.
    pub fn new(content_type: Option<&[u8]>) -> LlmTap {
        let essence = content_type
            .map(|ct| ct.split(|&b| b == b';').next().unwrap_or(ct).trim_ascii())
            .unwrap_or(b"");
        let shape = if essence.eq_ignore_ascii_case(b"text/event-stream") {
            Shape::Sse(Box::new(SseParser::new(MAX_SSE_LINE)))
        } else if essence.eq_ignore_ascii_case(b"application/json") {
            Shape::Json {
                frames: SmallVec::new(),
                len: 0,
            }
        } else {
            Shape::Opaque
        };
        LlmTap {
            streamed: matches!(shape, Shape::Sse(_)),
            shape,
            usage: None,
            finish_reason: None,
            first_token: None,
            last_token: None,
            unparsed: 0,
        }
    }

    /// Sees one forwarded chunk.
    pub fn observe(&mut self, chunk: &Bytes) {
        match &mut self.shape {
            Shape::Sse(parser) => {
                // Each event is read while the parser lends it, and only what it says is
                // kept: a chunk usually carries one event, sometimes two.
                let mut seen = Seen::default();
                parser.feed(chunk, |event| {
                    if event.data == b"[DONE]" {
                        return;
                    }
                    match Doc::parse(event.data) {
                        Some(doc) => seen.add(&doc),
                        None => seen.unparsed += 1,
                    }
                });
                self.unparsed += seen.unparsed;
                if parser.overflowed {
                    self.unparsed += 1;
                    self.shape = Shape::Opaque;
                }
                self.take(seen);
            }
            Shape::Json { frames, len } => {
                *len += chunk.len();
                if *len > MAX_JSON_BODY {
                    self.unparsed += 1;
                    self.shape = Shape::Opaque;
                } else {
                    frames.push(chunk.clone());
                }
            }
            Shape::Opaque => {}
        }
    }

    /// The response ended: reads a buffered JSON body.
    pub fn finish(&mut self) {
        if let Shape::Json { frames, .. } = std::mem::replace(&mut self.shape, Shape::Opaque) {
            let body = if frames.len() == 1 {
                frames[0].clone()
            } else {
                Bytes::from(frames.concat())
            };
            let (usage, finish) = super::usage::scan(&body);
            if usage.is_none() && finish.is_none() && body.trim_ascii_start().first() != Some(&b'{')
            {
                self.unparsed += u64::from(!body.is_empty());
            }
            self.usage = usage.or(self.usage);
            self.finish_reason = finish.or(self.finish_reason.take());
        }
    }

    fn take(&mut self, seen: Seen) {
        if let Some(usage) = seen.usage {
            self.usage = Some(usage);
        }
        if let Some(reason) = seen.finish_reason {
            self.finish_reason = Some(reason);
        }
        if seen.output {
            let now = Instant::now();
            self.first_token.get_or_insert(now);
            self.last_token = Some(now);
        }
    }

    /// Time per output token after the first, when it can be told.
    pub fn time_per_output_token(&self) -> Option<std::time::Duration> {
        let (first, last) = (self.first_token?, self.last_token?);
        let tokens = self.usage?.output?.checked_sub(1).filter(|&n| n > 0)?;
        Some((last - first) / u32::try_from(tokens).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse(tap: &mut LlmTap, text: &str) {
        tap.observe(&Bytes::copy_from_slice(text.as_bytes()));
    }

    #[test]
    fn usage_from_a_split_final_chunk_is_counted_once() {
        let mut tap = LlmTap::new(Some(b"text/event-stream; charset=utf-8"));
        sse(
            &mut tap,
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
        );
        sse(&mut tap, "data: {\"choices\":[],\"usage\":{\"prompt_to");
        assert_eq!(tap.usage, None);
        sse(
            &mut tap,
            "kens\":4,\"completion_tokens\":1}}\n\n: ping\n\ndata: [DONE]\n\n",
        );
        tap.finish();
        assert_eq!(
            tap.usage,
            Some(Usage {
                input: 4,
                output: Some(1)
            })
        );
        assert!(tap.first_token.is_some());
        assert_eq!(tap.unparsed, 0);
    }

    #[test]
    fn malformed_events_are_counted_not_fatal() {
        let mut tap = LlmTap::new(Some(b"text/event-stream"));
        sse(
            &mut tap,
            "data: {oops\n\ndata: {\"choices\":[{\"finish_reason\":\"stop\"}]}\n\n",
        );
        assert_eq!(tap.unparsed, 1);
        assert_eq!(tap.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn json_bodies_are_read_at_the_end() {
        let mut tap = LlmTap::new(Some(b"application/json"));
        tap.observe(&Bytes::from_static(b"{\"usage\":{\"prompt_tokens\":2,"));
        tap.observe(&Bytes::from_static(b"\"completion_tokens\":9}}"));
        assert_eq!(tap.usage, None);
        tap.finish();
        assert_eq!(
            tap.usage,
            Some(Usage {
                input: 2,
                output: Some(9)
            })
        );
        assert!(!tap.streamed);
    }

    #[test]
    fn other_content_types_are_not_read() {
        let mut tap = LlmTap::new(Some(b"text/plain"));
        tap.observe(&Bytes::from_static(b"{\"usage\":{\"prompt_tokens\":2}}"));
        tap.finish();
        assert_eq!(tap.usage, None);
    }
}

//! What OpenAI-style responses say about themselves: token usage, finish reason, and
//! whether a streamed chunk carries output.
//!
//! Both the Chat Completions shape (`prompt_tokens`, `completion_tokens`) and the Responses
//! shape (`input_tokens`, `output_tokens`) are read.

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem::{Finder, FinderRev};
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Tokens of one request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    /// `None` for answers without output tokens (embeddings).
    pub output: Option<u64>,
}

/// The parts of a response body or chunk that sluice reads; everything else is skipped.
///
/// Borrowed from the bytes it is read from, and summed up as it is read: a streamed
/// answer has one of these per token, and a parse into owned strings and a list of
/// choices cost two allocations per token (`docs/benchmarks.md`, instructions per SSE
/// event).
#[derive(Debug, Default, Deserialize)]
pub struct Doc<'a> {
    #[serde(default)]
    usage: Option<UsageDoc>,
    #[serde(default, borrow)]
    choices: Choices<'a>,
    /// The Responses API nests its usage in `response` on its final event.
    #[serde(default, borrow)]
    response: Option<Box<Doc<'a>>>,
    /// The Responses API's event type, such as `response.output_text.delta`.
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
struct UsageDoc {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

/// What the `choices` array says, gathered while it is read rather than kept as a list.
#[derive(Debug, Default)]
struct Choices<'a> {
    count: usize,
    /// The first non-null finish reason.
    finish_reason: Option<Cow<'a, str>>,
    /// Some choice carries output.
    output: bool,
}

#[derive(Debug, Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    /// Legacy completions stream `text` instead of a delta.
    #[serde(borrow)]
    text: Option<&'a RawValue>,
}

/// Values are taken raw: only whether they are empty matters, so they are neither
/// unescaped nor copied.
#[derive(Debug, Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning_content: Option<&'a RawValue>,
    tool_calls: Option<IgnoredAny>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Choices<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fold<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Fold<'a> {
            type Value = Choices<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Choices<'a>, A::Error> {
                let mut choices = Choices::default();
                while let Some(choice) = seq.next_element::<Choice<'a>>()? {
                    choices.count += 1;
                    let delta = choice.delta.as_ref();
                    choices.output |= carries(choice.text)
                        || delta.is_some_and(|d| {
                            carries(d.content)
                                || carries(d.reasoning_content)
                                || d.tool_calls.is_some()
                        });
                    if choices.finish_reason.is_none() {
                        choices.finish_reason = choice.finish_reason;
                    }
                }
                Ok(choices)
            }
        }
        deserializer.deserialize_seq(Fold(std::marker::PhantomData))
    }
}

/// A value that is there and not empty: not `null` (read as `None`), `""` or `[]`.
fn carries(value: Option<&RawValue>) -> bool {
    value.is_some_and(|v| !matches!(v.get(), "\"\"" | "[]"))
}

impl<'a> Doc<'a> {
    /// Parses a JSON document; `None` when it is not one.
    pub fn parse(bytes: &'a [u8]) -> Option<Doc<'a>> {
        serde_json::from_slice(bytes).ok()
    }

    /// The usage it reports, if any.
    pub fn usage(&self) -> Option<Usage> {
        if let Some(inner) = &self.response {
            if let Some(usage) = inner.usage() {
                return Some(usage);
            }
        }
        let u = self.usage.as_ref()?;
        Some(Usage {
            input: u.prompt_tokens.or(u.input_tokens)?,
            output: u.completion_tokens.or(u.output_tokens),
        })
    }

    /// A chunk with no choices and a usage object: the one `include_usage` adds.
    pub fn is_usage_only(&self) -> bool {
        self.choices.count == 0 && self.usage.is_some()
    }

    /// The first non-null finish reason among its choices.
    pub fn finish_reason(&self) -> Option<&str> {
        self.choices.finish_reason.as_deref()
    }

    /// Whether a streamed chunk carries output: text, reasoning or a tool call (or, in the
    /// Responses API, a `*.delta` event).
    pub fn has_output(&self) -> bool {
        self.kind.as_deref().is_some_and(|k| k.ends_with(".delta")) || self.choices.output
    }
}

/// Usage and finish reason of a complete, non-streamed answer, found without parsing the
/// whole document: the last `"usage"` member (OpenAI-style servers write it after the
/// choices, so text inside a message cannot shadow it) and the first `"finish_reason"`.
/// Parsing the whole answer costs several times more, for two small fields.
pub fn scan(body: &[u8]) -> (Option<Usage>, Option<String>) {
    // Built once: a finder's setup costs more than the search in a short body.
    static USAGE: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b"\"usage\""));
    static FINISH: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"finish_reason\""));
    let usage = USAGE.rfind(body).and_then(|at| {
        let rest = value_after_key(&body[at + b"\"usage\"".len()..])?;
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<UsageDoc>();
        let u = values.next()?.ok()?;
        Some(Usage {
            input: u.prompt_tokens.or(u.input_tokens)?,
            output: u.completion_tokens.or(u.output_tokens),
        })
    });
    let finish = FINISH.find(body).and_then(|at| {
        let rest = value_after_key(&body[at + b"\"finish_reason\"".len()..])?;
        let text = rest.strip_prefix(b"\"")?;
        let end = memchr::memchr2(b'"', b'\\', text)?;
        (text[end] == b'"').then(|| String::from_utf8_lossy(&text[..end]).into_owned())
    });
    (usage, finish)
}

/// The bytes after `: ` that follow a key, or `None` if no colon follows.
fn value_after_key(rest: &[u8]) -> Option<&[u8]> {
    let rest = rest.trim_ascii_start().strip_prefix(b":")?;
    Some(rest.trim_ascii_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanning_finds_usage_and_finish_reason() {
        let body = br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"the \"usage\": {\"prompt_tokens\": 99} field"},"finish_reason" : "length"}],"usage" : {"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;
        let (usage, finish) = scan(body);
        assert_eq!(
            usage,
            Some(Usage {
                input: 12,
                output: Some(3)
            })
        );
        assert_eq!(finish.as_deref(), Some("length"));
        let embeddings = br#"{"data":[],"usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        assert_eq!(
            scan(embeddings).0,
            Some(Usage {
                input: 4,
                output: None
            })
        );
        assert_eq!(scan(b"not json"), (None, None));
        assert_eq!(scan(br#"{"usage":null}"#), (None, None));
    }

    #[test]
    fn chat_usage_and_finish_reason() {
        let doc = Doc::parse(
            br#"{"choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"stop"}],
                "usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#,
        )
        .unwrap();
        assert_eq!(
            doc.usage(),
            Some(Usage {
                input: 12,
                output: Some(3)
            })
        );
        assert_eq!(doc.finish_reason(), Some("stop"));
    }

    #[test]
    fn null_usage_is_none() {
        let doc = Doc::parse(br#"{"choices":[{"delta":{"content":"a"}}],"usage":null}"#).unwrap();
        assert_eq!(doc.usage(), None);
        assert!(doc.has_output());
    }

    #[test]
    fn role_only_chunks_carry_no_output() {
        let doc =
            Doc::parse(br#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#).unwrap();
        assert!(!doc.has_output());
        let tool = Doc::parse(br#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#).unwrap();
        assert!(tool.has_output());
        let text = Doc::parse(br#"{"choices":[{"text":"x","index":0}]}"#).unwrap();
        assert!(text.has_output());
    }

    #[test]
    fn choices_are_summed_up_as_they_are_read() {
        // The first non-null finish reason, unescaped; output from any choice.
        let doc = Doc::parse(
            br#"{"choices":[{"index":0,"delta":{"content":null},"finish_reason":null},
                {"index":1,"delta":{"content":""},"finish_reason":"st\u006fp"},
                {"index":2,"delta":{"reasoning_content":"hm"},"finish_reason":"length"}]}"#,
        )
        .unwrap();
        assert_eq!(doc.finish_reason(), Some("stop"));
        assert!(doc.has_output());
        assert!(!doc.is_usage_only());
        // Content given as a list of parts is output; an empty list is not.
        let parts = br#"{"choices":[{"delta":{"content":[{"type":"text","text":"a"}]}}]}"#;
        assert!(Doc::parse(parts).unwrap().has_output());
        let empty = br#"{"choices":[{"delta":{"content":[]}}]}"#;
        assert!(!Doc::parse(empty).unwrap().has_output());
        let usage_only = br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        assert!(Doc::parse(usage_only).unwrap().is_usage_only());
        // `choices` that is not a list makes the document unreadable, as before.
        assert!(Doc::parse(br#"{"choices":{"delta":{}}}"#).is_none());
    }

    #[test]
    fn responses_api_usage() {
        let doc = Doc::parse(
            br#"{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":7}}}"#,
        )
        .unwrap();
        assert_eq!(
            doc.usage(),
            Some(Usage {
                input: 5,
                output: Some(7)
            })
        );
        let delta = Doc::parse(br#"{"type":"response.output_text.delta","delta":"Hi"}"#).unwrap();
        assert!(delta.has_output());
    }

    #[test]
    fn not_json_is_none() {
        assert!(Doc::parse(b"[DONE]").is_none());
        assert!(Doc::parse(b"{broken").is_none());
    }
}

//! What OpenAI-style responses say about themselves: token usage, finish reason, and
//! whether a streamed chunk carries output.
//!
//! Both the Chat Completions shape (`prompt_tokens`, `completion_tokens`) and the Responses
//! shape (`input_tokens`, `output_tokens`) are read.

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use super::json::{self, Kind, Scanner};

/// Tokens of one request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    /// `None` for answers without output tokens (embeddings).
    pub output: Option<u64>,
}

/// The parts of a response body or chunk that sluice reads; everything else is checked for
/// syntax and skipped (`llm::json`).
///
/// Borrowed from the bytes it is read from, and summed up as it is read: a streamed
/// answer has one of these per token, and a parse into owned strings and a list of
/// choices cost two allocations per token (`docs/benchmarks.md`, instructions per SSE
/// event). Values of an unexpected type read as unset, except where they show that the
/// document is not an OpenAI-style one: `choices` that is not a list, a choice that is not
/// an object.
#[derive(Debug, Default)]
pub struct Doc<'a> {
    usage: Option<UsageDoc>,
    choices: Choices<'a>,
    /// The Responses API nests its usage in `response` on its final event.
    response: Option<Box<Doc<'a>>>,
    /// The Responses API's event type, such as `response.output_text.delta`.
    kind: Option<Cow<'a, str>>,
}

#[derive(Debug, Default)]
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

impl<'a> Doc<'a> {
    /// Parses a JSON document; `None` when it is not one.
    pub fn parse(bytes: &'a [u8]) -> Option<Doc<'a>> {
        let mut scan = Scanner::new(bytes);
        let doc = Doc::read(&mut scan, true)?;
        scan.at_end().then_some(doc)
    }

    /// Reads the object at `scan`; a `response` member is read as a document too, at the
    /// `top` level only (that is where the Responses API puts it).
    fn read(scan: &mut Scanner<'a>, top: bool) -> Option<Doc<'a>> {
        let mut doc = Doc::default();
        json::members(scan, |scan, name| {
            match (name, scan.peek_kind()?) {
                (b"choices", Kind::Array) => doc.choices = Choices::read(scan)?,
                (b"choices", _) => return None,
                (b"usage", Kind::Object) => doc.usage = Some(UsageDoc::read(scan)?),
                (b"response", Kind::Object) if top => {
                    doc.response = Some(Box::new(Doc::read(scan, false)?));
                }
                (b"type", Kind::String) => doc.kind = json::string(scan).ok()?,
                _ => {
                    scan.value().ok()?;
                }
            }
            Some(())
        })?;
        Some(doc)
    }

    /// The usage it reports, if any.
    pub fn usage(&self) -> Option<Usage> {
        if let Some(inner) = &self.response {
            if let Some(usage) = inner.usage() {
                return Some(usage);
            }
        }
        self.usage.as_ref()?.usage()
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

impl<'a> Choices<'a> {
    fn read(scan: &mut Scanner<'a>) -> Option<Choices<'a>> {
        let mut choices = Choices::default();
        json::elements(scan, |scan| {
            choices.count += 1;
            let mut finish_reason = None;
            json::members(scan, |scan, name| {
                match (name, scan.peek_kind()?) {
                    (b"finish_reason", Kind::String) => finish_reason = json::string(scan).ok()?,
                    // Legacy completions stream `text` instead of a delta.
                    (b"text", _) => choices.output |= carries(scan)?,
                    (b"delta", Kind::Object) => choices.output |= delta_carries(scan)?,
                    _ => {
                        scan.value().ok()?;
                    }
                }
                Some(())
            })?;
            if choices.finish_reason.is_none() {
                choices.finish_reason = finish_reason;
            }
            Some(())
        })?;
        Some(choices)
    }
}

/// Whether a choice's `delta` carries output: content, reasoning or tool calls.
fn delta_carries(scan: &mut Scanner<'_>) -> Option<bool> {
    let mut output = false;
    json::members(scan, |scan, name| {
        output |= match name {
            b"content" | b"reasoning_content" => carries(scan)?,
            b"tool_calls" => scan.value().ok()?.0 != Kind::Null,
            _ => {
                scan.value().ok()?;
                false
            }
        };
        Some(())
    })?;
    Some(output)
}

/// Whether the value at `scan` is there and not empty: not `null`, `""` or `[]`. Only that
/// matters, so the value is neither unescaped nor copied.
fn carries(scan: &mut Scanner<'_>) -> Option<bool> {
    let (kind, span) = scan.value().ok()?;
    Some(kind != Kind::Null && !matches!(&scan.bytes()[span], b"\"\"" | b"[]"))
}

impl UsageDoc {
    /// Reads the usage object at `scan`; counts that are not whole numbers read as unset.
    fn read(scan: &mut Scanner<'_>) -> Option<UsageDoc> {
        let mut usage = UsageDoc::default();
        json::members(scan, |scan, name| {
            let slot = match name {
                b"prompt_tokens" => &mut usage.prompt_tokens,
                b"completion_tokens" => &mut usage.completion_tokens,
                b"input_tokens" => &mut usage.input_tokens,
                b"output_tokens" => &mut usage.output_tokens,
                _ => {
                    scan.value().ok()?;
                    return Some(());
                }
            };
            let (kind, span) = scan.value().ok()?;
            *slot = (kind == Kind::Number)
                .then(|| json::as_u64(&scan.bytes()[span]))
                .flatten();
            Some(())
        })?;
        Some(usage)
    }

    fn usage(&self) -> Option<Usage> {
        Some(Usage {
            input: self.prompt_tokens.or(self.input_tokens)?,
            output: self.completion_tokens.or(self.output_tokens),
        })
    }
}

/// A finish reason as the access log keeps it: OpenAI's own values without an allocation.
pub fn reason(text: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 5] = [
        "stop",
        "length",
        "tool_calls",
        "content_filter",
        "function_call",
    ];
    match KNOWN.iter().find(|known| **known == text) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(text.to_owned()),
    }
}

/// Usage and finish reason of a complete, non-streamed answer, found without parsing the
/// whole document: the last `"usage"` member (OpenAI-style servers write it after the
/// choices, so text inside a message cannot shadow it) and the first `"finish_reason"`.
/// Parsing the whole answer costs several times more, for two small fields.
pub fn scan(body: &[u8]) -> (Option<Usage>, Option<Cow<'static, str>>) {
    // Built once: a finder's setup costs more than the search in a short body.
    static FINISH: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"finish_reason\""));
    // From the end, by its one `u`: the usage object closes the answer, so the first `u`
    // found is nearly always the one. memmem's reverse search is a byte-by-byte two-way
    // search (about 430 instructions on the harness's 250-byte answer).
    let usage = memchr::memrchr_iter(b'u', body)
        .find(|&u| u > 0 && body[u - 1..].starts_with(b"\"usage\""))
        .map(|u| u - 1);
    let usage = usage.and_then(|at| {
        let mut rest = Scanner::new(value_after_key(&body[at + b"\"usage\"".len()..])?);
        UsageDoc::read(&mut rest)?.usage()
    });
    let finish = FINISH.find(body).and_then(|at| {
        let rest = value_after_key(&body[at + b"\"finish_reason\"".len()..])?;
        let text = rest.strip_prefix(b"\"")?;
        let end = memchr::memchr2(b'"', b'\\', text)?;
        (text[end] == b'"').then(|| reason(&String::from_utf8_lossy(&text[..end])))
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
    fn values_of_other_types_read_as_unset() {
        let doc = Doc::parse(
            br#"{"choices":[{"finish_reason":7,"delta":"x"}],"usage":"n/a","type":"\ud800"}"#,
        )
        .unwrap();
        assert_eq!(doc.finish_reason(), None);
        assert!(!doc.has_output() && !doc.is_usage_only());
        let usage = br#"{"usage":{"prompt_tokens":-1,"completion_tokens":2.5,"input_tokens":3}}"#;
        let usage = Doc::parse(usage).unwrap().usage();
        assert_eq!(
            usage,
            Some(Usage {
                input: 3,
                output: None
            })
        );
        assert!(Doc::parse(br#"{"choices":[1]}"#).is_none());
    }

    #[test]
    fn only_json_is_read() {
        // Chunks cut or altered anywhere: what parses is valid JSON.
        let chunk = br#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a\"b","tool_calls":null},"finish_reason":"st\u006fp"}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        let mut next = crate::llm::json::test_numbers(0x853c_49e6_748f_ea9b);
        let alphabet = b"{}[],:\"\\ 0123456789-.eEtrufalsnx";
        let mut read = 0;
        for _ in 0..20_000 {
            let mut text = chunk.to_vec();
            let at = next(text.len());
            match next(3) {
                0 => text[at] = alphabet[next(alphabet.len())],
                1 => text.truncate(at),
                _ => {
                    text.remove(at);
                }
            }
            if Doc::parse(&text).is_some() {
                read += 1;
                let json = serde_json::from_slice::<serde::de::IgnoredAny>(&text);
                assert!(json.is_ok(), "{:?}", String::from_utf8_lossy(&text));
            }
        }
        assert!(read > 1_000, "{read}");
    }

    #[test]
    fn not_json_is_none() {
        assert!(Doc::parse(b"[DONE]").is_none());
        assert!(Doc::parse(b"{broken").is_none());
    }
}

//! What OpenAI-style responses say about themselves: token usage, finish reason, and
//! whether a streamed chunk carries output.
//!
//! Both the Chat Completions shape (`prompt_tokens`, `completion_tokens`) and the Responses
//! shape (`input_tokens`, `output_tokens`) are read.

use std::sync::LazyLock;

use memchr::memmem::{Finder, FinderRev};
use serde::Deserialize;

/// Tokens of one request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    /// `None` for answers without output tokens (embeddings).
    pub output: Option<u64>,
}

/// The parts of a response body or chunk that sluice reads; everything else is skipped.
#[derive(Debug, Default, Deserialize)]
pub struct Doc {
    #[serde(default)]
    usage: Option<UsageDoc>,
    #[serde(default)]
    choices: Vec<Choice>,
    /// The Responses API nests its usage in `response` on its final event.
    #[serde(default)]
    response: Option<Box<Doc>>,
    /// The Responses API's event type, such as `response.output_text.delta`.
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct UsageDoc {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct Choice {
    finish_reason: Option<String>,
    delta: Option<Delta>,
    /// Legacy completions stream `text` instead of a delta.
    text: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Delta {
    content: Option<String>,
    reasoning_content: Option<String>,
    tool_calls: Option<serde::de::IgnoredAny>,
}

impl Doc {
    /// Parses a JSON document; `None` when it is not one.
    pub fn parse(bytes: &[u8]) -> Option<Doc> {
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
        self.choices.is_empty() && self.usage.is_some()
    }

    /// The first non-null finish reason among its choices.
    pub fn finish_reason(&self) -> Option<&str> {
        self.choices.iter().find_map(|c| c.finish_reason.as_deref())
    }

    /// Whether a streamed chunk carries output: text, reasoning or a tool call (or, in the
    /// Responses API, a `*.delta` event).
    pub fn has_output(&self) -> bool {
        if self.kind.as_deref().is_some_and(|k| k.ends_with(".delta")) {
            return true;
        }
        self.choices.iter().any(|c| {
            let delta = c.delta.as_ref();
            let text = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
            text(&c.text)
                || delta.is_some_and(|d| {
                    text(&d.content) || text(&d.reasoning_content) || d.tool_calls.is_some()
                })
        })
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

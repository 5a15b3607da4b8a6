//! What OpenAI-style responses say about themselves: token usage, finish reason, and
//! whether a streamed chunk carries output.
//!
//! Both the Chat Completions shape (`prompt_tokens`, `completion_tokens`) and the Responses
//! shape (`input_tokens`, `output_tokens`) are read.

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

#[cfg(test)]
mod tests {
    use super::*;

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

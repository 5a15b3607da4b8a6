//! What an OpenAI-style request asks for, read from its JSON body, and the one edit sluice
//! may make to it: asking a streamed answer to end with its token usage.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

/// The fields of a request body that sluice reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LlmRequest {
    pub model: Option<String>,
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it.
    pub include_usage: Option<bool>,
    /// The most output tokens it asks for: `max_completion_tokens`, `max_tokens` or
    /// `max_output_tokens` (Responses API), the first one set; for token-limit estimates.
    pub max_output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Fields {
    model: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    // Values, not numbers: a malformed one must not hide the model.
    #[serde(default)]
    max_completion_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_output_tokens: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

impl LlmRequest {
    /// Reads a request body; `None` when it is not a JSON object.
    pub fn parse(body: &[u8]) -> Option<LlmRequest> {
        let fields: Fields = serde_json::from_slice(body).ok()?;
        Some(LlmRequest {
            model: match fields.model {
                Some(serde_json::Value::String(model)) => Some(model),
                _ => None,
            },
            stream: fields.stream.unwrap_or(false),
            include_usage: fields.stream_options.and_then(|o| o.include_usage),
            max_output_tokens: [
                fields.max_completion_tokens,
                fields.max_tokens,
                fields.max_output_tokens,
            ]
            .iter()
            .find_map(|v| v.as_ref().and_then(serde_json::Value::as_u64)),
        })
    }

    /// Whether sluice should ask for usage: a streamed request that did not say.
    pub fn needs_usage(&self) -> bool {
        self.stream && self.include_usage.is_none()
    }
}

/// Adds `"stream_options":{"include_usage":true}` to a JSON object that has no
/// `stream_options`, keeping every other byte as it was. `None` if `body` is not an object.
pub fn add_include_usage(body: &[u8]) -> Option<Bytes> {
    const FIELD: &[u8] = br#""stream_options":{"include_usage":true}"#;
    let close = body.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if body[close] != b'}' {
        return None;
    }
    let before = body[..close]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())?;
    let empty = body[before] == b'{';
    let mut out = BytesMut::with_capacity(body.len() + FIELD.len() + 1);
    out.extend_from_slice(&body[..close]);
    if !empty {
        out.extend_from_slice(b",");
    }
    out.extend_from_slice(FIELD);
    out.extend_from_slice(&body[close..]);
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_stream_and_usage_option() {
        let r = LlmRequest::parse(
            br#"{"model":"gpt-4o","stream":true,"messages":[],"stream_options":{"include_usage":false}}"#,
        )
        .unwrap();
        assert_eq!(r.model.as_deref(), Some("gpt-4o"));
        assert!(r.stream);
        assert_eq!(r.include_usage, Some(false));
        assert!(!r.needs_usage());
        let r = LlmRequest::parse(br#"{"model":"m","stream":true}"#).unwrap();
        assert!(r.needs_usage());
        assert_eq!(r.max_output_tokens, None);
        let r = LlmRequest::parse(br#"{"model":"m","max_tokens":"x","max_output_tokens":9}"#);
        assert_eq!(r.unwrap().max_output_tokens, Some(9));
        let r = LlmRequest::parse(br#"{"max_tokens":5,"max_completion_tokens":7}"#);
        assert_eq!(r.unwrap().max_output_tokens, Some(7));
        let r = LlmRequest::parse(br#"{"model":7}"#).unwrap();
        assert_eq!(r.model, None);
        assert!(LlmRequest::parse(b"not json").is_none());
        assert!(LlmRequest::parse(b"[1,2]").is_none());
    }

    #[test]
    fn include_usage_is_added_without_touching_the_rest() {
        let body = br#"{"model":"m", "stream":true}  "#;
        let out = add_include_usage(body).unwrap();
        assert_eq!(
            &out[..],
            br#"{"model":"m", "stream":true,"stream_options":{"include_usage":true}}  "#
        );
        let parsed = LlmRequest::parse(&out).unwrap();
        assert_eq!(parsed.include_usage, Some(true));
        assert_eq!(
            &add_include_usage(b"{ }").unwrap()[..],
            br#"{ "stream_options":{"include_usage":true}}"#
        );
        assert!(add_include_usage(b"[1]").is_none());
    }
}

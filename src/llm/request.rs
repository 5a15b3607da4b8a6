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
    /// Whether the body has a `stream_options` key at all (maybe without `include_usage`).
    pub has_stream_options: bool,
}

#[derive(Deserialize)]
struct Fields {
    model: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<serde_json::Value>,
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
            include_usage: fields
                .stream_options
                .as_ref()
                .and_then(|o| o.get("include_usage"))
                .and_then(serde_json::Value::as_bool),
            // `"stream_options": null` deserializes as absent; the key is there all the same.
            // A mention inside a message only costs the slower, still correct, rewrite.
            has_stream_options: fields.stream_options.is_some()
                || memchr::memmem::find(body, b"\"stream_options\"").is_some(),
        })
    }

    /// Whether sluice should ask for usage: a streamed request that did not say.
    pub fn needs_usage(&self) -> bool {
        self.stream && self.include_usage.is_none()
    }
}

/// Sets `stream_options.include_usage = true`. Without `stream_options` the field is
/// appended and every other byte kept as it was; when `stream_options` is there without
/// `include_usage` (`{}`, `null`), the body is parsed and written again. `None` if `body` is
/// not a JSON object.
pub fn add_include_usage(body: &[u8], has_stream_options: bool) -> Option<Bytes> {
    if has_stream_options {
        let mut doc: serde_json::Value = serde_json::from_slice(body).ok()?;
        let object = doc.as_object_mut()?;
        let options = object
            .entry("stream_options")
            .or_insert_with(|| serde_json::json!({}));
        if !options.is_object() {
            *options = serde_json::json!({});
        }
        options
            .as_object_mut()?
            .insert("include_usage".to_owned(), serde_json::Value::Bool(true));
        return serde_json::to_vec(&doc).ok().map(Bytes::from);
    }
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
        let r = LlmRequest::parse(br#"{"model":7}"#).unwrap();
        assert_eq!(r.model, None);
        assert!(LlmRequest::parse(b"not json").is_none());
        assert!(LlmRequest::parse(b"[1,2]").is_none());
    }

    #[test]
    fn include_usage_is_added_without_touching_the_rest() {
        let body = br#"{"model":"m", "stream":true}  "#;
        let out = add_include_usage(body, false).unwrap();
        assert_eq!(
            &out[..],
            br#"{"model":"m", "stream":true,"stream_options":{"include_usage":true}}  "#
        );
        let parsed = LlmRequest::parse(&out).unwrap();
        assert_eq!(parsed.include_usage, Some(true));
        assert_eq!(
            &add_include_usage(b"{ }", false).unwrap()[..],
            br#"{ "stream_options":{"include_usage":true}}"#
        );
        assert!(add_include_usage(b"[1]", false).is_none());
    }

    #[test]
    fn an_existing_stream_options_gains_include_usage_without_a_duplicate_key() {
        for options in ["{}", "null", r#"{"continuous_usage_stats":true}"#] {
            let body = format!(r#"{{"model":"m","stream":true,"stream_options":{options}}}"#);
            let request = LlmRequest::parse(body.as_bytes()).unwrap();
            assert!(request.needs_usage() && request.has_stream_options);
            let out = add_include_usage(body.as_bytes(), true).unwrap();
            let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(doc["stream_options"]["include_usage"], true, "{options}");
            assert_eq!(
                std::str::from_utf8(&out)
                    .unwrap()
                    .matches("stream_options")
                    .count(),
                1
            );
        }
        let kept = add_include_usage(
            br#"{"stream":true,"stream_options":{"continuous_usage_stats":true}}"#,
            true,
        )
        .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&kept).unwrap();
        assert_eq!(doc["stream_options"]["continuous_usage_stats"], true);
    }
}

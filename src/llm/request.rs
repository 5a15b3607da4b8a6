//! What an OpenAI-style request asks for, read from its JSON body, and the one edit sluice
//! may make to it: asking a streamed answer to end with its token usage.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The fields of a request body that sluice reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LlmRequest {
    pub model: Option<String>,
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it.
    pub include_usage: Option<bool>,
    /// What the `model` field holds: the routing stage answers 400 for a body it needs whose
    /// model is missing or not a string.
    pub model_field: ModelField,
    /// Where the `model` value (quotes included) sits in the body, so that a rewrite can
    /// replace it and keep every other byte.
    pub model_span: Option<Range<usize>>,
    /// Where the prompt (`messages`, else `prompt`, else `input`) sits in the body: the
    /// consistent-hash key of `hash_on = "prompt"` is a hash of its first bytes.
    pub prompt_span: Option<Range<usize>>,
}

/// The state of a request's `model` field.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum ModelField {
    /// There is no `model` key (or it is `null`).
    #[default]
    Missing,
    /// A JSON string; its value is in [`LlmRequest::model`].
    String,
    /// A number, an object, an array or a boolean.
    NotString,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default, deserialize_with = "lenient_bool")]
    include_usage: Option<bool>,
}

/// A boolean, or `None` for any other JSON value.
fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => Some(b),
        _ => None,
    })
}

impl LlmRequest {
    /// Reads a request body; `None` when it is not a JSON object (a duplicate key, such as
    /// two `model` fields that two parsers could read differently, also makes it `None`).
    ///
    /// One pass of serde_json: the fields sluice does not read are checked for syntax and
    /// skipped, and the ones it does are borrowed as raw slices of `body`.
    pub fn parse(body: &[u8]) -> Option<LlmRequest> {
        // A struct also deserializes from a JSON array; only an object is a request.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return None;
        }
        let fields: Fields = serde_json::from_slice(body).ok()?;
        let span = |raw: &RawValue| {
            // The raw value borrows from `body`, so its address gives its offset.
            let start = (raw.get().as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
            Some(start..start + raw.get().len())
        };
        let (model, model_field) = match fields.model {
            None => (None, ModelField::Missing),
            Some(raw) if raw.get() == "null" => (None, ModelField::Missing),
            Some(raw) => match serde_json::from_str::<String>(raw.get()) {
                Ok(model) => (Some(model), ModelField::String),
                Err(_) => (None, ModelField::NotString),
            },
        };
        Some(LlmRequest {
            model_span: fields
                .model
                .filter(|_| model_field == ModelField::String)
                .and_then(span),
            prompt_span: fields
                .messages
                .or(fields.prompt)
                .or(fields.input)
                .and_then(span),
            model,
            model_field,
            // Fields of the wrong type are the backend's to refuse; sluice reads them as unset.
            stream: fields.stream.is_some_and(|raw| raw.get() == "true"),
            include_usage: fields
                .stream_options
                .and_then(|raw| serde_json::from_str::<StreamOptions>(raw.get()).ok())
                .and_then(|o| o.include_usage),
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
        let r = LlmRequest::parse(br#"{"model":7}"#).unwrap();
        assert_eq!(r.model, None);
        assert_eq!(r.model_field, ModelField::NotString);
        let r = LlmRequest::parse(br#"{"messages":[]}"#).unwrap();
        assert_eq!(r.model_field, ModelField::Missing);
        assert!(LlmRequest::parse(br#"{"model":"a","model":"b"}"#).is_none());
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

    #[test]
    fn spans_point_at_the_model_and_the_prompt() {
        let body =
            br#" {"temperature":0.5, "model" : "gpt\u002d4o", "messages":[{"role":"system"}]}"#;
        let r = LlmRequest::parse(body).unwrap();
        assert_eq!(r.model.as_deref(), Some("gpt-4o"));
        assert_eq!(&body[r.model_span.unwrap()], br#""gpt\u002d4o""#);
        assert_eq!(&body[r.prompt_span.unwrap()], br#"[{"role":"system"}]"#);
        let r = LlmRequest::parse(br#"{"model":"m","prompt":"hi"}"#).unwrap();
        assert_eq!(r.prompt_span, Some(22..26));
    }
}

//! What an OpenAI-style request asks for, read from its JSON body, and the one edit sluice
//! may make to it: asking a streamed answer to end with its token usage.

use std::fmt;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The fields of a request body that sluice reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LlmRequest {
    pub model: Option<String>,
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it.
    pub include_usage: Option<bool>,
    /// Whether the body has a `stream_options` key at all (maybe without `include_usage`).
    pub has_stream_options: bool,
    /// The most output tokens it asks for: `max_completion_tokens`, `max_tokens` or
    /// `max_output_tokens` (Responses API), the first one set; for token-limit estimates.
    pub max_output_tokens: Option<u64>,
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

impl LlmRequest {
    /// Reads a request body; `None` when it is not a JSON object, or when it names `model`
    /// or `stream` twice (two parsers could read such a body differently). Only the
    /// top-level members sluice needs are kept, borrowed as raw slices of `body`; the rest is
    /// checked for syntax and skipped without being built, so a large prompt costs one scan
    /// and no allocation. Fields of the wrong type are the backend's to refuse: sluice reads
    /// them as unset.
    pub fn parse(body: &[u8]) -> Option<LlmRequest> {
        LlmRequest::parse_with(body, true)
    }

    /// [`parse`](Self::parse), finding where the prompt is only when `prompt` is set:
    /// borrowing it as a raw slice costs a UTF-8 check of the whole prompt, and only
    /// `hash_on = "prompt"` needs it.
    pub fn parse_with(body: &[u8], prompt: bool) -> Option<LlmRequest> {
        let once = |raw_model| {
            use serde::Deserializer as _;
            let mut de = serde_json::Deserializer::from_slice(body);
            let visitor = TopLevel {
                body,
                prompt,
                raw_model,
            };
            let read = (&mut de).deserialize_map(visitor).ok()?;
            de.end().ok()?;
            Some(read)
        };
        match once(false)? {
            (request, false) => Some(request),
            // A model with escapes is not a slice of the body: read it again as raw JSON to
            // learn where it is. Rare: model names are plain ASCII.
            (_, true) => once(true).map(|(request, _)| request),
        }
    }

    /// Whether sluice should ask for usage: a streamed request that did not say.
    pub fn needs_usage(&self) -> bool {
        self.stream && self.include_usage.is_none()
    }
}

/// Visits the top-level object, keeping `model`, `stream`, `stream_options`, the output
/// token limits and where the prompt is. Its value says, besides the request, whether the
/// model's span is unknown because the string had escapes (only when not `raw_model`).
struct TopLevel<'a> {
    body: &'a [u8],
    /// Find the prompt's span.
    prompt: bool,
    /// Read `model` as raw JSON (slower, but its span is known even with escapes).
    raw_model: bool,
}

impl TopLevel<'_> {
    /// Where a raw value borrowed from the body sits in it.
    fn span(&self, raw: &RawValue) -> Option<Range<usize>> {
        let start = (raw.get().as_ptr() as usize).checked_sub(self.body.as_ptr() as usize)?;
        Some(start..start + raw.get().len())
    }

    /// Where a JSON string whose contents were borrowed from the body sits in it, quotes
    /// included.
    fn string_span(&self, contents: &str) -> Option<Range<usize>> {
        let at = (contents.as_ptr() as usize).checked_sub(self.body.as_ptr() as usize)?;
        let span = at.checked_sub(1)?..at + contents.len() + 1;
        let quoted =
            self.body.get(span.start) == Some(&b'"') && self.body.get(span.end - 1) == Some(&b'"');
        quoted.then_some(span)
    }
}

/// The `model` member: its name when it is a string, and the name as a slice of the body
/// when the string had no escapes.
struct ModelValue<'de> {
    name: Option<String>,
    borrowed: Option<&'de str>,
    field: ModelField,
}

impl<'de> de::Deserialize<'de> for ModelValue<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ModelValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(ModelValue {
                    name: Some(v.to_owned()),
                    borrowed: Some(v),
                    field: ModelField::String,
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ModelValue {
                    name: Some(v.to_owned()),
                    borrowed: None,
                    field: ModelField::String,
                })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ModelValue::other(ModelField::Missing))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(ModelValue::other(ModelField::NotString))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(ModelValue::other(ModelField::NotString))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(ModelValue::other(ModelField::NotString))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(ModelValue::other(ModelField::NotString))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ModelValue::other(ModelField::NotString))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ModelValue::other(ModelField::NotString))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl ModelValue<'_> {
    fn other(field: ModelField) -> Self {
        ModelValue {
            name: None,
            borrowed: None,
            field,
        }
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = (LlmRequest, bool);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut request = LlmRequest::default();
        // max_completion_tokens, max_tokens, max_output_tokens: the first one set counts.
        let mut limits = [None; 3];
        // messages, prompt, input: the first one present is the prompt.
        let mut prompts: [Option<&'de RawValue>; 3] = [None; 3];
        let (mut raw_model, mut stream) = (None::<&'de RawValue>, None::<&'de RawValue>);
        let mut model: Option<ModelValue<'de>> = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::MaxTokens(i) => limits[i] = map.next_value::<MaybeU64>()?.0,
                Key::Prompt(i) if self.prompt => prompts[i] = Some(map.next_value()?),
                Key::Model if model.is_some() || raw_model.is_some() => {
                    return Err(de::Error::duplicate_field("model"))
                }
                Key::Model if self.raw_model => raw_model = Some(map.next_value()?),
                Key::Model => model = Some(map.next_value()?),
                Key::Stream if stream.is_some() => {
                    return Err(de::Error::duplicate_field("stream"))
                }
                Key::Stream => stream = Some(map.next_value()?),
                Key::StreamOptions => {
                    request.has_stream_options = true;
                    request.include_usage = map.next_value::<Options>()?.0;
                }
                Key::Prompt(_) | Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        request.max_output_tokens = limits.into_iter().flatten().next();
        request.stream = stream.is_some_and(|raw| raw.get() == "true");
        request.prompt_span = prompts
            .into_iter()
            .flatten()
            .next()
            .and_then(|raw| self.span(raw));
        let mut escaped = false;
        match (model, raw_model) {
            (Some(value), _) => {
                request.model_field = value.field;
                request.model_span = value.borrowed.and_then(|name| self.string_span(name));
                escaped = value.field == ModelField::String && request.model_span.is_none();
                request.model = value.name;
            }
            (None, Some(raw)) if raw.get() != "null" => {
                match serde_json::from_str::<String>(raw.get()) {
                    Ok(name) => {
                        request.model = Some(name);
                        request.model_field = ModelField::String;
                        request.model_span = self.span(raw);
                    }
                    Err(_) => request.model_field = ModelField::NotString,
                }
            }
            (None, _) => {}
        }
        Ok((request, escaped))
    }
}

/// A top-level member name, matched without allocating.
enum Key {
    Model,
    Stream,
    StreamOptions,
    /// 0: `max_completion_tokens`, 1: `max_tokens`, 2: `max_output_tokens`.
    MaxTokens(usize),
    /// 0: `messages`, 1: `prompt`, 2: `input`.
    Prompt(usize),
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
                Ok(match name {
                    "model" => Key::Model,
                    "stream" => Key::Stream,
                    "stream_options" => Key::StreamOptions,
                    "max_completion_tokens" => Key::MaxTokens(0),
                    "max_tokens" => Key::MaxTokens(1),
                    "max_output_tokens" => Key::MaxTokens(2),
                    "messages" => Key::Prompt(0),
                    "prompt" => Key::Prompt(1),
                    "input" => Key::Prompt(2),
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_identifier(V)
    }
}

/// A token count when the value is a whole number; anything else (a malformed value must
/// not hide the model) reads as none.
struct MaybeU64(Option<u64>);

impl<'de> de::Deserialize<'de> for MaybeU64 {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeU64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(MaybeU64(Some(v)))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeU64(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeU64(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeU64(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MaybeU64(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MaybeU64(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeU64(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeU64(None))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `stream_options.include_usage` when it is a boolean.
struct Options(Option<bool>);

impl<'de> de::Deserialize<'de> for Options {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Options;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Options, E> {
                Ok(Options(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Options, A::Error> {
                let mut include_usage = None;
                while let Some(key) = map.next_key::<IncludeUsage>()? {
                    if key.0 {
                        include_usage = match map.next_value::<&RawValue>()?.get() {
                            "true" => Some(true),
                            "false" => Some(false),
                            _ => None,
                        };
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Options(include_usage))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Whether a `stream_options` member is `include_usage`.
struct IncludeUsage(bool);

impl<'de> de::Deserialize<'de> for IncludeUsage {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IncludeUsage;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<IncludeUsage, E> {
                Ok(IncludeUsage(name == "include_usage"))
            }
        }
        deserializer.deserialize_identifier(V)
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
        assert_eq!(r.max_output_tokens, None);
        let r = LlmRequest::parse(br#"{"model":7,"stream":"yes"}"#).unwrap();
        assert_eq!(r.model, None);
        assert_eq!(r.model_field, ModelField::NotString);
        assert!(!r.stream);
        let r = LlmRequest::parse(br#"{"messages":[],"model":null}"#).unwrap();
        assert_eq!(r.model_field, ModelField::Missing);
        assert!(LlmRequest::parse(br#"{"model":"a","model":"b"}"#).is_none());
        assert!(LlmRequest::parse(b"not json").is_none());
        assert!(LlmRequest::parse(b"[1,2]").is_none());
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
        // Without the prompt: the same model and span, no prompt span.
        let r = LlmRequest::parse_with(body, false).unwrap();
        assert_eq!(r.model.as_deref(), Some("gpt-4o"));
        assert_eq!(&body[r.model_span.unwrap()], br#""gpt\u002d4o""#);
        assert_eq!(r.prompt_span, None);
        let plain = br#"{"messages":[{"content":"\"model\":\"x\""}],"model": "llama-3" }"#;
        let r = LlmRequest::parse_with(plain, false).unwrap();
        assert_eq!(&plain[r.model_span.unwrap()], br#""llama-3""#);
        // A second model, escaped or not, is still a duplicate.
        assert!(LlmRequest::parse(br#"{"model":"a","model":"\u0062"}"#).is_none());
        assert!(LlmRequest::parse(br#"{"model":"\u0062","model":"a"}"#).is_none());
    }
}

//! What an OpenAI-style request asks for, read from its JSON body, and the one edit sluice
//! may make to it: asking a streamed answer to end with its token usage.

use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};

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
}

impl LlmRequest {
    /// Reads a request body; `None` when it is not a JSON object. Only the top-level
    /// members sluice needs are kept; the rest is skipped without being built, so a large
    /// prompt costs one scan and no allocation.
    pub fn parse(body: &[u8]) -> Option<LlmRequest> {
        use serde::Deserializer as _;
        let mut de = serde_json::Deserializer::from_slice(body);
        let request = (&mut de).deserialize_map(TopLevel).ok()?;
        de.end().ok()?;
        Some(request)
    }

    /// Whether sluice should ask for usage: a streamed request that did not say.
    pub fn needs_usage(&self) -> bool {
        self.stream && self.include_usage.is_none()
    }
}

/// Visits the top-level object, keeping `model`, `stream` and `stream_options`.
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = LlmRequest;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LlmRequest, A::Error> {
        let mut request = LlmRequest::default();
        // max_completion_tokens, max_tokens, max_output_tokens: the first one set counts.
        let mut limits = [None; 3];
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::MaxTokens(i) => limits[i] = map.next_value::<MaybeU64>()?.0,
                Key::Model => request.model = map.next_value::<MaybeString>()?.0,
                Key::Stream => request.stream = map.next_value::<Option<bool>>()?.unwrap_or(false),
                Key::StreamOptions => {
                    request.has_stream_options = true;
                    request.include_usage = map.next_value::<Options>()?.0;
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        request.max_output_tokens = limits.into_iter().flatten().next();
        Ok(request)
    }
}

/// A top-level member name, matched without allocating.
enum Key {
    Model,
    Stream,
    StreamOptions,
    /// 0: `max_completion_tokens`, 1: `max_tokens`, 2: `max_output_tokens`.
    MaxTokens(usize),
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
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_identifier(V)
    }
}

/// `model` when it is a string; anything else reads as no model.
struct MaybeString(Option<String>);

impl<'de> de::Deserialize<'de> for MaybeString {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MaybeString, E> {
                Ok(MaybeString(Some(v.to_owned())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<MaybeString, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeString(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MaybeString, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeString(None))
            }
        }
        deserializer.deserialize_any(V)
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
                        include_usage = map.next_value::<Option<bool>>()?;
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
}

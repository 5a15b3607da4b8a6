//! What an OpenAI-style request asks for, read from its JSON body, and the one edit sluice
//! may make to it: asking a streamed answer to end with its token usage.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::json::{self, Kind, Scanner};

/// The fields of a request body that sluice reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LlmRequest {
    pub model: Option<Arc<str>>,
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
    /// top-level members sluice needs are read, from their places in `body`; the rest is
    /// checked for syntax and skipped without being built (`llm::json`), so a large prompt
    /// costs one scan and no allocation. Fields of the wrong type are the backend's to
    /// refuse: sluice reads them as unset.
    pub fn parse(body: &[u8]) -> Option<LlmRequest> {
        let mut scan = Scanner::new(body);
        let mut request = LlmRequest::default();
        // max_completion_tokens, max_tokens, max_output_tokens: the first one set counts.
        let mut limits = [None; 3];
        // messages, prompt, input: the first one present is the prompt.
        let mut prompts: [Option<Range<usize>>; 3] = [None, None, None];
        let (mut model, mut stream) = (None, None);
        json::members(&mut scan, |scan, name| {
            let key = Key::of(name)?;
            let (kind, value) = scan.value().ok()?;
            match key {
                Key::MaxTokens(i) => {
                    limits[i] = (kind == Kind::Number)
                        .then(|| json::as_u64(&body[value]))
                        .flatten()
                }
                Key::Prompt(i) => prompts[i] = Some(value),
                Key::Model if model.is_some() => return None,
                Key::Model => model = Some((kind, value)),
                Key::Stream if stream.is_some() => return None,
                Key::Stream => stream = Some(kind),
                Key::StreamOptions => {
                    request.has_stream_options = true;
                    request.include_usage = match kind {
                        Kind::Null => None,
                        Kind::Object => include_usage(&body[value])?,
                        _ => return None,
                    };
                }
                Key::Other => {}
            }
            Some(())
        })?;
        if !scan.at_end() {
            return None;
        }
        request.max_output_tokens = limits.into_iter().flatten().next();
        request.stream = stream == Some(Kind::True);
        request.prompt_span = prompts.into_iter().flatten().next();
        match model {
            Some((Kind::String, span)) => {
                request.model = Some(Arc::from(json::contents(&body[span.clone()])?.as_ref()));
                request.model_field = ModelField::String;
                request.model_span = Some(span);
            }
            Some((Kind::Null, _)) | None => {}
            Some(_) => request.model_field = ModelField::NotString,
        }
        Some(request)
    }

    /// Whether sluice should ask for usage: a streamed request that did not say.
    pub fn needs_usage(&self) -> bool {
        self.stream && self.include_usage.is_none()
    }
}

/// `include_usage` of a `stream_options` object (already checked for syntax) when it is a
/// boolean; `None` (the outer `Option`) when a member name is not a valid string.
fn include_usage(object: &[u8]) -> Option<Option<bool>> {
    let mut include_usage = None;
    json::members(&mut Scanner::new(object), |scan, name| {
        let (kind, _) = scan.value().ok()?;
        if name == b"include_usage" {
            include_usage = match kind {
                Kind::True => Some(true),
                Kind::False => Some(false),
                _ => None,
            };
        }
        Some(())
    })?;
    Some(include_usage)
}

/// A top-level member name sluice reads.
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

impl Key {
    /// The key of a member name (unescaped); `None` when the name is not UTF-8, which
    /// serde_json refuses too.
    fn of(name: &[u8]) -> Option<Key> {
        Some(match name {
            b"model" => Key::Model,
            b"stream" => Key::Stream,
            b"stream_options" => Key::StreamOptions,
            b"max_completion_tokens" => Key::MaxTokens(0),
            b"max_tokens" => Key::MaxTokens(1),
            b"max_output_tokens" => Key::MaxTokens(2),
            b"messages" => Key::Prompt(0),
            b"prompt" => Key::Prompt(1),
            b"input" => Key::Prompt(2),
            _ => {
                std::str::from_utf8(name).ok()?;
                Key::Other
            }
        })
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
    fn member_names_are_read_as_json_strings() {
        // An escaped name is the name it spells, so it cannot smuggle a second model.
        let r = LlmRequest::parse(br#"{"mod\u0065l":"a","str\u0065am":true}"#).unwrap();
        assert_eq!(r.model.as_deref(), Some("a"));
        assert!(r.stream);
        assert!(LlmRequest::parse(br#"{"model":"a","mod\u0065l":"b"}"#).is_none());
        // Names and models that are not valid strings make the body unreadable.
        assert!(LlmRequest::parse(b"{\"\xff\":1,\"model\":\"m\"}").is_none());
        assert!(LlmRequest::parse(b"{\"model\":\"\xff\"}").is_none());
        assert!(LlmRequest::parse(br#"{"\ud800":1}"#).is_none());
        // Other strings are passed over as serde_json passes over them.
        let r = LlmRequest::parse(b"{\"messages\":\"\xff\",\"model\":\"m\"}").unwrap();
        assert_eq!(r.model.as_deref(), Some("m"));
        assert!(LlmRequest::parse(br#"{"model":"m"} {}"#).is_none());
        assert!(LlmRequest::parse(br#"{"model":"m",}"#).is_none());
    }

    #[test]
    fn stream_options_is_an_object_or_null() {
        let r = LlmRequest::parse(br#"{"stream":true,"stream_options":null}"#).unwrap();
        assert!(r.has_stream_options && r.needs_usage());
        let r = LlmRequest::parse(br#"{"stream_options":{"include_usage":"yes"}}"#).unwrap();
        assert_eq!(r.include_usage, None);
        assert!(LlmRequest::parse(br#"{"stream_options":"x"}"#).is_none());
        assert!(LlmRequest::parse(br#"{"stream_options":{"\ud800":1}}"#).is_none());
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
        let plain = br#"{"messages":[{"content":"\"model\":\"x\""}],"model": "llama-3" }"#;
        let r = LlmRequest::parse(plain).unwrap();
        assert_eq!(&plain[r.model_span.unwrap()], br#""llama-3""#);
        // A second model, escaped or not, is still a duplicate.
        assert!(LlmRequest::parse(br#"{"model":"a","model":"\u0062"}"#).is_none());
        assert!(LlmRequest::parse(br#"{"model":"\u0062","model":"a"}"#).is_none());
    }
}

//! Model names: the `models` condition of a route, the aliases and prefix strips that turn a
//! public name into a backend's, the byte-exact rewrite of a body's `model`, and the
//! `GET /v1/models` list that sluice answers from its config.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use regex::Regex;

/// A route's `match.models`: exact names, prefixes (`llama-*`) and globs (`*-instruct`,
/// `qwen?-*`). Names are compared as sent, case-sensitively.
#[derive(Debug, Clone, Default)]
pub struct ModelMatch {
    exact: Vec<String>,
    prefixes: Vec<String>,
    globs: Vec<Regex>,
}

impl ModelMatch {
    /// Compiles the patterns. A pattern whose only wildcard is one trailing `*` is a prefix;
    /// any other `*` (any run of characters) or `?` (one character) makes it a glob, which
    /// must match the whole name. `Err` names the first bad pattern.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<ModelMatch, String> {
        let mut m = ModelMatch::default();
        for pattern in patterns {
            if pattern.is_empty() || pattern.len() > 256 {
                return Err(format!(
                    "model pattern `{pattern}` must be 1 to 256 characters"
                ));
            }
            let wild = |c: char| c == '*' || c == '?';
            match pattern.strip_suffix('*') {
                Some(prefix) if !prefix.contains(wild) => m.prefixes.push(prefix.to_owned()),
                _ if pattern.contains(wild) => m.globs.push(glob(pattern)?),
                _ => m.exact.push(pattern.to_owned()),
            }
        }
        Ok(m)
    }

    /// Whether `model` is one of the names.
    pub fn matches(&self, model: &str) -> bool {
        self.exact.iter().any(|e| e == model)
            || self.prefixes.iter().any(|p| model.starts_with(p.as_str()))
            || self.globs.iter().any(|g| g.is_match(model))
    }

    /// The exact names, which `GET /v1/models` can list (patterns cannot be listed).
    pub fn exact(&self) -> &[String] {
        &self.exact
    }
}

/// A glob as an anchored regex: `*` is any run, `?` one character, the rest literal.
fn glob(pattern: &str) -> Result<Regex, String> {
    let mut re = String::with_capacity(pattern.len() + 8);
    re.push('^');
    for c in pattern.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    re.push('$');
    Regex::new(&re).map_err(|e| format!("model pattern `{pattern}`: {e}"))
}

/// Public model names turned into backend names: first a provider prefix is stripped
/// (`openai/gpt-4o` → `gpt-4o`), then an alias maps the name (`gpt-4o` →
/// `Qwen2.5-72B-Instruct`).
#[derive(Debug, Clone, Default)]
pub struct ModelRewrite {
    pub strip_prefixes: Vec<String>,
    pub aliases: HashMap<String, String>,
}

impl ModelRewrite {
    pub fn is_empty(&self) -> bool {
        self.strip_prefixes.is_empty() && self.aliases.is_empty()
    }

    /// The name after this rewrite; borrowed when nothing changed.
    pub fn apply<'a>(&'a self, model: Cow<'a, str>) -> Cow<'a, str> {
        if self.is_empty() {
            return model;
        }
        let stripped = self
            .strip_prefixes
            .iter()
            .find_map(|p| model.strip_prefix(p.as_str()).map(str::len))
            .map(|rest_len| model.len() - rest_len);
        let model = match stripped {
            Some(cut) => match model {
                Cow::Borrowed(m) => Cow::Borrowed(&m[cut..]),
                Cow::Owned(m) => Cow::Owned(m[cut..].to_owned()),
            },
            None => model,
        };
        match self.aliases.get(model.as_ref()) {
            Some(alias) => Cow::Borrowed(alias.as_str()),
            None => model,
        }
    }
}

/// `body` with the JSON string at `span` replaced by `model`, every other byte kept.
pub fn replace_model(body: &Bytes, span: Range<usize>, model: &str) -> Bytes {
    // serde_json escapes what JSON needs escaped; a `String` always serializes.
    let quoted = serde_json::to_string(model).unwrap_or_else(|_| format!("\"{model}\""));
    let mut out = BytesMut::with_capacity(body.len() - span.len() + quoted.len());
    out.extend_from_slice(&body[..span.start]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&body[span.end..]);
    out.freeze()
}

/// The `GET /v1/models` answer for these public names, in the OpenAI list shape.
pub fn list_json(names: &[String]) -> Bytes {
    let data: Vec<_> = names
        .iter()
        .map(|id| serde_json::json!({ "id": id, "object": "model", "created": 0, "owned_by": "sluice" }))
        .collect();
    Bytes::from(serde_json::json!({ "object": "list", "data": data }).to_string())
}

/// The `GET /v1/models/{id}` answer for one public name.
pub fn model_json(id: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({ "id": id, "object": "model", "created": 0, "owned_by": "sluice" })
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_and_glob_patterns() {
        let m = ModelMatch::new(["gpt-4o", "llama-*", "*-instruct", "qwen?-72b"]).unwrap();
        assert!(m.matches("gpt-4o"));
        assert!(!m.matches("gpt-4o-mini"));
        assert!(!m.matches("GPT-4o"));
        assert!(m.matches("llama-3-70b"));
        assert!(m.matches("llama-"));
        assert!(m.matches("mistral-7b-instruct"));
        assert!(!m.matches("mistral-7b-instruct-v2"));
        assert!(m.matches("qwen2-72b"));
        assert!(!m.matches("qwen25-72b"));
        assert_eq!(m.exact(), ["gpt-4o".to_owned()]);
        // Regex syntax in a name is literal.
        let m = ModelMatch::new(["a.b*c"]).unwrap();
        assert!(m.matches("a.bXYZc"));
        assert!(!m.matches("aXbc"));
        assert!(ModelMatch::new([""]).is_err());
    }

    #[test]
    fn strip_then_alias() {
        let rewrite = ModelRewrite {
            strip_prefixes: vec!["openai/".into()],
            aliases: [("gpt-4o".to_owned(), "Qwen2.5-72B-Instruct".to_owned())].into(),
        };
        assert_eq!(
            rewrite.apply("openai/gpt-4o".into()),
            "Qwen2.5-72B-Instruct"
        );
        assert_eq!(rewrite.apply("gpt-4o".into()), "Qwen2.5-72B-Instruct");
        assert_eq!(rewrite.apply("openai/o1".into()), "o1");
        assert!(matches!(
            rewrite.apply("other".into()),
            Cow::Borrowed("other")
        ));
    }

    #[test]
    fn replace_keeps_every_other_byte() {
        let body = Bytes::from_static(br#"{ "model" : "gpt-4o" ,"x":1}"#);
        let out = replace_model(&body, 12..20, "a\"b");
        assert_eq!(&out[..], br#"{ "model" : "a\"b" ,"x":1}"#);
    }
}

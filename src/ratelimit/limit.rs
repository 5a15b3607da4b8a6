//! A compiled limit: what it counts, how much, keyed by what, and where its buckets live.

use super::bucket::Rate;
use super::key::KeyPart;
use super::metrics::Decisions;

/// What a limit counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Requests: each takes one token.
    Requests(Rate),
    /// LLM tokens: each request reserves an estimate before it is forwarded and is settled
    /// to its real usage when the answer ends.
    Tokens(Rate, Estimate),
    /// Requests in flight at once, from arrival to the end of the answer's body.
    Concurrent(u32),
}

/// How a request's tokens are estimated before its answer says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Prompt tokens are the body's bytes divided by this (4 by default: English text and
    /// JSON run at about 4 bytes per token).
    pub bytes_per_token: f64,
    /// Output tokens assumed when the request sets no `max_tokens`,
    /// `max_completion_tokens` or `max_output_tokens`.
    pub default_max_tokens: u64,
}

impl Estimate {
    /// The tokens reserved for a request of `body_len` bytes asking for at most
    /// `max_output` output tokens. A request without a body (`GET /v1/models`) generates
    /// nothing and reserves nothing.
    pub fn tokens(&self, body_len: usize, max_output: Option<u64>) -> f64 {
        if body_len == 0 {
            return 0.0;
        }
        let prompt = (body_len as f64 / self.bytes_per_token).ceil();
        prompt + max_output.unwrap_or(self.default_max_tokens) as f64
    }
}

/// Where a limit's buckets live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In this process: each replica enforces the limit on its own.
    Local,
    /// In Redis, shared by every replica.
    Redis(OnRedisError),
}

/// What a Redis-backed limit does while Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    /// Fail open: decide with a bucket in this process, so each replica enforces the limit
    /// on its own until Redis is back.
    Open,
    /// Fail closed: refuse with 503.
    Closed,
}

/// One `[[limits]]` entry, compiled.
#[derive(Debug)]
pub struct Limit {
    pub name: String,
    pub kind: Kind,
    /// What the bucket is keyed by; empty for one bucket for everyone.
    pub key: Vec<KeyPart>,
    pub backend: Backend,
    pub decisions: Decisions,
}

impl Limit {
    /// The rate of a bucket limit; `None` for a concurrency limit.
    pub fn rate(&self) -> Option<Rate> {
        match self.kind {
            Kind::Requests(rate) | Kind::Tokens(rate, _) => Some(rate),
            Kind::Concurrent(_) => None,
        }
    }

    /// Whether the key needs the request's model (so its body must be read).
    pub fn needs_model(&self) -> bool {
        self.key.contains(&KeyPart::Model)
    }

    /// `requests`, `tokens` or `concurrency`: the `type` of a 429 it causes.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Requests(_) => "requests",
            Kind::Tokens(..) => "tokens",
            Kind::Concurrent(_) => "concurrency",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_count_prompt_bytes_and_output() {
        let e = Estimate {
            bytes_per_token: 4.0,
            default_max_tokens: 256,
        };
        assert_eq!(e.tokens(401, Some(50)), 101.0 + 50.0);
        assert_eq!(e.tokens(1, None), 1.0 + 256.0);
        assert_eq!(e.tokens(0, None), 0.0);
    }
}

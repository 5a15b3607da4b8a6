//! The built-in mock model backend: an OpenAI-compatible server that lives inside the process.
//!
//! A backend URL such as `mock://local?tokens=16&delay=20ms` is answered here, without a socket.
//! The quick-start config, the integration tests and the benchmarks use it, so it behaves like a
//! real model server where the proxy can tell (status codes, JSON shapes, server-sent events with
//! one event per body frame, time to first token, token-by-token pacing) and costs next to nothing
//! where it cannot: a streamed answer is a small hand-written [`http_body::Body`] driven by one
//! timer, not a task and a channel, so thousands of streams can be in flight at once.
//!
//! # Endpoints
//!
//! - `POST /v1/chat/completions` and `POST /v1/completions`: answer `min(max_tokens, tokens)`
//!   words of lorem ipsum, one word per token, either as one JSON object after `n * delay`, or
//!   with `"stream": true` as server-sent events, `delay` before each token.
//!   `stream_options.include_usage` adds the final usage chunk.
//! - `POST /v1/embeddings`: 8-dimensional unit vectors, deterministic in the input text.
//! - `GET /v1/models`: one model, named after the backend.
//!
//! Prompt tokens are counted as whitespace-separated words (at least 1). Every response carries
//! `x-sluice-mock: <name>`. Bad input gets an OpenAI-style JSON error, never a panic.
//!
//! A WebSocket handshake to any path is answered by an echo server ([`websocket`]), so the
//! tunnel can be exercised without a backend.
//!
//! # Per-request overrides (for tests)
//!
//! - `x-mock-tokens: <n>` replaces the configured token count for this request (1 to 100000).
//! - `x-mock-delay: <humantime>` replaces the configured per-token delay (at most 1h).
//! - `x-mock-status: <code>` answers that status (400 to 599) with an OpenAI-style JSON error,
//!   whatever the method and path.
//! - `x-mock-fail-after: <n>` makes a streamed answer fail (a body error, as a crashed server
//!   gives) in place of token `n`.
//! - `x-mock-stall-after: <n>` makes a streamed answer stop sending, forever, in place of
//!   token `n`, with the connection held open.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Frame;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Sleep;

use crate::body::{self, Body, BoxError};

const DEFAULT_TOKENS: u32 = 16;
const MAX_TOKENS: u32 = 100_000;
const MAX_DELAY: Duration = Duration::from_secs(3600);
const EMBEDDING_DIMENSIONS: usize = 8;
/// The words a completion is made of; token `i` is `WORDS[i % WORDS.len()]`.
const WORDS: [&str; 8] = [
    "lorem ", "ipsum ", "dolor ", "sit ", "amet ", "sed ", "do ", "elit ",
];

const EXPECTED: &str = "expected `tokens` or `delay`";
const MOCK_HEADER: HeaderName = HeaderName::from_static("x-sluice-mock");
const TOKENS_HEADER: &str = "x-mock-tokens";
const DELAY_HEADER: &str = "x-mock-delay";
const STATUS_HEADER: &str = "x-mock-status";
const FAIL_HEADER: &str = "x-mock-fail-after";
const STALL_HEADER: &str = "x-mock-stall-after";

/// A fault injected into a streamed answer, in place of one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Fail(u32),
    Stall(u32),
}

/// An OpenAI-compatible model server that lives inside the process.
#[derive(Debug, Clone)]
pub struct MockBackend {
    name: Arc<str>,
    /// `name` as the value of the `x-sluice-mock` header, validated once.
    header: HeaderValue,
    tokens: u32,
    delay: Duration,
}

impl MockBackend {
    /// Parses `mock://<name>[?tokens=<n>][&delay=<humantime duration>]`. Defaults: tokens = 16,
    /// delay = 0.
    ///
    /// Errors are human sentences meant for config errors.
    pub fn from_uri(uri: &Uri) -> Result<MockBackend, String> {
        if uri.scheme_str() != Some("mock") {
            return Err(format!("`{uri}` is not a mock URI `mock://<name>`"));
        }
        let name = match uri.authority() {
            Some(a) if a.as_str().contains('@') || a.port().is_some() => {
                return Err(format!("the mock name `{a}` may not have a user or port"));
            }
            Some(a) if !a.host().is_empty() => a.host(),
            _ => return Err("a mock URI needs a name: `mock://<name>`".to_string()),
        };
        if !matches!(uri.path(), "" | "/") {
            return Err(format!("a mock URI has no path; found `{}`", uri.path()));
        }
        let header = HeaderValue::from_str(name)
            .map_err(|_| format!("the mock name `{name}` cannot be sent in a header"))?;
        let mut backend = MockBackend {
            name: name.into(),
            header,
            tokens: DEFAULT_TOKENS,
            delay: Duration::ZERO,
        };
        let query = uri.query().unwrap_or_default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("parameter `{pair}` needs a value, as in `{pair}=...`"))?;
            match key {
                "tokens" => backend.tokens = parse_tokens("tokens", value)?,
                "delay" => backend.delay = parse_delay("delay", value)?,
                _ => return Err(format!("unknown parameter `{key}`; {EXPECTED}")),
            }
        }
        Ok(backend)
    }

    /// The backend's name, the host part of its URI.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Answers one request. Never panics; bad input gets an OpenAI-style JSON error.
    pub async fn handle(&self, req: Request<Body>) -> Response<Body> {
        match self.serve(req).await {
            Ok(response) => response,
            Err(error) => self.mark(
                ApiError::bad_request(format!("cannot read the request body: {error}"))
                    .into_response(),
            ),
        }
    }

    /// Answers one request as a remote server would: a request body that cannot be read
    /// (the client went away, or it crossed the proxy's size limit) is a transport error
    /// for the caller to classify, not an answer.
    pub async fn serve(&self, req: Request<Body>) -> Result<Response<Body>, BoxError> {
        let response = match self.respond(req).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => error.into_response(),
            Err(body_error) => return Err(body_error),
        };
        Ok(self.mark(response))
    }

    fn mark(&self, mut response: Response<Body>) -> Response<Body> {
        response
            .headers_mut()
            .insert(MOCK_HEADER, self.header.clone());
        response
    }

    async fn respond(&self, req: Request<Body>) -> Result<ApiResult, BoxError> {
        let checked = (|| {
            forced_status(req.headers())?;
            let endpoint = route(req.method(), req.uri().path())?;
            let tokens = match header_str(req.headers(), TOKENS_HEADER)? {
                Some(value) => parse_tokens(TOKENS_HEADER, value).map_err(ApiError::bad_request)?,
                None => self.tokens,
            };
            let delay = match header_str(req.headers(), DELAY_HEADER)? {
                Some(value) => parse_delay(DELAY_HEADER, value).map_err(ApiError::bad_request)?,
                None => self.delay,
            };
            let fault = match (
                header_str(req.headers(), FAIL_HEADER)?,
                header_str(req.headers(), STALL_HEADER)?,
            ) {
                (Some(n), _) => Some(Fault::Fail(n.parse().map_err(|_| {
                    ApiError::bad_request(format!("{FAIL_HEADER}: not a number"))
                })?)),
                (None, Some(n)) => Some(Fault::Stall(n.parse().map_err(|_| {
                    ApiError::bad_request(format!("{STALL_HEADER}: not a number"))
                })?)),
                (None, None) => None,
            };
            Ok((endpoint, tokens, delay, fault))
        })();
        let (endpoint, tokens, delay, fault) = match checked {
            Ok(checked) => checked,
            Err(error) => return Ok(Err(error)),
        };
        let bytes = req.into_body().collect().await?.to_bytes();
        Ok(match endpoint {
            Endpoint::Chat => generate(Api::Chat, &bytes, tokens, delay, fault).await,
            Endpoint::Completions => generate(Api::Completions, &bytes, tokens, delay, fault).await,
            Endpoint::Embeddings => embeddings(&bytes),
            Endpoint::Models => Ok(self.models()),
        })
    }

    fn models(&self) -> Response<Body> {
        json_response(&json!({
            "object": "list",
            "data": [{
                "id": &*self.name, "object": "model", "created": 0, "owned_by": "sluice-mock",
            }],
        }))
    }
}

/// Parses a token count from 1 to [`MAX_TOKENS`]; `what` names the setting in the error.
fn parse_tokens(what: &str, value: &str) -> Result<u32, String> {
    match value.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_TOKENS).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{what}` must be a whole number from 1 to {MAX_TOKENS}"
        )),
    }
}

/// Parses a humantime delay of at most [`MAX_DELAY`]; `what` names the setting in the error.
fn parse_delay(what: &str, value: &str) -> Result<Duration, String> {
    let delay = humantime::parse_duration(value.trim())
        .map_err(|e| format!("`{what}`: invalid duration `{value}`: {e}"))?;
    if delay > MAX_DELAY {
        return Err(format!("`{what}` must be at most 1h"));
    }
    Ok(delay)
}

/// A header's value as text, or a 400 if it is not visible ASCII.
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    let text = |v: &'a HeaderValue| {
        v.to_str()
            .map_err(|_| ApiError::bad_request(format!("`{name}` is not text")))
    };
    headers.get(name).map(text).transpose()
}

/// Fails with the status asked for by `x-mock-status`, if any.
fn forced_status(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = header_str(headers, STATUS_HEADER)? else {
        return Ok(());
    };
    match value.trim().parse::<StatusCode>() {
        Ok(status) if status.is_client_error() || status.is_server_error() => {
            let message = format!("mock error forced by {STATUS_HEADER}: {status}");
            Err(ApiError::new(status, "mock_error", message))
        }
        _ => Err(ApiError::bad_request(format!(
            "`{STATUS_HEADER}` must be an error status from 400 to 599"
        ))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Models,
}

/// The endpoint for a method and path: 404 for an unknown path, 405 for a wrong method.
fn route(method: &Method, path: &str) -> Result<Endpoint, ApiError> {
    let (endpoint, allowed) = match path {
        "/v1/chat/completions" => (Endpoint::Chat, "POST"),
        "/v1/completions" => (Endpoint::Completions, "POST"),
        "/v1/embeddings" => (Endpoint::Embeddings, "POST"),
        "/v1/models" => (Endpoint::Models, "GET"),
        _ => {
            let message = format!("Unknown request URL: {method} {path}");
            return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_url", message));
        }
    };
    if method.as_str() != allowed {
        let message = format!("{method} is not allowed on {path}; use {allowed}");
        let status = StatusCode::METHOD_NOT_ALLOWED;
        let error = ApiError::new(status, "method_not_allowed", message);
        let allow = Some(allowed);
        return Err(ApiError { allow, ..error });
    }
    Ok(endpoint)
}

/// The two text-generation APIs, which differ only in their JSON shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Completions,
}

/// The fields of a chat, completions or embeddings request that the mock looks at.
#[derive(Debug, Deserialize)]
struct ApiRequest {
    model: Option<String>,
    messages: Option<Vec<Message>>,
    prompt: Option<Value>,
    input: Option<Value>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Deserialize)]
struct Message {
    content: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// Token counts of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage {
    prompt: u64,
    completion: u64,
}

impl Usage {
    fn to_json(self) -> Value {
        let total = self.prompt.saturating_add(self.completion);
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": total,
        })
    }
}

/// One answer to a chat or completions request, decided before any of it is sent.
#[derive(Debug)]
struct Completion {
    api: Api,
    /// `chatcmpl-mock-<hex>` or `cmpl-mock-<hex>`.
    id: String,
    model: String,
    /// How many tokens the answer has.
    tokens: u32,
    finish: &'static str,
    usage: Usage,
}

/// Answers a chat or completions request, streamed or not.
async fn generate(
    api: Api,
    bytes: &[u8],
    tokens: u32,
    delay: Duration,
    fault: Option<Fault>,
) -> ApiResult {
    let req: ApiRequest = parse_json(bytes)?;
    let model = require_model(req.model)?;
    let prompt = match (api, &req.prompt) {
        (Api::Chat, _) => {
            let contents = req
                .messages
                .iter()
                .flatten()
                .filter_map(|m| m.content.as_ref());
            contents.map(content_words).sum()
        }
        (Api::Completions, Some(prompt)) => {
            texts("prompt", prompt)?.into_iter().map(word_count).sum()
        }
        (Api::Completions, None) => 0,
    };
    let limit = req.max_completion_tokens.or(req.max_tokens);
    let n = limit.map_or(tokens, |limit| {
        u32::try_from(limit).unwrap_or(u32::MAX).min(tokens)
    });
    let completion = Completion {
        api,
        id: completion_id(api),
        model,
        tokens: n,
        finish: if n < tokens { "length" } else { "stop" },
        usage: Usage {
            prompt: prompt.max(1),
            completion: u64::from(n),
        },
    };
    if req.stream.unwrap_or(false) {
        let include_usage = req.stream_options.and_then(|o| o.include_usage);
        let include_usage = include_usage.unwrap_or(false);
        return Ok(EventStream::response(
            completion,
            include_usage,
            delay,
            fault,
        ));
    }
    let total_delay = delay.saturating_mul(n);
    if !total_delay.is_zero() {
        tokio::time::sleep(total_delay).await;
    }
    Ok(json_response(&completion.to_json()))
}

impl Completion {
    /// The whole answer as one `chat.completion` or `text_completion` object.
    fn to_json(&self) -> Value {
        let text: String = (0..self.tokens).map(word).collect();
        let (object, mut choice) = match self.api {
            Api::Chat => (
                "chat.completion",
                json!({ "message": { "role": "assistant", "content": text } }),
            ),
            Api::Completions => ("text_completion", json!({ "text": text })),
        };
        choice["index"] = json!(0);
        choice["logprobs"] = Value::Null;
        choice["finish_reason"] = json!(self.finish);
        json!({
            "id": self.id,
            "object": object,
            "created": unix_now(),
            "model": self.model,
            "choices": [choice],
            "usage": self.usage.to_json(),
        })
    }
}

/// Answers an embeddings request.
fn embeddings(bytes: &[u8]) -> ApiResult {
    let req: ApiRequest = parse_json(bytes)?;
    let model = require_model(req.model)?;
    let inputs = texts("input", req.input.as_ref().unwrap_or(&Value::Null))?;
    if inputs.is_empty() {
        return Err(ApiError::bad_request("`input` must not be empty"));
    }
    let prompt = inputs.iter().copied().map(word_count).sum::<u64>().max(1);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| json!({ "object": "embedding", "index": i, "embedding": embed(text) }))
        .collect();
    Ok(json_response(&json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": prompt, "total_tokens": prompt },
    })))
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_data() {
            "invalid_request"
        } else {
            "invalid_json"
        };
        let message = format!("invalid request body: {e}");
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    })
}

fn require_model(model: Option<String>) -> Result<String, ApiError> {
    let message = "you must provide a model parameter";
    model.ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "missing_model", message))
}

/// The strings of a field that holds a string or an array of strings.
fn texts<'a>(field: &str, value: &'a Value) -> Result<Vec<&'a str>, ApiError> {
    let invalid =
        || ApiError::bad_request(format!("`{field}` must be a string or an array of strings"));
    match value {
        Value::String(text) => Ok(vec![text]),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().ok_or_else(invalid))
            .collect(),
        _ => Err(invalid()),
    }
}

/// Words in a message `content`: a string, or an array of parts with `text`.
fn content_words(content: &Value) -> u64 {
    match content {
        Value::String(text) => word_count(text),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text")?.as_str())
            .map(word_count)
            .sum(),
        _ => 0,
    }
}

fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The text of token `i`.
fn word(i: u32) -> &'static str {
    WORDS[i as usize % WORDS.len()]
}

fn completion_id(api: Api) -> String {
    let prefix = match api {
        Api::Chat => "chatcmpl",
        Api::Completions => "cmpl",
    };
    format!("{prefix}-mock-{:016x}", fastrand::u64(..))
}

fn unix_now() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH);
    since_epoch.map_or(0, |d| d.as_secs())
}

/// A unit vector that depends only on `text`: FNV-1a seeds a SplitMix64 sequence.
fn embed(text: &str) -> [f32; EMBEDDING_DIMENSIONS] {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut vector = [0.0_f32; EMBEDDING_DIMENSIONS];
    for x in &mut vector {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // The top 24 bits, exact in an f32, spread over [-1, 1).
        *x = (z >> 40) as f32 / (1u32 << 23) as f32 - 1.0;
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// Where an [`EventStream`] is: the chunk it sends next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The chat role chunk, `delta: {role: "assistant", content: ""}`.
    Role,
    /// Token `i`, after `delay`.
    Token(u32),
    /// No text, and the `finish_reason`.
    Finish,
    /// `choices: []` and the usage figures.
    Usage,
    /// `data: [DONE]`.
    Done,
    End,
}

impl Phase {
    /// Token `i` of `tokens`, or the finish chunk after the last.
    fn token(i: u32, tokens: u32) -> Phase {
        if i < tokens {
            Phase::Token(i)
        } else {
            Phase::Finish
        }
    }
}

pin_project_lite::pin_project! {
    /// The body of a streamed completion: one server-sent event per frame, `delay` before each
    /// token. A single timer is re-armed from its own deadline, so pacing does not drift.
    struct EventStream {
        completion: Completion,
        // `data: {"id":...,"object":...,"created":...,"model":...,` which starts every chunk.
        head: String,
        include_usage: bool,
        delay: Duration,
        phase: Phase,
        fault: Option<Fault>,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl EventStream {
    /// The `text/event-stream` response that streams `completion`.
    fn response(
        completion: Completion,
        include_usage: bool,
        delay: Duration,
        fault: Option<Fault>,
    ) -> Response<Body> {
        let (object, phase) = match completion.api {
            Api::Chat => ("chat.completion.chunk", Phase::Role),
            Api::Completions => ("text_completion", Phase::token(0, completion.tokens)),
        };
        let (id, model, created) = (&completion.id, Value::from(&*completion.model), unix_now());
        let head = format!(
            r#"data: {{"id":"{id}","object":"{object}","created":{created},"model":{model},"#
        );
        let sleep = (!delay.is_zero()).then(|| tokio::time::sleep(delay));
        let stream = EventStream {
            completion,
            head,
            include_usage,
            delay,
            phase,
            fault,
            sleep,
        };
        let mut response = Response::new(body::boxed(stream));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

impl Completion {
    /// The `data: {...}\n\n` event of `phase` (not `Done`), whose JSON starts with `head`.
    fn event(&self, head: &str, phase: Phase, include_usage: bool) -> String {
        if phase == Phase::Usage {
            let usage = self.usage.to_json();
            return format!("{head}\"choices\":[],\"usage\":{usage}}}\n\n");
        }
        let (open, text, close) = match (self.api, phase) {
            (Api::Chat, Phase::Role) => (r#""delta":{"role":"assistant","content":""}"#, "", ""),
            (Api::Chat, Phase::Token(i)) => (r#""delta":{"content":""#, word(i), r#""}"#),
            (Api::Chat, _) => (r#""delta":{}"#, "", ""),
            (Api::Completions, Phase::Token(i)) => (r#""text":""#, word(i), r#"""#),
            (Api::Completions, _) => (r#""text":"""#, "", ""),
        };
        let quoted;
        let finish = if phase == Phase::Finish {
            quoted = format!("\"{}\"", self.finish);
            &quoted
        } else {
            "null"
        };
        // OpenAI sends `"usage":null` on every other chunk when usage was asked for.
        let usage = if include_usage {
            r#","usage":null"#
        } else {
            ""
        };
        let choices = r#""choices":[{"index":0,"#;
        let reason = r#","logprobs":null,"finish_reason":"#;
        [
            head, choices, open, text, close, reason, finish, "}]", usage, "}\n\n",
        ]
        .concat()
    }
}

impl http_body::Body for EventStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let phase = *this.phase;
        match (phase, *this.fault) {
            (Phase::Token(i), Some(Fault::Fail(at))) if i == at => {
                *this.phase = Phase::End;
                return Poll::Ready(Some(Err("the mock backend failed mid-stream".into())));
            }
            // Never woken: the stream stays open and silent.
            (Phase::Token(i), Some(Fault::Stall(at))) if i == at => return Poll::Pending,
            _ => {}
        }
        if let (Phase::Token(_), Some(mut sleep)) = (phase, this.sleep.as_mut().as_pin_mut()) {
            ready!(sleep.as_mut().poll(cx));
            if let Some(next) = sleep.deadline().checked_add(*this.delay) {
                sleep.reset(next);
            }
        }
        *this.phase = match phase {
            Phase::Role => Phase::token(0, this.completion.tokens),
            Phase::Token(i) => Phase::token(i + 1, this.completion.tokens),
            Phase::Finish if *this.include_usage => Phase::Usage,
            Phase::Finish | Phase::Usage => Phase::Done,
            Phase::Done => Phase::End,
            Phase::End => return Poll::Ready(None),
        };
        let event = match phase {
            Phase::Done => Bytes::from_static(b"data: [DONE]\n\n"),
            _ => Bytes::from(this.completion.event(this.head, phase, *this.include_usage)),
        };
        Poll::Ready(Some(Ok(Frame::data(event))))
    }

    fn is_end_stream(&self) -> bool {
        self.phase == Phase::End
    }
}

/// A response, or an error that becomes one.
type ApiResult = Result<Response<Body>, ApiError>;

/// An OpenAI-style error on its way to becoming a response.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The `allow` header of a 405.
    allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let (message, allow) = (message.into(), None);
        ApiError {
            status,
            code,
            message,
            allow,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn into_response(self) -> Response<Body> {
        let kind = if self.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let error = json!({ "message": self.message, "type": kind, "code": self.code });
        let mut response = json_response(&json!({ "error": error }));
        *response.status_mut() = self.status;
        if let Some(allow) = self.allow.map(HeaderValue::from_static) {
            response.headers_mut().insert(ALLOW, allow);
        }
        response
    }
}

/// A 200 with a JSON body.
fn json_response(value: &Value) -> Response<Body> {
    let mut response = Response::new(body::full(value.to_string()));
    let json = HeaderValue::from_static("application/json");
    response.headers_mut().insert(CONTENT_TYPE, json);
    response
}
pub mod websocket;

#[cfg(test)]
mod tests;

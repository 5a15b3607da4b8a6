//! The one place where errors become HTTP responses.
//!
//! Every failure on the request path is a [`ProxyError`]. Its status, OpenAI-style `type` and
//! `code` come from one exhaustive `match` with no `_` arm, so a new variant forces a decision.

use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, Body};

/// A failure on the request path, named for where it happened.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The client: no route matches the request.
    #[error("no route matches {method} {path}")]
    NoRoute { method: String, path: String },
    /// The client: the request body is larger than `server.max_request_body`.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// The client: the request cannot be forwarded as it is (bad URI, bad header value).
    #[error("malformed request: {0}")]
    BadRequest(String),
    /// The client: an HTTP/1.1 request head that cannot be served as sent.
    #[error("{0}")]
    BadHead(&'static str),
    /// The client: an HTTP/1.1 request head over `max_header_size` or `max_headers`.
    #[error("{0}")]
    HeadTooLarge(&'static str),
    /// The client: a transfer coding other than a lone `chunked`.
    #[error("transfer codings other than chunked are not supported")]
    UnsupportedCoding,
    /// The client: an HTTP version other than 1.0 and 1.1 on an HTTP/1.1 connection.
    #[error("only HTTP/1.0 and HTTP/1.1 are served here")]
    VersionNotSupported,
    /// The client: a WebSocket upgrade on a route that does not allow one.
    #[error("route `{route}` does not accept WebSocket upgrades")]
    UpgradeNotAllowed { route: String },
    /// The client: a WebSocket handshake that is not one.
    #[error("invalid WebSocket handshake: {0}")]
    BadHandshake(&'static str),
    /// The client: its request body could not be read (it went away, or broke the framing).
    #[error("{0}")]
    ClientBody(String),
    /// The client: it stopped sending a request body sluice was reading whole.
    #[error("no more of the request body arrived within {0:?}")]
    BodyReadTimeout(Duration),
    /// The client: a route needs the JSON body's `model`, and the body is not JSON.
    #[error("the request body is not a JSON object: {0}")]
    InvalidJson(String),
    /// The client: a route needs the JSON body's `model`, and there is none.
    #[error("the request body has no `model`; this endpoint routes on it")]
    ModelMissing,
    /// The client: the JSON body's `model` is not a string.
    #[error("`model` must be a string")]
    ModelNotString,
    /// The client: `GET …/models/{id}` of a name that sluice does not serve.
    #[error("the model `{0}` does not exist")]
    ModelNotFound(String),
    /// The cluster has no backend to send to.
    #[error("cluster `{cluster}` has no backend available")]
    NoBackend { cluster: String },
    /// No backend of the cluster (nor of the route's fallbacks) is healthy, and the cluster's
    /// `panic_mode` is `fail`.
    #[error("cluster `{cluster}` has no healthy backend")]
    NoHealthyBackend { cluster: String },
    /// The backend is at its concurrency cap and its queue is full or timed out; the client
    /// may come back after `retry_after` seconds.
    #[error("cluster `{cluster}` is at its concurrency limit; retry after {retry_after}s")]
    BackendOverloaded { cluster: String, retry_after: u64 },
    /// The upstream: the TCP connection was refused, reset or could not be made.
    #[error("cannot connect to the upstream: {0}")]
    Connect(String),
    /// The upstream: the TLS handshake failed (its certificate did not verify, no common
    /// protocol version, a client certificate it refused).
    #[error("TLS handshake with the upstream failed: {0}")]
    UpstreamTls(String),
    /// The upstream: no connection within the connect timeout.
    #[error("connecting to the upstream timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The upstream: no response headers within the response-header timeout.
    #[error("the upstream sent no response headers within {0:?}")]
    ResponseHeaderTimeout(Duration),
    /// The upstream: no body byte within the first-byte timeout after the response head.
    #[error("the upstream sent no body within {0:?} of its response head")]
    FirstByteTimeout(Duration),
    /// The upstream: a pause between two body chunks longer than the idle timeout.
    #[error("the upstream sent nothing for {0:?} in the middle of its response")]
    IdleTimeout(Duration),
    /// The upstream: the whole exchange took longer than the total timeout.
    #[error("the upstream exchange exceeded the total timeout of {0:?}")]
    TotalTimeout(Duration),
    /// The upstream: no response head within the cluster's `retry.per_try_timeout`.
    #[error("the upstream sent no response headers within the per-try timeout of {0:?}")]
    PerTryTimeout(Duration),
    /// The upstream: an HTTP/2 backend refused the stream before processing it.
    #[error("the upstream refused the stream: {0}")]
    RefusedStream(String),
    /// The upstream: it answered with something that is not HTTP, or closed early.
    #[error("the upstream failed: {0}")]
    Upstream(String),
    /// The client: the route requires an API key and the request carries none.
    #[error(
        "route `{route}` requires an API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`"
    )]
    MissingApiKey { route: String },
    /// The client: the API key is not one of a consumer's. The key is never repeated.
    #[error("the API key is not valid")]
    InvalidApiKey,
    /// The client: its consumer may not use this route.
    #[error("consumer `{consumer}` may not use route `{route}`")]
    RouteNotAllowed { consumer: String, route: String },
    /// The client: its consumer may not use the model it asked for (or must name one).
    #[error("consumer `{consumer}` may not use {}", model.as_deref().map_or("a request without a model".to_owned(), |m| format!("model `{m}`")))]
    ModelNotAllowed {
        consumer: String,
        model: Option<String>,
    },
    /// The client: a rate limit has no room; try again after `retry_after`.
    #[error("rate limit `{limit}` exceeded ({kind}); try again in {}s", retry_secs(*retry_after))]
    RateLimited {
        limit: String,
        /// `requests`, `tokens` or `concurrency`: the OpenAI-style error `type`.
        kind: &'static str,
        retry_after: Duration,
    },
    /// Internal: a Redis-backed limit that fails closed could not reach Redis.
    #[error(
        "rate limit `{limit}` cannot be checked now (its store is unreachable); try again shortly"
    )]
    LimiterUnavailable {
        limit: String,
        retry_after: Duration,
    },
}

/// How a [`ProxyError`] is reported: the status and the OpenAI-style `type` and `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorClass {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
}

impl ProxyError {
    /// The status, `type` and `code` of this error.
    pub fn class(&self) -> ErrorClass {
        use ProxyError::*;
        let (status, kind, code) = match self {
            NoRoute { .. } => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "route_not_found",
            ),
            BodyTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
            ),
            BadRequest(_) | BadHead(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "bad_request",
            ),
            HeadTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "invalid_request_error",
                "request_header_fields_too_large",
            ),
            UnsupportedCoding => (
                StatusCode::NOT_IMPLEMENTED,
                "invalid_request_error",
                "not_implemented",
            ),
            VersionNotSupported => (
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "invalid_request_error",
                "http_version_not_supported",
            ),
            UpgradeNotAllowed { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "websocket_not_allowed",
            ),
            BadHandshake(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_websocket_handshake",
            ),
            ClientBody(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "request_body_error",
            ),
            BodyReadTimeout(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "request_timeout",
            ),
            InvalidJson(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_json",
            ),
            ModelMissing => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "model_required",
            ),
            ModelNotString => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_model",
            ),
            ModelNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            NoBackend { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_error",
                "no_backend_available",
            ),
            NoHealthyBackend { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_error",
                "no_healthy_backend",
            ),
            BackendOverloaded { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_error",
                "backend_overloaded",
            ),
            Connect(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_connect_error",
            ),
            UpstreamTls(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_tls_error",
            ),
            ConnectTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_connect_timeout",
            ),
            ResponseHeaderTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_response_header_timeout",
            ),
            FirstByteTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_first_byte_timeout",
            ),
            IdleTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_idle_timeout",
            ),
            TotalTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_total_timeout",
            ),
            PerTryTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_per_try_timeout",
            ),
            RefusedStream(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_refused_stream",
            ),
            Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream_error", "bad_gateway"),
            MissingApiKey { .. } => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "missing_api_key",
            ),
            InvalidApiKey => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
            ),
            RouteNotAllowed { .. } => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "route_not_allowed",
            ),
            ModelNotAllowed { .. } => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "model_not_allowed",
            ),
            RateLimited { kind, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, *kind, "rate_limit_exceeded")
            }
            LimiterUnavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "rate_limiter_unavailable",
            ),
        };
        ErrorClass { status, kind, code }
    }

    /// The response a client receives for this error: the JSON body, and `Retry-After` on
    /// 429 and 503 from rate limits and full backends, `WWW-Authenticate: Bearer` on 401.
    pub fn into_response(self) -> Response<Body> {
        let class = self.class();
        let mut response = json_error(class.status, &self.to_string(), class.kind, class.code);
        let headers = response.headers_mut();
        if let ProxyError::RateLimited { retry_after, .. }
        | ProxyError::LimiterUnavailable { retry_after, .. } = &self
        {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_secs(*retry_after)),
            );
        }
        if let ProxyError::BackendOverloaded { retry_after, .. } = &self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if let ProxyError::MissingApiKey { .. } | ProxyError::InvalidApiKey = &self {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Whole seconds to wait, rounded up, at least 1: a client that waits this long finds room.
fn retry_secs(wait: Duration) -> u64 {
    let secs = wait.as_nanos().div_ceil(1_000_000_000).max(1);
    u64::try_from(secs).unwrap_or(u64::MAX)
}

/// An OpenAI-style error response: `{"error":{"message","type","code"}}`.
pub fn json_error(status: StatusCode, message: &str, kind: &str, code: &str) -> Response<Body> {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "code": code }
    });
    let mut response = Response::new(body::full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_504_and_connect_errors_502() {
        let d = Duration::from_secs(1);
        assert_eq!(ProxyError::ConnectTimeout(d).class().status, 504);
        assert_eq!(ProxyError::ResponseHeaderTimeout(d).class().status, 504);
        assert_eq!(ProxyError::TotalTimeout(d).class().status, 504);
        assert_eq!(ProxyError::Connect("refused".into()).class().status, 502);
        assert_eq!(ProxyError::Upstream("garbage".into()).class().status, 502);
        let tls = ProxyError::UpstreamTls("invalid peer certificate: UnknownIssuer".into());
        assert_eq!(tls.class().status, 502);
        assert_eq!(tls.class().code, "upstream_tls_error");
    }
}

//! The request path, in call order: route (reading the body first when a route needs the
//! model) → authenticate → limit the body → read an LLM request → rate limits → dispatch
//! (split, pick a backend, forward, retry, fall back) → stream the answer back → count and
//! log.
//!
//! [`Proxy::handle`] cannot fail: it calls [`Proxy::handle_inner`], which returns a
//! `Result`, and turns an error into an OpenAI-style JSON answer in one place.

mod admit;
pub mod auth;
pub mod balance;
pub mod buffer;
pub mod dispatch;
pub mod forward;
pub mod headers;
pub mod limit;
pub mod models_endpoint;
pub mod record;
pub mod retry;
pub mod route;
pub mod stream;
pub mod upgrade;

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use tokio::time::Instant;

use crate::body::{self, Body};
use crate::config::file::LlmMode;
use crate::config::snapshot::Route;
use crate::config::{ServerSettings, Snapshot};
use crate::error::ProxyError;
use crate::llm::request::{add_include_usage, LlmRequest, ModelField};
use crate::llm::tap::LlmTap;
use crate::metrics::Metrics;
use crate::ratelimit::key::client_ip;
use crate::ratelimit::Limiter;
use buffer::RequestBody;
use dispatch::{Call, Needs, Outgoing};
use forward::Downstream;
use limit::LimitedBody;
use record::{Entry, LlmEntry, Record, CLIENT_CLOSED};
use route::{Lookup, Matched, ModelQuery};
use stream::{Observed, StreamOptions};

/// What the listener knows about a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's IP as header text, made once per connection for `X-Forwarded-For`.
    pub peer_ip: HeaderValue,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// The subject of the client's verified TLS certificate (mTLS), sent to routing and
    /// upstream as `x-sluice-client-subject` and written to the access log.
    pub client_subject: Option<HeaderValue>,
}

/// The proxy: shared by every connection of every listener.
#[derive(Debug)]
pub struct Proxy {
    /// The running routing config; swapped whole on reload.
    pub state: Arc<ArcSwap<Snapshot>>,
    pub settings: ServerSettings,
    pub metrics: Arc<Metrics>,
    pub access_log: bool,
    /// Every rate limit's buckets and in-flight counts; outlives reloads.
    pub limiter: Arc<Limiter>,
}

impl Proxy {
    /// Serves one request. Never fails: errors become JSON answers here.
    ///
    /// An `async move` block rather than an `async fn`, whose arguments would each be held
    /// twice (as arguments and as the locals they are moved into) in a future that both
    /// servers copy into a box for every request.
    #[allow(clippy::manual_async_fn)]
    pub fn handle<B>(
        &self,
        req: Request<B>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<Body>> + Send + '_
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<body::BoxError>,
    {
        async move {
            self.metrics.in_flight.inc();
            let mut record = Record {
                snapshot: self.state.load_full(),
                metrics: Arc::clone(&self.metrics),
                access_log: self.access_log,
                entry: Entry {
                    started: Instant::now(),
                    request_id: None,
                    peer: conn.peer,
                    client_subject: conn.client_subject.clone(),
                    method: req.method().clone(),
                    uri: req.uri().clone(),
                    route: None,
                    target: 0,
                    cluster: None,
                    backend: None,
                    attempts: 0,
                    in_flight: None,
                    // Until a response exists: if this future is dropped, the client left.
                    status: CLIENT_CLOSED,
                    bytes_in: 0,
                    bytes_out: 0,
                    upstream_time: None,
                    error: None,
                    outcome: "client_gone",
                    llm: None,
                    consumer: None,
                    limited: None,
                },
            };
            // Not boxed: both servers box this whole future (`listener::h1`, and the service
            // future handed to hyper), so a box here would be a second allocation of a few KiB,
            // and a second copy.
            let (parts, incoming) = req.into_parts();
            let inner =
                self.handle_inner(parts, incoming, &conn, &record.snapshot, &mut record.entry);
            let mut response = match inner.await {
                Ok(response) => response,
                Err(err) => {
                    record.entry.error = Some(err.class().code);
                    if matches!(
                        err,
                        ProxyError::Upstream(_)
                            | ProxyError::Connect(_)
                            | ProxyError::UpstreamTls(_)
                    ) {
                        tracing::warn!(error = %err, "upstream request failed");
                    }
                    err.into_response()
                }
            };
            let entry = &mut record.entry;
            if let Some(id) = &entry.request_id {
                response
                    .headers_mut()
                    .insert(headers::REQUEST_ID.clone(), id.clone());
            }
            if let Some(limited) = &entry.limited {
                limited.headers.apply(response.headers_mut());
            }
            entry.status = response.status().as_u16();
            entry.outcome = "complete";
            let route = entry.route.and_then(|i| record.snapshot.routes.get(i));
            let timeouts = route.map(|r| r.timeouts).unwrap_or_default();
            let mut options = StreamOptions::default();
            if let (Some(llm), Some(route)) = (entry.llm.as_deref_mut(), route) {
                // Only upstream answers are read: sluice's own errors carry no usage.
                if entry.error.is_none() {
                    let tap = LlmTap::new(
                        response
                            .headers()
                            .get(header::CONTENT_TYPE)
                            .map(HeaderValue::as_bytes),
                    );
                    if tap.streamed {
                        self.metrics.llm.active_streams.inc();
                        options.strip_usage = llm.usage_injected;
                        options.error_event = route.sse_error_event;
                    }
                    llm.tap = Some(tap);
                }
            }
            if options.strip_usage {
                response.headers_mut().remove(header::CONTENT_LENGTH);
            }
            response.map(|inner| Body::new(Observed::new(inner, record, timeouts, options)))
        }
    }

    /// The stages that can fail.
    ///
    /// An `async move` block for the reason [`Proxy::handle`] is one.
    #[allow(clippy::manual_async_fn)]
    fn handle_inner<'a, B>(
        &'a self,
        mut parts: http::request::Parts,
        incoming: B,
        conn: &'a ConnInfo,
        snapshot: &'a Snapshot,
        record: &'a mut Entry,
    ) -> impl Future<Output = Result<Response<Body>, ProxyError>> + Send + 'a
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<body::BoxError>,
    {
        async move {
            record.request_id = Some(headers::ensure_request_id(&mut parts.headers));
            headers::set_client_subject(&mut parts.headers, conn.client_subject.as_ref());

            let limit = self.settings.max_request_body;
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let mut body = RequestBody::Stream(LimitedBody::new(incoming, limit));

            // Route: host, path, method, headers, and the model when a route needs it.
            // An absolute-form target's authority (HTTP/1.1) or `:authority` (HTTP/2) wins over
            // `Host` (RFC 9112 §3.2.2).
            let client_host =
                authority_header(&parts.uri).or_else(|| parts.headers.get(header::HOST).cloned());
            let host = client_host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .map_or(Cow::Borrowed(""), normalize_host);
            let websocket = upgrade::is_websocket(&parts);
            let mut parsed: Option<LlmRequest> = None;
            let lookup = |model| {
                let (path, method, headers) = (parts.uri.path(), &parts.method, &parts.headers);
                snapshot.router.lookup(&host, path, method, headers, model)
            };
            let matched = match lookup(ModelQuery::Unknown) {
                Lookup::Found(matched) => Some(matched),
                Lookup::NotFound { .. } => None,
                // A WebSocket handshake has no body to read a model from.
                Lookup::NeedsModel if websocket => match lookup(ModelQuery::Known(None)) {
                    Lookup::Found(matched) => Some(matched),
                    Lookup::NeedsModel | Lookup::NotFound { .. } => None,
                },
                Lookup::NeedsModel => {
                    // A caller that every route it could reach would refuse is refused before
                    // its body is read.
                    let (path, method) = (parts.uri.path(), &parts.method);
                    let reachable = snapshot
                        .router
                        .reachable(&host, path, method, &parts.headers);
                    let auths = reachable.iter().map(|&i| {
                        let route = &snapshot.routes[i];
                        (route.name.as_str(), &route.auth)
                    });
                    auth::precheck(
                        &snapshot.consumers,
                        auths,
                        &parts.headers,
                        &self.metrics.access,
                    )?;
                    let bound = self.settings.max_buffered_body;
                    if declared.is_some_and(|len| len > bound) {
                        return Err(ProxyError::BodyTooLarge { limit: bound });
                    }
                    body = body.hold(bound, self.settings.body_read_timeout).await?;
                    let Some(bytes) = body.held() else {
                        return Err(ProxyError::BodyTooLarge { limit: bound });
                    };
                    record.bytes_in = bytes.len() as u64;
                    parsed = LlmRequest::parse(bytes);
                    let model = parsed.as_ref().and_then(|r| r.model.as_deref());
                    match lookup(ModelQuery::Known(model)) {
                        Lookup::Found(matched) => Some(matched),
                        Lookup::NotFound {
                            wanted_model: false,
                        } => None,
                        Lookup::NotFound { wanted_model: true } | Lookup::NeedsModel => {
                            return Err(model_error(bytes, parsed.as_ref()))
                        }
                    }
                }
            };
            let matched = matched.ok_or_else(|| ProxyError::NoRoute {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
            })?;
            record.route = Some(matched.route);
            let route = &snapshot.routes[matched.route];
            let trusted = self.settings.is_trusted(conn.peer.ip());
            // Behind a trusted proxy, the client is whom its `X-Forwarded-For` names.
            let forwarded_client = trusted.then(|| {
                let ip = client_ip(conn.peer.ip(), &parts.headers, |ip| {
                    self.settings.is_trusted(ip)
                });
                headers::peer_value(ip)
            });
            let downstream = Downstream {
                peer: &conn.peer_ip,
                client: forwarded_client.as_ref().unwrap_or(&conn.peer_ip),
                trusted,
                proto: conn.proto,
                host: client_host.as_ref(),
            };

            // Authenticate: who is calling, and may they use this route.
            let access = &self.metrics.access;
            let consumer = auth::authenticate(
                &snapshot.consumers,
                &route.name,
                &route.auth,
                &mut parts.headers,
                access,
            )?;
            if let Some(consumer) = &consumer {
                record.consumer = Some(Arc::clone(&consumer.name));
                auth::check_route(consumer, &route.name, access)?;
            }
            let rate_limits = admit::applicable(route, consumer.as_deref());

            // `GET /v1/models` from the config, when the route says so (behind its auth).
            if route.models_endpoint {
                if let Some(answer) = models_endpoint::answer(snapshot, &parts)? {
                    return Ok(answer);
                }
            }

            // A WebSocket handshake becomes a tunnel, if the route allows one.
            if websocket {
                let asked = admit::Asked {
                    upgrade: true,
                    ..admit::Asked::default()
                };
                self.admit(&rate_limits, &parts, conn, route, &asked, record)
                    .await?;
                // Boxed: rare, and it would otherwise grow every request's future.
                return Box::pin(self.tunnel(parts, route, matched, &downstream, record)).await;
            }

            // Limit the body.
            if let Some(len) = declared {
                if len > limit {
                    return Err(ProxyError::BodyTooLarge { limit });
                }
                if record.bytes_in == 0 {
                    record.bytes_in = len;
                }
            }

            // Read the body when something needs it whole: an LLM request, a model rewrite, a
            // retry or fallback, a prompt hash, the consumer's model rules or a token estimate.
            let llm = is_llm(route, &parts.method, parts.uri.path());
            let needs = Needs::of(route);
            let access_reads = admit::needs_body(consumer.as_deref(), &rate_limits);
            if llm || needs.read() || access_reads {
                let gap = self.settings.body_read_timeout;
                body = body.hold(self.settings.max_buffered_body, gap).await?;
            }
            let mut asked = admit::Asked::default();
            let outgoing = match body {
                RequestBody::Held(bytes) => {
                    record.bytes_in = bytes.len() as u64;
                    asked.body_len = bytes.len();
                    if parsed.is_none() && (llm || needs.rewrite || needs.prompt || access_reads) {
                        parsed = LlmRequest::parse(&bytes);
                    }
                    let bytes = if llm {
                        let path = parts.uri.path();
                        let (changed, entry) = self.inspect(route, path, bytes, parsed.as_ref());
                        // Appending `stream_options` keeps the spans read from the original body;
                        // rewriting an existing one does not, so read the new body again.
                        if entry.usage_injected
                            && parsed.as_ref().is_some_and(|p| p.has_stream_options)
                        {
                            parsed = LlmRequest::parse(&changed);
                        }
                        record.llm = Some(Box::new(entry));
                        changed
                    } else {
                        bytes
                    };
                    let parsed = parsed.unwrap_or_default();
                    if let (Some(consumer), false) = (&consumer, bytes.is_empty()) {
                        auth::check_model(consumer, parsed.model.as_deref(), access)?;
                    }
                    if !rate_limits.is_empty() {
                        asked.model.clone_from(&parsed.model);
                        asked.max_output = parsed.max_output_tokens;
                    }
                    Outgoing::Held {
                        model: parsed.model.zip(parsed.model_span),
                        prompt: parsed.prompt_span,
                        bytes,
                    }
                }
                // Auth and limits must see the model: a body too large to hold is refused
                // rather than let past them unread.
                RequestBody::Stream(_) | RequestBody::Partial { .. } if access_reads => {
                    return Err(ProxyError::BodyTooLarge {
                        limit: self.settings.max_buffered_body,
                    });
                }
                // Too large to hold: streamed once, not read as an LLM request.
                partial @ (RequestBody::Stream(_) | RequestBody::Partial { .. }) => {
                    if llm {
                        record.llm = Some(Box::default());
                    }
                    Outgoing::Once(Some(partial.into_body()))
                }
            };

            // Rate limits: every one that applies must have room.
            self.admit(&rate_limits, &parts, conn, route, &asked, record)
                .await?;

            // Pick a cluster and a backend, forward, retry, fall back.
            let call = Call {
                route,
                matched,
                head: parts,
                body: outgoing,
                downstream,
            };
            let mut response = dispatch::send(call, record).await?;
            route.response_headers.apply(response.headers_mut());
            Ok(response)
        }
    }

    /// Tunnels a WebSocket handshake to a backend of the route's first cluster.
    async fn tunnel(
        &self,
        mut parts: http::request::Parts,
        route: &Route,
        matched: Matched,
        downstream: &Downstream<'_>,
        record: &mut Entry,
    ) -> Result<Response<Body>, ProxyError> {
        let Some(limits) = route.websocket else {
            return Err(ProxyError::UpgradeNotAllowed {
                route: route.name.clone(),
            });
        };
        let client = upgrade::client_side(&mut parts)?;
        let cluster = &route.cluster;
        let backends = &cluster.backends;
        let index = cluster
            .balancer
            .pick(backends, None, |i| backends[i].state.healthy())
            .or_else(|| cluster.balancer.pick(backends, None, |_| true))
            .ok_or_else(|| ProxyError::NoBackend {
                cluster: cluster.name.clone(),
            })?;
        record.cluster = Some(Arc::clone(cluster));
        record.backend = Some(index);
        let backend = &cluster.backends[index];
        let mut req = Request::from_parts(parts, body::empty());
        forward::prepare(&mut req, route, matched, backend, downstream)?;
        let id = record.request_id.clone();
        upgrade::forward(req, route, backend, client, limits, &self.metrics, id).await
    }

    /// Reads what an LLM request asks for and, when the route says so, asks a streamed
    /// answer to end with its usage.
    fn inspect(
        &self,
        route: &Route,
        path: &str,
        bytes: Bytes,
        request: Option<&LlmRequest>,
    ) -> (Bytes, LlmEntry) {
        let Some(request) = request else {
            return (bytes, LlmEntry::default());
        };
        let mut entry = LlmEntry {
            model: request.model.clone(),
            max_output_tokens: request.max_output_tokens,
            ..LlmEntry::default()
        };
        // Only the (chat) completions APIs have `stream_options`; the Responses API reports
        // usage on its own.
        let has_option = path.ends_with("/completions");
        if route.include_usage && has_option && request.needs_usage() {
            if let Some(changed) = add_include_usage(&bytes, request.has_stream_options) {
                entry.usage_injected = true;
                self.metrics
                    .llm
                    .usage_injected
                    .with_label_values(&[route.name.as_str()])
                    .inc();
                return (changed, entry);
            }
        }
        (bytes, entry)
    }
}

/// Whether `route` reads this request as an LLM call.
fn is_llm(route: &Route, method: &Method, path: &str) -> bool {
    const ENDPOINTS: [&str; 4] = [
        "/chat/completions",
        "/completions",
        "/embeddings",
        "/responses",
    ];
    match route.llm {
        LlmMode::On => true,
        LlmMode::Off => false,
        LlmMode::Auto => method == Method::POST && ENDPOINTS.iter().any(|e| path.ends_with(e)),
    }
}

/// Why a body that a model route needed gave no model that any route takes.
fn model_error(bytes: &[u8], parsed: Option<&LlmRequest>) -> ProxyError {
    let Some(request) = parsed else {
        let reason = match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            _ if bytes.iter().all(u8::is_ascii_whitespace) => "it is empty".to_owned(),
            Err(err) => err.to_string(),
            Ok(_) => "it is JSON, but not an object with unique keys".to_owned(),
        };
        return ProxyError::InvalidJson(reason);
    };
    match (request.model_field, &request.model) {
        (ModelField::String, Some(model)) => ProxyError::ModelNotFound(model.to_string()),
        (ModelField::NotString, _) => ProxyError::ModelNotString,
        (ModelField::Missing | ModelField::String, _) => ProxyError::ModelMissing,
    }
}

/// The `:authority` of an HTTP/2 request, as a header value.
fn authority_header(uri: &http::Uri) -> Option<HeaderValue> {
    uri.authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
}

/// Lower-case host without port or trailing dot: `API.Example.com.:8080` → `api.example.com`.
fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = match host.rsplit_once(':') {
        // `[::1]:8080` and `example.com:8080`; a bare IPv6 literal has no port to strip.
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_host;

    #[test]
    fn hosts_lose_port_and_case() {
        assert_eq!(normalize_host("API.Example.com:8080"), "api.example.com");
        assert_eq!(normalize_host("example.com"), "example.com");
        assert_eq!(normalize_host("Example.com.:80"), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
    }
}

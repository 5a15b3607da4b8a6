//! Forwarding: turn the client's request into the upstream's, send it, and bound the wait.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, Parts, PathAndQuery};
use http::{Request, Response, Uri, Version};
use tokio::time::Instant;

use crate::body::Body;
use crate::config::file::UpstreamProtocol;
use crate::config::snapshot::{Backend, HostPolicy, Route, Timeouts};
use crate::error::ProxyError;
use crate::proxy::headers;
use crate::proxy::route::Matched;
use crate::upstream::Target;

/// What `prepare` needs to know about the downstream side.
pub struct Downstream<'a> {
    /// The peer's IP as header text.
    pub peer: &'a HeaderValue,
    /// The client's IP as header text: the peer's, or from a trusted peer the address its
    /// `X-Forwarded-For` names.
    pub client: &'a HeaderValue,
    pub trusted: bool,
    pub proto: &'static str,
    /// The client's host as sent (`Host` or the `:authority`), port included.
    pub host: Option<&'a HeaderValue>,
}

/// Rewrites `req` in place for `backend`: URI, version, hop-by-hop and forwarding headers,
/// the route's header edits and `Host`.
pub fn prepare(
    req: &mut Request<Body>,
    route: &Route,
    matched: Matched,
    backend: &Backend,
    downstream: &Downstream,
) -> Result<(), ProxyError> {
    let path_and_query = rewritten_path(req.uri(), route, matched)?;
    let mut parts = Parts::default();
    // HTTP/1.1 sends the origin form (`/path?query`); HTTP/2 needs the scheme and authority
    // for its pseudo-headers. With `auto` the connection decides, and the upstream turns the
    // absolute form back into the origin form if it speaks HTTP/1.1.
    if let Target::Http(http) = &backend.target {
        if http.protocol() != UpstreamProtocol::Http1 {
            parts.scheme = Some(http.scheme());
            // `:authority` stands for Host in HTTP/2: it follows the route's Host policy.
            let authority = match &route.host {
                HostPolicy::Backend => None,
                HostPolicy::Preserve => downstream.host.cloned(),
                HostPolicy::Rewrite(value) => Some(value.clone()),
            }
            .and_then(|v| Authority::try_from(v.as_bytes()).ok());
            parts.authority = Some(authority.unwrap_or_else(|| http.authority.clone()));
        }
    }
    parts.path_and_query = Some(path_and_query);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    // The backend's own protocol: a split or a fallback may lead to another cluster's.
    let protocol = match &backend.target {
        Target::Http(http) => http.protocol(),
        Target::Mock(_) => UpstreamProtocol::Http1,
    };
    *req.version_mut() = match protocol {
        UpstreamProtocol::Http1 | UpstreamProtocol::Auto => Version::HTTP_11,
        UpstreamProtocol::H2c | UpstreamProtocol::Http2 => Version::HTTP_2,
    };

    let client_host = downstream.host.cloned();
    let headers = req.headers_mut();
    headers::strip_hop_by_hop(headers);
    headers::set_forwarded(
        headers,
        downstream.peer,
        downstream.trusted,
        downstream.proto,
        client_host.as_ref(),
    );
    route.request_headers.apply(headers);
    let host = match &route.host {
        HostPolicy::Backend => Some(backend.authority.clone()),
        HostPolicy::Preserve => client_host,
        HostPolicy::Rewrite(value) => Some(value.clone()),
    };
    // HTTP/1.1 needs a Host; without the client's, the backend's stands in.
    headers.insert(
        header::HOST,
        host.unwrap_or_else(|| backend.authority.clone()),
    );
    Ok(())
}

/// The upstream path and query: the route's `rewrite_prefix` replaces the matched part.
fn rewritten_path(uri: &Uri, route: &Route, matched: Matched) -> Result<PathAndQuery, ProxyError> {
    let original = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let Some(replacement) = &route.rewrite_prefix else {
        return Ok(original);
    };
    let mut rest = original.path().get(matched.prefix_len..).unwrap_or("");
    // `/api` → `/` on `/api/v1` gives `/v1`, not `//v1`.
    if replacement.ends_with('/') {
        rest = rest.strip_prefix('/').unwrap_or(rest);
    }
    let mut path = String::with_capacity(replacement.len() + rest.len() + 1);
    path.push_str(replacement);
    path.push_str(rest);
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    if let Some(query) = original.query() {
        path.push('?');
        path.push_str(query);
    }
    PathAndQuery::try_from(path).map_err(|e| ProxyError::BadRequest(e.to_string()))
}

/// Sends the prepared request and waits for the response head, within the connect,
/// response-header and total timeouts. `deadline` is when the total timeout ends.
pub async fn send(
    timeouts: &Timeouts,
    backend: &Backend,
    req: Request<Body>,
    deadline: Option<Instant>,
) -> Result<Response<Body>, ProxyError> {
    let header_deadline = timeouts
        .response_header
        .map(|timeout| Instant::now() + timeout);
    let (wait_until, on_expiry) = match (header_deadline, deadline) {
        (Some(h), Some(t)) if t < h => (Some(t), Expiry::Total),
        (Some(h), _) => (Some(h), Expiry::Header),
        (None, Some(t)) => (Some(t), Expiry::Total),
        (None, None) => (None, Expiry::Header),
    };
    let sent = backend.target.send(req);
    let result = match wait_until {
        None => sent.await,
        Some(until) => match tokio::time::timeout_at(until, sent).await {
            Ok(result) => result,
            Err(_) => Err(on_expiry.error(timeouts)),
        },
    };
    let mut response = result?;
    headers::strip_hop_by_hop(response.headers_mut());
    Ok(response)
}

enum Expiry {
    Header,
    Total,
}

impl Expiry {
    fn error(&self, timeouts: &Timeouts) -> ProxyError {
        match self {
            Expiry::Header => ProxyError::ResponseHeaderTimeout(
                timeouts.response_header.unwrap_or(Duration::ZERO),
            ),
            Expiry::Total => ProxyError::TotalTimeout(timeouts.total.unwrap_or(Duration::ZERO)),
        }
    }
}

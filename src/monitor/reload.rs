//! `GET /reload/<name>[?path=<dir>]`: the conf-agent contract on the monitor port.
//!
//! The contract BFE's conf-agent speaks: the agent writes a complete new config into a fresh
//! directory, calls this endpoint with `path=` naming it, and repoints the live directory at
//! it only when the answer is HTTP 200 with `{"error":null}`. A rejected config is also
//! HTTP 200, with `{"error":"file:key: reason"}`, so the agent logs the reason and keeps the
//! live directory. Callers must be on loopback (as BFE requires), and, when `[reload] token`
//! is set, also send `Authorization: Bearer <token>`; others get an OpenAI-style 403 or 401.
//!
//! Every name reloads the whole dynamic config, because it is one snapshot swapped whole:
//!
//! | name | `path=` |
//! |---|---|
//! | `sluice`, `server_data_conf` | optional: the dynamic files are read from this directory instead of `dynamic_dir` |
//! | `tls_conf` | not accepted: certificate files are read where the config names them |

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::json;

use crate::body::{self, Body};
use crate::error::json_error;
use crate::reload::status::join;
use crate::reload::{Outcome, Reloader, Trigger};

/// The reloader names sluice answers to, in the order `/reload` lists them.
pub const NAMES: [&str; 3] = ["sluice", "server_data_conf", "tls_conf"];

/// Whether the monitor routes `path` here.
pub fn is_reload_path(path: &str) -> bool {
    path == "/reload" || path.starts_with("/reload/")
}

/// Whether a peer may call the reload endpoints: loopback only, IPv4 or IPv6, including an
/// IPv4 peer seen through a dual-stack socket (`::ffff:127.0.0.1`).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Answers one request to `/reload` or `/reload/<name>` from `peer`.
pub async fn handle<B>(
    reloader: &Arc<Reloader>,
    req: &Request<B>,
    peer: SocketAddr,
) -> Response<Body> {
    if req.method() != Method::GET {
        return json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the reload endpoints answer GET only",
            "invalid_request_error",
            "method_not_allowed",
        );
    }
    if !is_loopback(peer.ip()) {
        tracing::warn!(%peer, path = req.uri().path(), "reload refused: not a loopback peer");
        return json_error(
            StatusCode::FORBIDDEN,
            "the reload endpoints answer loopback callers only (127.0.0.1, ::1)",
            "permission_error",
            "forbidden",
        );
    }
    if let Some(token) = &reloader.token {
        if !bearer_matches(req, token) {
            tracing::warn!(%peer, path = req.uri().path(), "reload refused: missing or wrong token");
            let mut response = json_error(
                StatusCode::UNAUTHORIZED,
                "this reload endpoint needs `Authorization: Bearer <reload.token>`",
                "authentication_error",
                "invalid_reload_token",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    let name = req
        .uri()
        .path()
        .strip_prefix("/reload")
        .unwrap_or("")
        .trim_start_matches('/');
    if name.is_empty() {
        return reply(json!({ "reloaders": NAMES }));
    }
    let dir = match query_path(req.uri().query()) {
        Ok(dir) => dir,
        Err(reason) => return reply(json!({ "error": reason })),
    };
    match name {
        "sluice" | "server_data_conf" => {}
        "tls_conf" if dir.is_some() => {
            return reply(json!({
                "error": "tls_conf takes no path: it reloads the live config, and certificate \
                          files are read from where the config names them"
            }))
        }
        "tls_conf" => {}
        other => {
            return reply(json!({
                "error": format!(
                    "unknown reloader `{other}`; sluice answers to {}",
                    NAMES.join(", ")
                )
            }))
        }
    }
    let body = match reloader.reload(Trigger::Api, dir).await {
        Outcome::Applied(applied) => json!({
            "error": null,
            "version": applied.version,
            "restart_required": applied.restart_required,
            "warnings": applied.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
        Outcome::Rejected(errors) => json!({ "error": join(&errors) }),
        // Only watch reloads are skipped; answer as a no-op should that change.
        Outcome::Skipped(why) => json!({ "error": null, "skipped": why }),
    };
    reply(body)
}

/// HTTP 200 with a JSON body: the contract's answer whatever the outcome.
fn reply(body: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(body::full(body.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Whether the request carries `Authorization: Bearer <token>`, compared in constant time.
fn bearer_matches<B>(req: &Request<B>, token: &str) -> bool {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some((scheme, given)) = value.split_at_checked(6) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") || !given.starts_with(b" ") {
        return false;
    }
    let given = given.trim_ascii();
    let expected = token.as_bytes();
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The `path` parameter of the query string, decoded as a form value (`%2F` and `+` for a
/// space, as Go's `url.Values` encodes it). Any other parameter is refused, so a typo such
/// as `dir=` does not silently reload the live directory.
fn query_path(query: Option<&str>) -> Result<Option<PathBuf>, String> {
    let mut path = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "path" {
            return Err(format!(
                "unknown query parameter `{key}`; the only one is `path`"
            ));
        }
        if path.is_some() {
            return Err("`path` is given more than once".to_owned());
        }
        let value = value.replace('+', " ");
        let value = percent_encoding::percent_decode_str(&value)
            .decode_utf8()
            .map_err(|_| "`path` is not UTF-8 once decoded".to_owned())?;
        if value.is_empty() {
            return Err("`path` is empty".to_owned());
        }
        path = Some(PathBuf::from(value.into_owned()));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_peers_may_reload() {
        for ip in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "192.168.1.5",
            "0.0.0.0",
            "::",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn the_path_parameter_is_form_decoded() {
        assert_eq!(query_path(None), Ok(None));
        assert_eq!(query_path(Some("")), Ok(None));
        assert_eq!(
            query_path(Some("path=%2Fetc%2Fsluice%2Fconf.d_2026")),
            Ok(Some(PathBuf::from("/etc/sluice/conf.d_2026")))
        );
        assert_eq!(
            query_path(Some("path=/a+b/c")),
            Ok(Some(PathBuf::from("/a b/c")))
        );
        assert!(query_path(Some("dir=/x")).unwrap_err().contains("`dir`"));
        assert!(query_path(Some("path=/x&path=/y")).is_err());
        assert!(query_path(Some("path=")).is_err());
        assert!(query_path(Some("path=%FF")).is_err());
    }

    #[test]
    fn the_token_is_a_bearer_token() {
        let with = |value: &str| {
            Request::get("/reload/sluice")
                .header("authorization", value)
                .body(())
                .unwrap()
        };
        assert!(bearer_matches(&with("Bearer s3cret"), "s3cret"));
        assert!(bearer_matches(&with("bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(&with("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(&with("Bearer s3cret2"), "s3cret"));
        assert!(!bearer_matches(&with("Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(&with("Bearers3cret"), "s3cret"));
        let none = Request::get("/reload/sluice").body(()).unwrap();
        assert!(!bearer_matches(&none, "s3cret"));
    }
}

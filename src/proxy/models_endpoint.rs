//! `GET /v1/models` answered from the config, on routes with `models_endpoint = true`.
//!
//! The list holds the public names sluice serves: the exact names of every route's
//! `match.models` and every alias of every route and cluster (patterns such as `llama-*`
//! cannot be listed). It is serialized once per snapshot, so an answer costs a clone of
//! `Bytes`. `GET …/models/{id}` answers one of them, or 404 `model_not_found`; the id is
//! everything after `/models/`, so names with a `/` (`openai/gpt-4o`) work unescaped.
//! Other methods and paths of the route are forwarded as usual.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response};

use crate::body::{self, Body};
use crate::config::Snapshot;
use crate::error::ProxyError;
use crate::llm::models::model_json;

/// The answer for `parts`, or `None` when this request is not for the model list.
pub fn answer(snapshot: &Snapshot, parts: &Parts) -> Result<Option<Response<Body>>, ProxyError> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return Ok(None);
    }
    let path = parts.uri.path();
    let json = if path.ends_with("/models") {
        snapshot.models_json.clone()
    } else if let Some((_, id)) = path.split_once("/models/").filter(|(_, id)| !id.is_empty()) {
        if !snapshot.model_names.iter().any(|name| name == id) {
            return Err(ProxyError::ModelNotFound(id.to_owned()));
        }
        model_json(id)
    } else {
        return Ok(None);
    };
    let mut response = Response::new(if parts.method == Method::HEAD {
        body::empty()
    } else {
        body::full(json.clone())
    });
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(json.len()));
    Ok(Some(response))
}

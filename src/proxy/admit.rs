//! The rate-limit stage of the request path: which limits apply, what the request costs,
//! and the decision, recorded on the request's [`Entry`].

use std::sync::Arc;

use http::request::Parts;

use super::auth::Consumer;
use super::record::{Entry, Limited};
use super::{ConnInfo, Proxy};
use crate::config::snapshot::Route;
use crate::error::ProxyError;
use crate::ratelimit::key::{self, KeyValues};
use crate::ratelimit::{Ask, Kind, Limit, Refusal};

/// What the request body said, as far as limits care.
#[derive(Debug, Default)]
pub(super) struct Asked {
    pub model: Option<Arc<str>>,
    pub max_output: Option<u64>,
    pub body_len: usize,
    /// A WebSocket handshake.
    pub upgrade: bool,
}

/// The limits of a request: the route's, then the consumer's (each once).
pub(super) fn applicable<'a>(
    route: &'a Route,
    consumer: Option<&'a Consumer>,
) -> Vec<&'a Arc<Limit>> {
    let own = consumer.map_or(&[][..], |c| &c.limits[..]);
    let mut limits: Vec<&Arc<Limit>> = Vec::with_capacity(route.limits.len() + own.len());
    for limit in route.limits.iter().chain(own) {
        if !limits.iter().any(|l| Arc::ptr_eq(l, limit)) {
            limits.push(limit);
        }
    }
    limits
}

/// Whether auth or limits need the body read: for the consumer's model rules, a limit
/// keyed by model, or a token estimate.
pub(super) fn needs_body(consumer: Option<&Consumer>, limits: &[&Arc<Limit>]) -> bool {
    consumer.is_some_and(Consumer::checks_models)
        || limits
            .iter()
            .any(|l| l.needs_model() || matches!(l.kind, Kind::Tokens(..)))
}

impl Proxy {
    /// Decides whether the request fits its limits. Records the admission (settled when the
    /// answer ends) and the `x-ratelimit-*` headers in `record`, refused or not.
    pub(super) async fn admit(
        &self,
        limits: &[&Arc<Limit>],
        parts: &Parts,
        conn: &ConnInfo,
        route: &Route,
        asked: &Asked,
        record: &mut Entry,
    ) -> Result<(), ProxyError> {
        if limits.is_empty() {
            return Ok(());
        }
        let client = key::client_ip(conn.peer.ip(), &parts.headers, |ip| {
            self.settings.is_trusted(ip)
        });
        let ask = Ask {
            values: KeyValues {
                consumer: record.consumer.as_deref(),
                route: &route.name,
                model: asked.model.as_deref(),
                client,
                headers: &parts.headers,
            },
            body_len: asked.body_len,
            max_output: asked.max_output,
            upgrade: asked.upgrade,
        };
        let decision = self.limiter.admit(limits, &ask).await;
        let limited = record.limited.insert(Box::new(Limited {
            admission: None,
            headers: decision.headers,
        }));
        match decision.outcome {
            Ok(admission) => {
                limited.admission = Some(admission);
                Ok(())
            }
            Err(Refusal::Limited {
                limit,
                kind,
                retry_after,
            }) => Err(ProxyError::RateLimited {
                limit,
                kind,
                retry_after,
            }),
            Err(Refusal::Unavailable { limit, retry_after }) => {
                Err(ProxyError::LimiterUnavailable { limit, retry_after })
            }
        }
    }
}

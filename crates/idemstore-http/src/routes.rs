//! Per-route policy: one layer, and for chosen routes (by path pattern)
//! another key header, key bounds, store policy, replay status, fingerprint
//! or retention (the [`RoutePolicy`](crate::RoutePolicy) option, in
//! `config.rs`); everything else is the layer's. Here: the patterns, and
//! each request's resolved settings.

use crate::config::{FingerprintSpec, IdempotencyConfig, ReplayStatus, RoutePolicy, StorePolicy};
use http::HeaderName;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

/// The settings one request is handled with: the layer's, with its
/// route's changes applied.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) header: HeaderName,
    pub(crate) key_required: bool,
    pub(crate) key_len: RangeInclusive<usize>,
    pub(crate) store: StorePolicy,
    pub(crate) replay_status: ReplayStatus,
    pub(crate) fingerprint: FingerprintSpec,
    /// `None`: the backend's.
    pub(crate) retention: Option<Duration>,
    /// The handler stores the response (`RoutePolicy::stored_by_handler`).
    pub(crate) stored_by_handler: bool,
}

impl Policy {
    fn of(c: &IdempotencyConfig, r: &RoutePolicy) -> Policy {
        Policy {
            header: r.header.clone().unwrap_or_else(|| c.header.clone()),
            key_required: r.key_required.unwrap_or(c.key_required),
            key_len: r.key_len.clone().unwrap_or_else(|| c.key_len.clone()),
            store: r.store.unwrap_or(c.store),
            replay_status: r.replay_status.unwrap_or(c.replay_status),
            fingerprint: r
                .fingerprint
                .clone()
                .unwrap_or_else(|| c.fingerprint.clone()),
            retention: r.retention,
            stored_by_handler: r.stored_by_handler,
        }
    }
}

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// This text exactly.
    Literal(String),
    /// Any one segment (`*`, or `{name}` as axum writes a parameter).
    One,
    /// The rest of the path, zero or more segments (`**`, last only).
    Rest,
}

/// A path pattern, as [`IdempotencyConfig::route`] takes them:
/// `/v1/payouts` (exactly, with or without a trailing slash),
/// `/v1/accounts/{id}/payouts` (`{id}` or `*`: any one segment),
/// `/v1/payouts/**` (that path and everything below it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Vec<Segment>);

impl Pattern {
    /// Parses `p`.
    ///
    /// # Errors
    ///
    /// Why `p` is not a pattern.
    pub fn parse(p: &str) -> Result<Pattern, String> {
        let Some(rest) = p.strip_prefix('/') else {
            return Err(format!("route pattern {p:?} must start with '/'"));
        };
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut segs = Vec::with_capacity(parts.len());
        for (i, s) in parts.iter().enumerate() {
            segs.push(match *s {
                "**" if i + 1 == parts.len() => Segment::Rest,
                "**" => return Err(format!("in route pattern {p:?}, '**' must come last")),
                "*" => Segment::One,
                s if s.starts_with('{') && s.ends_with('}') => Segment::One,
                s => Segment::Literal(s.to_owned()),
            });
        }
        Ok(Pattern(segs))
    }

    /// Whether `path` (without its query) matches.
    pub fn matches(&self, path: &str) -> bool {
        let rest = path.strip_prefix('/').unwrap_or(path);
        let mut parts = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect::<Vec<_>>()
        };
        // A trailing slash names the same resource.
        if parts.last() == Some(&"") {
            parts.pop();
        }
        let mut i = 0;
        for seg in &self.0 {
            match seg {
                Segment::Rest => return true,
                Segment::One if i < parts.len() => i += 1,
                Segment::Literal(l) if i < parts.len() && parts[i] == l => i += 1,
                _ => return false,
            }
        }
        i == parts.len()
    }
}

/// The layer's policy and its routes', in the order they were added (the
/// first route whose pattern matches wins).
#[derive(Debug)]
pub(crate) struct Policies {
    base: Arc<Policy>,
    routes: Vec<(Pattern, Arc<Policy>)>,
}

impl Policies {
    /// The policies of `c`; why not, if a route pattern does not parse.
    pub(crate) fn new(c: &IdempotencyConfig) -> Result<Policies, String> {
        let mut routes = Vec::with_capacity(c.routes.len());
        for (p, r) in &c.routes {
            routes.push((Pattern::parse(p)?, Arc::new(Policy::of(c, r))));
        }
        Ok(Policies {
            base: Arc::new(Policy::of(c, &RoutePolicy::default())),
            routes,
        })
    }

    /// The policy of a request to `path`.
    pub(crate) fn for_path(&self, path: &str) -> &Arc<Policy> {
        self.routes
            .iter()
            .find(|(p, _)| p.matches(path))
            .map_or(&self.base, |(_, pol)| pol)
    }

    /// Every policy, the layer's first.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Policy> {
        std::iter::once(&*self.base).chain(self.routes.iter().map(|(_, p)| &**p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_paths_one_segment_wildcards_and_subtrees() {
        let m = |p: &str, path: &str| Pattern::parse(p).unwrap().matches(path);
        assert!(m("/v1/payouts", "/v1/payouts") && m("/v1/payouts", "/v1/payouts/"));
        assert!(!m("/v1/payouts", "/v1/payouts/7") && !m("/v1/payouts", "/v1/pay"));
        assert!(m("/v1/accounts/{id}/payouts", "/v1/accounts/a_1/payouts"));
        assert!(m("/v1/accounts/*/payouts", "/v1/accounts/a_1/payouts"));
        assert!(!m("/v1/accounts/{id}/payouts", "/v1/accounts/payouts"));
        assert!(m("/v1/payouts/**", "/v1/payouts") && m("/v1/payouts/**", "/v1/payouts/7/cancel"));
        assert!(!m("/v1/payouts/**", "/v1/payoutsx"));
        assert!(m("/**", "/anything/at/all") && m("/", "/"));
        assert!(Pattern::parse("v1").is_err() && Pattern::parse("/a/**/b").is_err());
    }
}

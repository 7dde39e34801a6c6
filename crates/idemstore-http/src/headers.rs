//! Which of a handler's response headers are stored, and so replayed
//! ([`ResponseHeaders`]), and the redaction hook run on a response before
//! it is stored ([`Redact`]).
//!
//! Never stored, whatever the policy: hop-by-hop headers (RFC 9110 section
//! 7.6.1, and those a `Connection` header names), `Date` (a replay is a new
//! message, and the server dates it) and `Content-Length` (computed from the
//! stored body). The policy applies when a response is stored: a record
//! stored under another policy replays as it was stored.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{HeaderValue, StatusCode};
use std::fmt;
use std::sync::Arc;

/// Headers no policy stores: they describe one connection or one message.
const NEVER_STORED: [HeaderName; 11] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
    header::DATE,
    header::CONTENT_LENGTH,
];

/// What the default policy leaves out besides: a cookie set for the first
/// client's session, a cache's age of the first response, and the first
/// request's id (a retry is another request, with its own).
pub const DEFAULT_NOT_REPLAYED: [HeaderName; 3] = [
    header::SET_COOKIE,
    header::AGE,
    HeaderName::from_static("x-request-id"),
];

/// Which end-to-end response headers are stored with a response and sent
/// with its replays.
///
/// ```
/// use idemstore_http::ResponseHeaders;
/// use http::{HeaderName, header};
/// // The default, plus a per-request id of this service's own:
/// let p = ResponseHeaders::default().and_not([HeaderName::from_static("x-correlation-id")]);
/// assert!(!p.stores(&header::SET_COOKIE) && !p.stores(&HeaderName::from_static("x-correlation-id")));
/// assert!(p.stores(&header::LOCATION));
/// // Or an allow-list:
/// let p = ResponseHeaders::only([header::LOCATION, header::ETAG, header::CONTENT_TYPE, header::LINK]);
/// assert!(p.stores(&header::ETAG) && !p.stores(&HeaderName::from_static("x-internal")));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseHeaders {
    /// Every end-to-end header but these (the default:
    /// [`DEFAULT_NOT_REPLAYED`]).
    AllExcept(Vec<HeaderName>),
    /// Only these. Name `Content-Type` too if replays should carry it.
    Only(Vec<HeaderName>),
}

impl Default for ResponseHeaders {
    fn default() -> Self {
        ResponseHeaders::AllExcept(DEFAULT_NOT_REPLAYED.to_vec())
    }
}

impl ResponseHeaders {
    /// Only `names` are stored.
    pub fn only(names: impl IntoIterator<Item = HeaderName>) -> Self {
        ResponseHeaders::Only(names.into_iter().collect())
    }

    /// Every end-to-end header but `names` (and nothing else left out:
    /// add [`DEFAULT_NOT_REPLAYED`] to keep those out too, or start from
    /// the default with [`and_not`](Self::and_not)).
    pub fn all_except(names: impl IntoIterator<Item = HeaderName>) -> Self {
        ResponseHeaders::AllExcept(names.into_iter().collect())
    }

    /// This policy with `names` left out as well.
    pub fn and_not(self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        let names: Vec<HeaderName> = names.into_iter().collect();
        match self {
            ResponseHeaders::AllExcept(mut deny) => {
                deny.extend(names);
                ResponseHeaders::AllExcept(deny)
            }
            ResponseHeaders::Only(allow) => {
                ResponseHeaders::Only(allow.into_iter().filter(|n| !names.contains(n)).collect())
            }
        }
    }

    /// Whether an end-to-end header named `name` is stored.
    pub fn stores(&self, name: &HeaderName) -> bool {
        if NEVER_STORED.contains(name) {
            return false;
        }
        match self {
            ResponseHeaders::AllExcept(deny) => !deny.contains(name),
            ResponseHeaders::Only(allow) => allow.contains(name),
        }
    }

    /// Whether header `name` of a response whose `Connection` header is
    /// `connection` is stored: end-to-end, and allowed by the policy.
    pub(crate) fn stores_in(&self, name: &HeaderName, connection: Option<&HeaderValue>) -> bool {
        // Headers the Connection header lists are hop-by-hop too.
        let hop = connection
            .and_then(|v| v.to_str().ok())
            .is_some_and(|list| {
                list.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
            });
        !hop && self.stores(name)
    }
}

/// A handler's response as the redaction hook sees it: what will be stored.
#[derive(Debug)]
#[non_exhaustive]
pub struct ToStore<'a> {
    /// The status (read only: it decides what the client was told).
    pub status: StatusCode,
    /// The headers the policy keeps, to change or remove.
    pub headers: &'a mut HeaderMap,
    /// The body, to replace.
    pub body: &'a mut Bytes,
}

/// Changes a response before it is stored, e.g. takes a one-time secret
/// out of the body or a header (the first client still gets the response
/// as the handler made it; every replay gets the changed one). Runs once
/// per stored response, on the request's task. If it panics, the layer
/// stores the not-replayable notice instead (a retry is told the request
/// ran; nothing unredacted is kept, and the handler never runs twice).
#[derive(Clone)]
pub struct Redact(pub(crate) Arc<dyn Fn(ToStore<'_>) + Send + Sync>);

impl Redact {
    /// The hook `f`.
    pub fn new(f: impl Fn(ToStore<'_>) + Send + Sync + 'static) -> Self {
        Redact(Arc::new(f))
    }

    /// Runs the hook on a copy of `headers` and `body`; `None` if it
    /// panicked.
    pub(crate) fn run(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Option<(HeaderMap, Bytes)> {
        let (mut h, mut b) = (headers.clone(), body.clone());
        let f = &self.0;
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f(ToStore {
                status,
                headers: &mut h,
                body: &mut b,
            });
        }));
        match ran {
            Ok(()) => Some((h, b)),
            Err(_) => {
                tracing::error!(
                    "the redaction hook panicked; storing the not-replayable notice instead"
                );
                None
            }
        }
    }
}

impl fmt::Debug for Redact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redact(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_and_hop_by_hop_headers_are_never_stored() {
        let all = ResponseHeaders::all_except([]);
        let conn = HeaderValue::from_static("close, x-trace");
        assert!(!all.stores_in(&HeaderName::from_static("x-trace"), Some(&conn)));
        assert!(all.stores_in(&HeaderName::from_static("x-other"), Some(&conn)));
        for h in NEVER_STORED {
            assert!(!all.stores(&h) && !ResponseHeaders::only([h.clone()]).stores(&h));
        }
        assert!(
            all.stores(&header::SET_COOKIE),
            "only the default leaves cookies out"
        );
        assert!(!ResponseHeaders::default().stores(&header::AGE));
        let fewer = ResponseHeaders::only([header::ETAG, header::LOCATION]).and_not([header::ETAG]);
        assert_eq!(fewer, ResponseHeaders::only([header::LOCATION]));
    }
}

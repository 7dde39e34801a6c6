//! Between HTTP responses and stored records.
//!
//! Stored: status, the end-to-end headers the [`ResponseHeaders`] policy
//! keeps, in order, and the body (see `headers.rs` for what no policy keeps).
//!
//! What the layer knows of the first execution travels in the record as a
//! pseudo-header, a name starting with `:` that no HTTP header can have (so
//! it never collides and is never replayed): [`FIRST_REQUEST_ID`], the
//! first request's `X-Request-Id` or W3C `traceparent`; and
//! `:body-members`, the digests of a JSON body's members. Both backends keep
//! them, with no format change; records stored before them simply lack them.

use crate::config::ReplayStatus;
use crate::headers::ResponseHeaders;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use idemstore::StoredResponse;

/// Marks a response as a replay of the stored one.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The pseudo-header holding the first execution's request id.
pub const FIRST_REQUEST_ID: &str = ":first-request-id";

/// The pseudo-header holding the digests of the first request's JSON body
/// members (see [`crate::fingerprint::Members`]), when its body was
/// fingerprinted as JSON.
pub(crate) const BODY_MEMBERS: &str = ":body-members";

/// The record to store for a handler response to the request `request_id`
/// names, if any, with the headers `policy` keeps.
pub(crate) fn to_stored(
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
    request_id: Option<&str>,
    policy: &ResponseHeaders,
) -> idemstore::Response {
    let connection = headers.get(header::CONNECTION);
    let mut stored: Vec<(String, Vec<u8>)> = headers
        .iter()
        .filter(|(n, _)| policy.stores_in(n, connection))
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    if let Some(id) = request_id {
        stored.push((FIRST_REQUEST_ID.to_owned(), id.as_bytes().to_vec()));
    }
    idemstore::Response {
        status: status.as_u16(),
        headers: stored,
        body: body.to_vec(),
    }
}

/// The first execution's request id, if its record has one.
pub(crate) fn first_request_id(stored: &StoredResponse) -> Option<&str> {
    stored
        .response
        .headers
        .iter()
        .find(|(n, _)| n == FIRST_REQUEST_ID)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// The response a retry gets: the stored status (or the fixed one), headers
/// and body, plus `replayed: true` (by default `Idempotent-Replayed`).
pub(crate) fn to_replay(
    stored: &StoredResponse,
    status: ReplayStatus,
    replayed: &HeaderName,
    expiry: Option<&HeaderName>,
) -> Response<Bytes> {
    let r = &stored.response;
    let mut out = Response::new(Bytes::copy_from_slice(&r.body));
    *out.status_mut() = match status {
        ReplayStatus::Original => {
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        ReplayStatus::Fixed(s) => s,
    };
    for (name, value) in &r.headers {
        // What was stored came from valid headers; skip anything that is not
        // (the pseudo-headers among them).
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            out.headers_mut().append(n, v);
        }
    }
    out.headers_mut()
        .insert(replayed.clone(), HeaderValue::from_static("true"));
    if let Some(name) = expiry {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(stored.expires_at.0);
        out.headers_mut().insert(name.clone(), http_date(at));
    }
    out
}

/// `at` as an HTTP-date (IMF-fixdate, RFC 9110 section 5.6.7).
pub(crate) fn http_date(at: std::time::SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(at))
        .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_date_length_and_the_default_exclusions_are_not_stored_and_order_is_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::DATE,
            HeaderValue::from_static("Tue, 24 Nov 2026 10:00:00 GMT"),
        );
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-trace"),
        );
        h.insert("x-trace", HeaderValue::from_static("abc"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("link", HeaderValue::from_static("</a>; rel=next"));
        h.append("link", HeaderValue::from_static("</b>; rel=prev"));
        h.insert("age", HeaderValue::from_static("30"));
        let s = to_stored(
            StatusCode::CREATED,
            &h,
            Bytes::from_static(b"{}"),
            None,
            &ResponseHeaders::default(),
        );
        let names: Vec<&str> = s.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "link", "link"]);

        let stored = StoredResponse {
            fingerprint: idemstore::Fingerprint::default(),
            started_at: idemstore::Timestamp(0),
            completed_at: idemstore::Timestamp(0),
            expires_at: idemstore::Timestamp(1),
            response: s,
        };
        let r = to_replay(&stored, ReplayStatus::Original, &REPLAYED, None);
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()[REPLAYED], "true");
        let links: Vec<_> = r.headers().get_all("link").iter().collect();
        assert_eq!(links, ["</a>; rel=next", "</b>; rel=prev"]);
        let r = to_replay(
            &stored,
            ReplayStatus::Fixed(StatusCode::CONFLICT),
            &REPLAYED,
            None,
        );
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(r.body().as_ref(), b"{}");
    }
}

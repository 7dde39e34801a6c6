//! Every rejection the layer sends, as an RFC 9457 `application/problem+json`
//! response: a stable `type`, a `title`, and a `detail` that tells the client
//! what to do. Statuses are mapped here and nowhere else.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use std::time::Duration;

/// Prefix of every problem `type` this layer emits.
pub const TYPE_PREFIX: &str = "urn:idemstore:problem:";

/// A rejection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A covered request without a key, when keys are required. 400.
    KeyMissing {
        /// The key header's name.
        header: String,
    },
    /// The key header is malformed or out of bounds. 400.
    KeyMalformed {
        /// Why.
        reason: String,
    },
    /// No tenant could be found for the request. 401.
    TenantMissing,
    /// The tenant header was sent more than once. 400.
    TenantAmbiguous {
        /// The tenant header's name.
        header: String,
    },
    /// The request body exceeds the limit. 413.
    RequestTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request body could not be read. 400.
    RequestBodyFailed,
    /// The first request with this key is still running. 409 + Retry-After.
    InFlight {
        /// Until its lease ends.
        retry_after: Duration,
    },
    /// `Repeatability-First-Sent` is missing or not an HTTP-date. 400.
    FirstSentInvalid,
    /// The request was first sent longer ago than the repeatability window.
    /// 412.
    RepeatabilityWindowPassed {
        /// The window.
        window: Duration,
    },
    /// The key was used for a different request. 422.
    Mismatch {
        /// The body members (top-level names, or the configured JSON
        /// pointers) in which it differs from the first request, when both
        /// were fingerprinted as JSON; names only, never values.
        members: Vec<String>,
    },
    /// The key's index digest collides with another (tenant, key). 422.
    KeyCollision,
    /// The key's record expired, and the store refuses the key for a grace
    /// period after that instead of running the request again. 422.
    KeyExpired {
        /// When the key's record expired.
        expired_at: std::time::SystemTime,
    },
    /// The idempotency store cannot be used; the handler did not run. 503.
    StoreUnavailable {
        /// What failed (no secrets: store error messages only).
        reason: String,
    },
    /// Stored for a request whose response was too large to store: it ran,
    /// and its response cannot be replayed. 409.
    ResponseNotReplayable {
        /// The limit in bytes.
        limit: usize,
    },
    /// The handler panicked, failed, or its response body failed. 500; it is
    /// then what the request produced, stored under the store policy.
    HandlerFailed,
    /// The handler ran but its response could not be stored yet (the store
    /// keeps it and retries; the key stays reserved). 503 + Retry-After.
    ResponseNotStored {
        /// When to retry.
        retry_after: Duration,
    },
    /// More keyed requests are in flight than the layer's cap
    /// (`max_in_flight`). 503 + Retry-After; the handler did not run and
    /// nothing was reserved.
    Overloaded {
        /// The cap.
        limit: usize,
    },
}

impl Problem {
    /// (status, type slug, title, detail).
    fn parts(&self) -> (StatusCode, &'static str, &'static str, String) {
        match self {
            Problem::KeyMissing { header } => (
                StatusCode::BAD_REQUEST,
                "key-missing",
                "Idempotency key required",
                format!("This endpoint requires an {header} header; send a unique key (e.g. a UUID) and reuse it when retrying."),
            ),
            Problem::KeyMalformed { reason } => (
                StatusCode::BAD_REQUEST,
                "key-malformed",
                "Malformed idempotency key",
                format!("{reason}."),
            ),
            Problem::TenantMissing => (
                StatusCode::UNAUTHORIZED,
                "tenant-missing",
                "Unauthenticated",
                "The request does not say which account it is for; send your API key.".into(),
            ),
            Problem::TenantAmbiguous { header } => (
                StatusCode::BAD_REQUEST,
                "tenant-ambiguous",
                "Ambiguous account",
                format!("The {header} header was sent more than once; send it exactly once."),
            ),
            Problem::RequestTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request-too-large",
                "Request body too large",
                format!("Requests with an idempotency key may carry at most {limit} bytes of body."),
            ),
            Problem::RequestBodyFailed => (
                StatusCode::BAD_REQUEST,
                "request-body-failed",
                "Request body could not be read",
                "The request body ended early or could not be read; send the request again with the same key.".into(),
            ),
            Problem::InFlight { retry_after } => (
                StatusCode::CONFLICT,
                "request-in-flight",
                "A request with this key is in progress",
                format!(
                    "Another request with this idempotency key is still being processed; retry after {} s with the same key to get its result.",
                    retry_after_secs(*retry_after)
                ),
            ),
            Problem::Mismatch { members } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "request-mismatch",
                "Idempotency key reused with a different request",
                format!(
                    "This key was already used for a request with different parameters{}; use a new key for a new request.",
                    if members.is_empty() {
                        String::new()
                    } else {
                        format!(" (the body differs in: {})", members.join(", "))
                    }
                ),
            ),
            Problem::FirstSentInvalid => (
                StatusCode::BAD_REQUEST,
                "first-sent-invalid",
                "Repeatability-First-Sent missing or malformed",
                "A request with a Repeatability-Request-ID must say when it was first sent, in Repeatability-First-Sent as an HTTP-date (e.g. Sun, 06 Nov 1994 08:49:37 GMT).".into(),
            ),
            Problem::RepeatabilityWindowPassed { window } => (
                StatusCode::PRECONDITION_FAILED,
                "repeatability-window-passed",
                "Request first sent too long ago to repeat",
                format!(
                    "Requests are tracked for {} s after they are first sent; this one was first sent earlier, so it is not known whether it ran. Check its outcome before sending it as a new request.",
                    window.as_secs()
                ),
            ),
            Problem::KeyCollision => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "key-collision",
                "Idempotency key cannot be used",
                "This key cannot be stored safely; use a different key.".into(),
            ),
            Problem::KeyExpired { expired_at } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "key-expired",
                "Idempotency key expired",
                format!(
                    "The record of this idempotency key expired at {}, so whether its first request ran can no longer be answered here, and it is not run again. Check the outcome of the first request; to send a new request, use a new key.",
                    httpdate::fmt_http_date(*expired_at)
                ),
            ),
            Problem::Overloaded { limit } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Too many requests in flight",
                format!("The request was not processed: {limit} keyed requests are already in flight; retry shortly with the same key."),
            ),
            Problem::StoreUnavailable { reason } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "Idempotency store unavailable",
                format!("The request was not processed because its idempotency key cannot be recorded right now ({reason}); retry later with the same key."),
            ),
            Problem::ResponseNotReplayable { limit } => (
                StatusCode::CONFLICT,
                "response-not-replayable",
                "Request already processed; response cannot be replayed",
                format!("A request with this key was processed, but its response was larger than {limit} bytes and was not stored. Do not retry it; look the result up instead."),
            ),
            Problem::HandlerFailed => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "handler-failed",
                "The request failed",
                "The server failed while processing this request. Whether a retry with the same key runs it again depends on the service's policy: it answers this same error if it stored it.".into(),
            ),
            Problem::ResponseNotStored { retry_after } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "response-not-stored",
                "Request processed; result not recorded yet",
                format!(
                    "The request was processed, but its result could not be recorded yet; retry after {} s with the same key to get it.",
                    retry_after_secs(*retry_after)
                ),
            ),
        }
    }

    /// The status this problem is sent with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The problem's `type` URI.
    pub fn type_uri(&self) -> String {
        format!("{TYPE_PREFIX}{}", self.parts().1)
    }

    /// The problem's stable `code` (the last part of its `type`), for
    /// clients that switch on a short string.
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    /// The JSON document: `type`, `code`, `title`, `status`, `detail`; a
    /// mismatch that knows which body members differ also lists them in
    /// `members`.
    pub fn body(&self) -> Bytes {
        let (status, slug, title, detail) = self.parts();
        let mut doc = serde_json::json!({
            "type": format!("{TYPE_PREFIX}{slug}"),
            "code": slug,
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        });
        if let Problem::Mismatch { members } = self
            && !members.is_empty()
        {
            doc["members"] = members.clone().into();
        }
        Bytes::from(doc.to_string())
    }

    /// The whole HTTP response.
    pub fn to_response(&self) -> Response<Bytes> {
        let mut r = Response::new(self.body());
        *r.status_mut() = self.status();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        r.extensions_mut().insert(ProblemCode(self.code()));
        // A problem describes this attempt, never a resource: no cache may
        // keep it for another request.
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let retry_after = match self {
            Problem::InFlight { retry_after } | Problem::ResponseNotStored { retry_after } => {
                Some(*retry_after)
            }
            Problem::StoreUnavailable { .. } | Problem::Overloaded { .. } => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        };
        if let Some(d) = retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(d)));
        }
        r
    }
}

/// The `code` of the layer's problem a response is, in its extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProblemCode(pub &'static str);

/// Whole seconds, rounded up, at least 1.
fn retry_after_secs(d: Duration) -> u64 {
    d.as_millis()
        .div_ceil(1000)
        .max(1)
        .try_into()
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_problem_json_with_stable_types() {
        let r = Problem::InFlight {
            retry_after: Duration::from_millis(1500),
        }
        .to_response();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["type"], "urn:idemstore:problem:request-in-flight");
        assert_eq!(v["code"], "request-in-flight");
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(v["status"], 409);
        assert!(v["detail"].as_str().unwrap().contains("retry after 2 s"));
    }
}

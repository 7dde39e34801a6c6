//! The metrics the layer records, through the [`metrics`] facade (nothing
//! until the application installs a recorder; no exporter is forced on it).
//! The store's own metrics are in [`idemstore::metrics`].
//!
//! | name | kind | what |
//! | --- | --- | --- |
//! | [`REQUESTS`] | counter, label `outcome` | keyed requests, by what the layer did (see [`Outcome`]) |
//! | [`HANDLER_SECONDS`] | histogram | time from a reserved request's handler start to its response being stored or freed |
//!
//! Requests the layer does not cover (other methods, no key when keys are
//! optional) are not counted.

use std::time::Duration;

/// Counter of keyed requests, label `outcome` (see [`Outcome::label`]).
pub const REQUESTS: &str = "idempotency_requests_total";
/// Histogram: seconds a reserved request's work took (handler, body,
/// storing).
pub const HANDLER_SECONDS: &str = "idempotency_handler_seconds";

/// What the layer did with a keyed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The key was reserved and the handler ran.
    Executed,
    /// A stored response was replayed.
    Replayed,
    /// The key is in flight for the same request: 409.
    Conflict,
    /// The key was used for a different request: 422.
    Mismatch,
    /// The key's record expired and the store still refuses it: 422.
    Expired,
    /// Refused before the store was asked, or by its rules: a missing,
    /// malformed or colliding key, a missing tenant, a body too large (4xx).
    Rejected,
    /// The store could not be used: 503, the handler did not run.
    Unavailable,
    /// Past the layer's `max_in_flight`: 503, the handler did not run.
    Overloaded,
}

impl Outcome {
    /// The `outcome` label's value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Executed => "executed",
            Outcome::Replayed => "replayed",
            Outcome::Conflict => "conflict",
            Outcome::Mismatch => "mismatch",
            Outcome::Expired => "expired",
            Outcome::Rejected => "rejected",
            Outcome::Unavailable => "unavailable",
            Outcome::Overloaded => "overloaded",
        }
    }
}

/// Counts one keyed request, and records its outcome on the request's
/// span (the `idempotency` span the layer opens for each keyed request).
pub(crate) fn request(outcome: Outcome) {
    ::metrics::counter!(REQUESTS, "outcome" => outcome.label()).increment(1);
    tracing::Span::current().record("outcome", outcome.label());
}

/// Notes how long a reserved request's work took.
pub(crate) fn handler(took: Duration) {
    ::metrics::histogram!(HANDLER_SECONDS).record(took.as_secs_f64());
}

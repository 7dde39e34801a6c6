//! Hooks for an application's own bookkeeping: called when a response is
//! stored under a key, and when a stored response is replayed
//! ([`IdempotencyConfig::on_stored`](crate::IdempotencyConfig::on_stored),
//! [`IdempotencyConfig::on_replayed`](crate::IdempotencyConfig::on_replayed)).
//!
//! A hook runs on the request's task, after the store answered and before
//! the client gets its response: keep it short (count, log, send to a
//! channel). A panicking hook is caught and logged; the request is
//! answered as if there were no hook.

use idemstore::Timestamp;
use std::fmt;
use std::sync::Arc;

/// What a hook is told about a record.
#[derive(Debug)]
#[non_exhaustive]
pub struct RecordEvent<'a> {
    /// The tenant, as the layer found it (the store keeps only its digest).
    pub tenant: &'a [u8],
    /// The idempotency key.
    pub key: &'a str,
    /// The stored response's status.
    pub status: u16,
    /// When the first execution reserved the key (replays only: the store
    /// says so when it replays).
    pub first_started_at: Option<Timestamp>,
    /// When the response was stored (replays only).
    pub stored_at: Option<Timestamp>,
    /// The first execution's request id (`X-Request-Id` or `traceparent`),
    /// if it sent one (and, for a replay, if its record keeps it).
    pub first_request_id: Option<&'a str>,
}

/// A hook: called with each event.
pub type Hook = Arc<dyn Fn(&RecordEvent<'_>) + Send + Sync>;

/// The hooks a layer calls; none by default.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Called once a response is stored under its key.
    pub stored: Option<Hook>,
    /// Called when a stored response is replayed.
    pub replayed: Option<Hook>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("stored", &self.stored.as_ref().map(|_| ".."))
            .field("replayed", &self.replayed.as_ref().map(|_| ".."))
            .finish()
    }
}

/// Calls `hook` with `event`, if there is one; a panic is logged, not
/// passed on.
pub(crate) fn fire(hook: Option<&Hook>, event: &RecordEvent<'_>) {
    let Some(hook) = hook else { return };
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(event))).is_err() {
        tracing::error!("an idempotency hook panicked; the request is answered as usual");
    }
}

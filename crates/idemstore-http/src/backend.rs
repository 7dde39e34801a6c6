//! The store behind the layer, as an async trait: the embedded engine
//! ([`Embedded`]) now, a shared Redis backend for many replicas later.
//!
//! A backend promises what `idemstore::Store` does: one reservation per
//! (tenant, key) at a time, replay of completed responses to the same
//! fingerprint, fencing of stale holders, expiry. Dropping a [`Lease`]
//! without completing or aborting it must abort it (the handler panicked or
//! the client went away), so no key stays stuck past its lease.

use idemstore::{Begin, Fingerprint, Response, Store, StoredResponse};
use std::future::Future;
use std::time::Duration;

/// Why a backend call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The store cannot be used (I/O error, poisoned, closed, unreachable).
    /// The layer answers 503 and does not run the handler.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The key was refused by the store.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// Two different (tenant, key) pairs share an index digest.
    #[error("index digest collision; use a different key")]
    Collision,
    /// The reservation was taken over after its lease ended; nothing stored.
    #[error("reservation lost: {0}")]
    Fenced(String),
    /// The response could not be stored (too large for the store).
    #[error("response too large to store: {0}")]
    TooLarge(String),
}

impl From<idemstore::Error> for BackendError {
    fn from(e: idemstore::Error) -> Self {
        match e {
            idemstore::Error::InvalidKey { .. } => BackendError::InvalidKey(e.to_string()),
            idemstore::Error::DigestCollision => BackendError::Collision,
            idemstore::Error::Fenced { .. } => BackendError::Fenced(e.to_string()),
            idemstore::Error::RecordTooLarge { .. } => BackendError::TooLarge(e.to_string()),
            e => BackendError::Unavailable(e.to_string()),
        }
    }
}

/// The answer to a `begin`.
#[derive(Debug)]
pub enum Outcome<L> {
    /// Run the handler, then complete or abort the lease.
    Reserved(L),
    /// Someone holds the key; their lease ends in `retry_after`.
    InFlight {
        /// Time until the holder's lease ends.
        retry_after: Duration,
        /// Whether the holder's request has the same fingerprint.
        same_request: bool,
    },
    /// Completed by the same request: send this back.
    Replay(StoredResponse),
    /// Completed by a different request.
    Mismatch,
}

/// A store the layer can use.
pub trait Backend: Send + Sync + 'static {
    /// A held reservation.
    type Lease: Lease;

    /// The longest key the backend accepts, if it has a limit; the layer
    /// refuses a configuration whose `key_len` allows longer keys.
    fn max_key_len(&self) -> Option<usize> {
        None
    }

    /// How long a reservation holds a key unless renewed, if known; the layer
    /// renews at least three times per lease.
    fn lease(&self) -> Option<Duration> {
        None
    }

    /// Starts a request; see [`idemstore::Store::begin`].
    fn begin(
        &self,
        tenant: &[u8],
        key: &[u8],
        fingerprint: Fingerprint,
    ) -> impl Future<Output = Result<Outcome<Self::Lease>, BackendError>> + Send;
}

/// A reservation held while the handler runs. Dropping it aborts it.
pub trait Lease: Send + 'static {
    /// Extends the lease.
    fn renew(&mut self) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Stores the response; resolves once it is as durable as the backend
    /// promises.
    fn complete(self, response: Response) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Frees the key without storing anything.
    fn abort(self) -> impl Future<Output = Result<(), BackendError>> + Send;
}

/// The embedded engine as a backend.
///
/// `begin` runs on the calling task: it never waits for the disk (at most one
/// `pread` of a stored record, normally from the page cache). `complete`
/// awaits the group commit without blocking the executor.
#[derive(Debug, Clone)]
pub struct Embedded(pub Store);

impl Backend for Embedded {
    type Lease = idemstore::Reservation;

    fn max_key_len(&self) -> Option<usize> {
        Some(self.0.config().max_key_len)
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.0.config().lease)
    }

    fn begin(
        &self,
        tenant: &[u8],
        key: &[u8],
        fingerprint: Fingerprint,
    ) -> impl Future<Output = Result<Outcome<Self::Lease>, BackendError>> + Send {
        let result = self.0.begin(tenant, key, fingerprint).map(|b| match b {
            Begin::Reserved(r) => Outcome::Reserved(r),
            Begin::InFlight(i) => Outcome::InFlight {
                retry_after: self.0.now().until(i.lease_end),
                same_request: i.same_request,
            },
            Begin::Replay(s) => Outcome::Replay(s),
            Begin::Mismatch(_) => Outcome::Mismatch,
        });
        std::future::ready(result.map_err(BackendError::from))
    }
}

impl Lease for idemstore::Reservation {
    fn renew(&mut self) -> impl Future<Output = Result<(), BackendError>> + Send {
        std::future::ready(
            idemstore::Reservation::renew(self)
                .map(|_| ())
                .map_err(BackendError::from),
        )
    }

    fn complete(self, response: Response) -> impl Future<Output = Result<(), BackendError>> + Send {
        let commit = self.complete_async(response);
        async move { commit.await.map_err(BackendError::from) }
    }

    fn abort(self) -> impl Future<Output = Result<(), BackendError>> + Send {
        std::future::ready(idemstore::Reservation::abort(self).map_err(BackendError::from))
    }
}

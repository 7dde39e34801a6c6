//! The store behind the layer, as an async trait: the embedded engine
//! ([`Store`] itself), or a shared one for many replicas (`idemstore-redis`).
//!
//! A backend promises what `idemstore::Store` does: one reservation per
//! (tenant, key) at a time, replay of completed responses to the same
//! fingerprint, fencing of stale holders, expiry. Dropping a [`Lease`]
//! without completing or aborting it must abort it, so no key stays stuck
//! past its lease. And once `complete` is called, a store failure never
//! frees the key: the backend keeps the response and stores it later
//! ([`BackendError::Deferred`]), or leaves the key reserved.

use idemstore::{Begin, Fingerprint, Key, Response, Store, StoredResponse, Tenant};
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
    /// The response is not stored yet (a full disk, Redis unreachable); the
    /// backend keeps it and stores it in the background, and the key stays
    /// reserved until then, so the handler never runs twice.
    #[error("response not stored yet, retried in the background: {0}")]
    Deferred(String),
}

impl From<idemstore::Error> for BackendError {
    fn from(e: idemstore::Error) -> Self {
        match e {
            idemstore::Error::InvalidKey { .. } => BackendError::InvalidKey(e.to_string()),
            idemstore::Error::DigestCollision => BackendError::Collision,
            idemstore::Error::Fenced { .. } => BackendError::Fenced(e.to_string()),
            idemstore::Error::RecordTooLarge { .. } => BackendError::TooLarge(e.to_string()),
            idemstore::Error::Deferred { .. } => BackendError::Deferred(e.to_string()),
            e => BackendError::Unavailable(e.to_string()),
        }
    }
}

/// The answer to a `begin`.
#[derive(Debug)]
pub enum Outcome<L> {
    /// Run the handler, then complete or abort the lease.
    Reserved(L),
    /// Someone holds the key.
    InFlight {
        /// Time until the holder's lease ends (zero when it is storing its
        /// response and cannot be taken over).
        lease_left: Duration,
        /// How long the holder has been running, if known.
        running_for: Option<Duration>,
        /// Whether the holder's request has the same fingerprint.
        same_request: bool,
    },
    /// Completed by the same request: send this back.
    Replay(StoredResponse),
    /// Completed by a different request; its stored record, when the
    /// backend has it at hand (the layer reads which body members differ
    /// from it; it is never sent to the client).
    Mismatch(Option<Box<StoredResponse>>),
    /// The key's record expired at `expired_at`, and the backend refuses
    /// the key for a grace period after that (its
    /// `refuse_expired_keys_for` option): do not run; the client must use
    /// a new key.
    Expired {
        /// When the key's completed record expired.
        expired_at: idemstore::Timestamp,
    },
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

    /// How long a completed response is replayed, if known (for the
    /// layer's optional expiry header on a first response).
    fn retention(&self) -> Option<Duration> {
        None
    }

    /// The largest response body the backend can store, if it has a limit
    /// (the rest of its record limit is left for the key and headers); the
    /// layer refuses a `max_response_bytes` above it.
    fn max_response_body(&self) -> Option<usize> {
        None
    }

    /// Starts a request; see [`idemstore::Store::begin`].
    fn begin(
        &self,
        tenant: Tenant<'_>,
        key: Key<'_>,
        fingerprint: Fingerprint,
    ) -> impl Future<Output = Result<Outcome<Self::Lease>, BackendError>> + Send {
        self.begin_with(tenant, key, fingerprint, None)
    }

    /// Starts a request whose record is kept for `retention` once
    /// completed (`None`: the backend's own), its reservation too; see
    /// [`idemstore::Store::begin_with`]. A retention not longer than the
    /// lease is refused ([`BackendError::InvalidKey`] is not it: the layer
    /// checks every route's retention when it is built).
    fn begin_with(
        &self,
        tenant: Tenant<'_>,
        key: Key<'_>,
        fingerprint: Fingerprint,
        retention: Option<Duration>,
    ) -> impl Future<Output = Result<Outcome<Self::Lease>, BackendError>> + Send;
}

/// A reservation held while the handler runs. Dropping it aborts it.
pub trait Lease: Send + 'static {
    /// The reservation's fencing token (increases with every reservation of
    /// the key), for logs and traces.
    fn token(&self) -> u64;
    /// Extends the lease.
    fn renew(&mut self) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Whether `complete` would accept `response`; [`BackendError::TooLarge`]
    /// if not, so the layer can store a smaller record while it holds the key.
    fn fits(&self, response: &Response) -> Result<(), BackendError> {
        let _ = response;
        Ok(())
    }
    /// Stores the response; resolves once it is as durable as the backend
    /// promises. If the store fails, the key must stay reserved: the backend
    /// keeps the response and answers [`BackendError::Deferred`] (or, when it
    /// cannot store it any more, [`BackendError::Unavailable`] with the key
    /// still held).
    fn complete(self, response: Response) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Frees the key without storing anything.
    fn abort(self) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Stops holding the key without freeing it: it stays reserved until the
    /// lease ends. The layer does this with work cut short by a shutdown.
    fn abandon(self);
}

/// Bytes of a record kept for its status, headers, timestamps and framing
/// when the layer's response body limit is checked against the store's
/// record limit (a record with more headers than this stores the
/// not-replayable notice instead).
pub const RECORD_ROOM: usize = 16 * 1024;

/// The embedded engine is a backend as it is: `IdempotencyLayer::new(store,
/// config)`.
///
/// `begin` runs on the calling task: it never waits for the disk (at most one
/// `pread` of a stored record, normally from the page cache). `complete`
/// awaits the group commit without blocking the executor.
impl Backend for Store {
    type Lease = idemstore::Reservation;

    fn max_key_len(&self) -> Option<usize> {
        Some(self.config().max_key_len)
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.config().lease)
    }

    fn retention(&self) -> Option<Duration> {
        Some(self.config().retention)
    }

    fn max_response_body(&self) -> Option<usize> {
        Some(
            self.config()
                .max_record_bytes
                .saturating_sub(RECORD_ROOM + self.config().max_key_len),
        )
    }

    fn begin_with(
        &self,
        tenant: Tenant<'_>,
        key: Key<'_>,
        fingerprint: Fingerprint,
        retention: Option<Duration>,
    ) -> impl Future<Output = Result<Outcome<Self::Lease>, BackendError>> + Send {
        let retention = retention.unwrap_or(self.config().retention);
        let result =
            Store::begin_with(self, tenant, key, fingerprint, retention).map(|b| match b {
                Begin::Reserved(r) => Outcome::Reserved(r),
                Begin::InFlight(i) => {
                    let now = self.now();
                    Outcome::InFlight {
                        lease_left: now.until(i.lease_end),
                        running_for: Some(i.started_at.until(now)),
                        same_request: i.same_request,
                    }
                }
                Begin::Replay(s) => Outcome::Replay(s),
                Begin::Mismatch(m) => Outcome::Mismatch(Some(m.stored)),
                Begin::Expired(e) => Outcome::Expired {
                    expired_at: e.expired_at,
                },
            });
        std::future::ready(result.map_err(BackendError::from))
    }
}

impl Lease for idemstore::Reservation {
    fn token(&self) -> u64 {
        idemstore::Reservation::token(self)
    }

    fn renew(&mut self) -> impl Future<Output = Result<(), BackendError>> + Send {
        std::future::ready(
            idemstore::Reservation::renew(self)
                .map(|_| ())
                .map_err(BackendError::from),
        )
    }

    fn fits(&self, response: &Response) -> Result<(), BackendError> {
        self.check_fits(response).map_err(BackendError::from)
    }

    fn complete(self, response: Response) -> impl Future<Output = Result<(), BackendError>> + Send {
        let commit = self.complete_async(response);
        async move { commit.await.map_err(BackendError::from) }
    }

    fn abort(self) -> impl Future<Output = Result<(), BackendError>> + Send {
        std::future::ready(idemstore::Reservation::abort(self).map_err(BackendError::from))
    }

    fn abandon(self) {
        idemstore::Reservation::abandon(self);
    }
}

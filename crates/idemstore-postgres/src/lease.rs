//! [`PostgresLease`]: a held reservation; completing it on its own, or
//! inside the caller's transaction ([`PostgresLease::complete_in`]).

use crate::backend::{PostgresBackend, unavailable};
use crate::{ms, retrying, sql};
use idemstore::{Fingerprint, Response, StoredResponse, TenantDigest, Timestamp};
use idemstore_http::{BackendError, HeldKey, Lease};
use sqlx::PgConnection;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A reservation held in PostgreSQL. Dropping it without completing or
/// aborting it aborts it (in the background).
pub struct PostgresLease {
    holder: Holder,
    tenant: TenantDigest,
    key: Vec<u8>,
    fingerprint: Fingerprint,
    started_at: Timestamp,
    done: bool,
}

impl std::fmt::Debug for PostgresLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLease")
            .field("token", &self.holder.token)
            .finish_non_exhaustive()
    }
}

/// What fences a holder's calls: the row, its token and nonce.
#[derive(Clone)]
struct Holder {
    backend: PostgresBackend,
    digest: Vec<u8>,
    token: i64,
    nonce: i64,
    retention: Duration,
}

fn fenced() -> BackendError {
    BackendError::Fenced(
        "the lease ended and a later request took the key over; nothing was stored".into(),
    )
}

impl Holder {
    fn timeout(&self) -> Duration {
        self.backend.0.config.timeout
    }

    async fn complete(&self, record: &[u8]) -> Result<bool, BackendError> {
        let n: i64 = retrying(self.timeout(), "storing the response", || {
            sqlx::query_scalar(sql::COMPLETE)
                .bind(&self.digest)
                .bind(self.token)
                .bind(self.nonce)
                .bind(record)
                .bind(ms(self.retention))
                .fetch_one(&self.backend.0.pool)
        })
        .await?;
        Ok(n > 0)
    }

    async fn abort(&self) -> Result<bool, BackendError> {
        let n: i64 = retrying(self.timeout(), "freeing the key", || {
            sqlx::query_scalar(sql::ABORT)
                .bind(&self.digest)
                .bind(self.token)
                .bind(self.nonce)
                .bind(ms(self.backend.0.config.lease))
                .fetch_one(&self.backend.0.pool)
        })
        .await?;
        Ok(n > 0)
    }

    async fn renew(&self) -> Result<bool, BackendError> {
        let done = retrying(self.timeout(), "renewing the lease", || {
            sqlx::query(sql::RENEW)
                .bind(&self.digest)
                .bind(self.token)
                .bind(self.nonce)
                .bind(ms(self.backend.0.config.lease))
                .bind(ms(self.retention))
                .execute(&self.backend.0.pool)
        })
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Aborts in the background (a lease dropped unfinished).
    fn abort_later(self) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = self.abort().await {
                    tracing::warn!(error = %e, "aborting a dropped idempotency lease failed; it ends with its lease");
                }
            });
        }
    }
}

/// First pause between tries of a completion the database did not take.
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// Longest pause between tries.
const RETRY_MAX: Duration = Duration::from_millis(1000);

/// Stores a completion whose first try failed (the database down, slow, or
/// its pool exhausted), with growing pauses, renewing the lease between
/// tries, until it is stored, the key was taken over, or the retention has
/// passed (the record would have expired: the key is left to its lease).
/// The key stays reserved meanwhile: a retry gets 409, then the replay.
/// Counted in `deferred` by the caller before it is spawned.
async fn retry_complete(holder: Holder, record: Vec<u8>) {
    let deferred = &holder.backend.0.deferred;
    let give_up = tokio::time::Instant::now() + holder.retention;
    let mut pause = RETRY_FIRST;
    loop {
        if tokio::time::Instant::now() >= give_up {
            tracing::error!(
                "a deferred idempotent response could not be stored in PostgreSQL within the \
                 retention; its key is left to its lease"
            );
            break;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
        match holder.complete(&record).await {
            Ok(true) => {
                tracing::info!("a deferred idempotent response is now stored in PostgreSQL");
                break;
            }
            Ok(false) => {
                tracing::error!(
                    "a deferred idempotent response could not be stored: its lease ended and \
                     a later request took the key over"
                );
                break;
            }
            Err(_) => {
                let _ = holder.renew().await;
            }
        }
    }
    deferred.fetch_sub(1, Ordering::AcqRel);
}

impl PostgresLease {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        backend: PostgresBackend,
        digest: Vec<u8>,
        tenant: TenantDigest,
        key: Vec<u8>,
        fingerprint: Fingerprint,
        token: i64,
        nonce: i64,
        started_at: Timestamp,
        retention: Duration,
    ) -> PostgresLease {
        PostgresLease {
            holder: Holder {
                backend,
                digest,
                token,
                nonce,
                retention,
            },
            tenant,
            key,
            fingerprint,
            started_at,
            done: false,
        }
    }

    /// The record of `response` in the engine's codec. Its two times are
    /// placeholders: the row keeps the database's completion and expiry
    /// times beside it, and a replay reads those.
    fn record(&self, response: Response) -> Result<Vec<u8>, BackendError> {
        let stored = StoredResponse {
            fingerprint: self.fingerprint,
            started_at: self.started_at,
            completed_at: self.started_at,
            expires_at: self.started_at.saturating_add(self.holder.retention),
            response,
        };
        self.fits(&stored.response)?;
        idemstore::codec::encode(&self.tenant, &self.key, self.holder.token_u64(), &stored)
            .map_err(BackendError::TooLarge)
    }

    /// Stores `response` as the key's record inside the caller's
    /// transaction on `conn` (`&mut *tx`): the record becomes visible
    /// exactly when that transaction commits, so the handler's own writes
    /// (a payment row) and the stored response commit together or not at
    /// all. Fenced like [`Lease::complete`]: if the lease ended and another
    /// request took the key over, this fails with
    /// [`BackendError::Fenced`], and the caller must roll back (the other
    /// request's writes are the ones that count).
    ///
    /// Returns a [`Coupled`] guard. After a commit call
    /// [`Coupled::committed`]; dropped otherwise (a rollback, an error), it
    /// frees the key in the background if the transaction did not commit
    /// the record, so a retry runs at once (its writes were rolled back
    /// too). Until the transaction ends, the key's row is locked: a retry
    /// waits for it, then replays or runs.
    pub async fn complete_in(
        mut self,
        conn: &mut PgConnection,
        response: Response,
    ) -> Result<Coupled, BackendError> {
        let record = self.record(response)?;
        let h = &self.holder;
        // Not retried here: a failed statement aborts the caller's
        // transaction, which only the caller can run again.
        let n: i64 = tokio::time::timeout(
            h.timeout(),
            sqlx::query_scalar(sql::COMPLETE)
                .bind(&h.digest)
                .bind(h.token)
                .bind(h.nonce)
                .bind(&record)
                .bind(ms(h.retention))
                .fetch_one(&mut *conn),
        )
        .await
        .map_err(|_| unavailable("storing the response in the transaction", "timed out"))?
        .map_err(|e| unavailable("storing the response in the transaction", e))?;
        if n == 0 {
            return Err(fenced());
        }
        self.done = true;
        Ok(Coupled {
            holder: Some(self.holder.clone()),
        })
    }
}

/// Stores the response a handler is about to return (status, headers,
/// whole body) as the record of its request's key, inside the transaction
/// on `conn`, exactly as the layer would store it (replayed headers,
/// redaction, body member digests): for routes with
/// [`RoutePolicy::stored_by_handler`](idemstore_http::RoutePolicy::stored_by_handler),
/// whose key the layer hands over as a [`HeldKey`] request extension.
///
/// Returns the [`Coupled`] guard of [`PostgresLease::complete_in`] (call
/// [`Coupled::committed`] after the commit), or `None` when the route's
/// store policy stores no response of `status`: the key is then freed at
/// once. Fails with `Fenced` when the key is no longer this request's (the
/// lease ended and another request took it over, or it was taken from
/// `held` before): roll back.
pub async fn complete_in_handler(
    held: &HeldKey<PostgresLease>,
    conn: &mut PgConnection,
    status: http::StatusCode,
    headers: &http::HeaderMap,
    body: &bytes::Bytes,
) -> Result<Option<Coupled>, BackendError> {
    let Some(lease) = held.take().await else {
        return Err(BackendError::Fenced(
            "this request's key was already taken from its HeldKey".into(),
        ));
    };
    match held.record(&lease, status, headers, body) {
        Some(record) => lease.complete_in(conn, record).await.map(Some),
        None => {
            lease.abort().await?;
            Ok(None)
        }
    }
}

impl Holder {
    fn token_u64(&self) -> u64 {
        u64::try_from(self.token).unwrap_or(0)
    }
}

/// A lease completed inside a caller's transaction that has not said yet
/// whether the transaction committed (see [`PostgresLease::complete_in`]).
#[must_use = "call committed() after the transaction commits; dropping frees the key unless it committed"]
pub struct Coupled {
    holder: Option<Holder>,
}

impl std::fmt::Debug for Coupled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coupled").finish_non_exhaustive()
    }
}

impl Coupled {
    /// The transaction committed: the key replays its response from now on.
    pub fn committed(mut self) {
        self.holder = None;
    }
}

impl Drop for Coupled {
    fn drop(&mut self) {
        // Fenced by state: a committed record is no longer a reservation,
        // so this frees the key only if the transaction rolled back (it
        // waits for the transaction's row lock first).
        if let Some(h) = self.holder.take() {
            h.abort_later();
        }
    }
}

impl Lease for PostgresLease {
    fn token(&self) -> u64 {
        self.holder.token_u64()
    }

    fn renew(&mut self) -> impl Future<Output = Result<(), BackendError>> + Send {
        let holder = self.holder.clone();
        async move {
            if holder.renew().await? {
                Ok(())
            } else {
                Err(fenced())
            }
        }
    }

    fn fits(&self, response: &Response) -> Result<(), BackendError> {
        if let Some(why) = idemstore::codec::unencodable(response) {
            return Err(BackendError::TooLarge(why));
        }
        let size = idemstore::codec::encoded_len(self.key.len(), response);
        let max = self.holder.backend.0.config.max_record_bytes;
        if size > max {
            return Err(BackendError::TooLarge(format!(
                "the record is {size} bytes; the backend stores at most {max} (PostgresConfig::max_record_bytes)"
            )));
        }
        Ok(())
    }

    fn complete(
        mut self,
        response: Response,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        self.done = true;
        let record = self.record(response);
        let holder = self.holder.clone();
        async move {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    // Cannot be stored: free the key rather than leave it held.
                    let _ = holder.abort().await;
                    return Err(e);
                }
            };
            let why = match holder.complete(&record).await {
                Ok(true) => return Ok(()),
                Ok(false) => return Err(fenced()),
                Err(e) => e.to_string(),
            };
            // The key stays reserved; store the record as soon as the
            // database answers again, renewing the lease meanwhile.
            holder.backend.0.deferred.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(retry_complete(holder, record));
            Err(BackendError::Deferred(why))
        }
    }

    fn abandon(mut self) {
        // The row keeps its lease end: the key is free once it passes.
        self.done = true;
    }

    fn abort(mut self) -> impl Future<Output = Result<(), BackendError>> + Send {
        self.done = true;
        let holder = self.holder.clone();
        async move {
            if holder.abort().await? {
                Ok(())
            } else {
                Err(fenced())
            }
        }
    }
}

impl Drop for PostgresLease {
    fn drop(&mut self) {
        if !self.done {
            self.holder.clone().abort_later();
        }
    }
}

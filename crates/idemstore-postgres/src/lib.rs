//! # idemstore-postgres
//!
//! The idempotency contract of [`idemstore`] on PostgreSQL, for services
//! that already run it: every replica's [`IdempotencyLayer`] shares one
//! table, and a handler can commit its own writes and the stored response
//! in **one transaction** ([`PostgresLease::complete_in`]): a crash
//! mid-handler rolls both back (the retry legitimately runs again), and a
//! committed payment always replays.
//!
//! [`IdempotencyLayer`]: idemstore_http::IdempotencyLayer
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use idemstore_postgres::{PostgresBackend, PostgresConfig};
//! let backend = PostgresBackend::connect("postgres://app@127.0.0.1/app", PostgresConfig::default()).await?;
//! let tenant = idemstore_http::TenantSource::Header(http::HeaderName::from_static("x-api-key"));
//! let layer = idemstore_http::IdempotencyLayer::new(backend, idemstore_http::IdempotencyConfig::new(tenant));
//! # Ok(()) }
//! ```
//!
//! ## How it maps
//!
//! One row per key in `idemstore_records` (schema in `migrations/`, created
//! and migrated by [`PostgresBackend::connect`] with `sqlx::migrate!`:
//! versioned, applied once, under an advisory lock so that processes
//! starting together do not race), keyed by the engine's 128-bit index
//! digest of (tenant digest, key). The row holds the tenant's digest (never
//! the tenant), the key, state (`p` reserved, `c` completed, `a` aborted),
//! the fencing token (+1 at every reservation of the key) and the holder's
//! random nonce, the request fingerprint, lease end, the completed record in
//! the engine's codec ([`idemstore::codec`]: the same bytes as the other
//! backends) and the row's expiry. Every time comes from the database's
//! clock, never a replica's.
//!
//! - `begin` is one `INSERT .. ON CONFLICT DO UPDATE` round trip: a new key
//!   is inserted, a free row (aborted, expired, or a reservation whose lease
//!   ended) is taken over with its token incremented, and otherwise the same
//!   statement returns the row (in flight, replay, mismatch, collision).
//! - `complete`, `abort` and `renew` are one `UPDATE` each, fenced by token
//!   and nonce: a holder whose lease ended and was taken over changes
//!   nothing.
//! - Expiry: a sweeper task deletes expired rows in batches
//!   (`FOR UPDATE SKIP LOCKED`, so the sweepers of several processes share
//!   the work), every [`PostgresConfig::sweep_interval`]. Expiry is exact at
//!   read time regardless: an expired row is free to `begin`.
//!
//! Why not partitions by expiry day, dropped whole (the embedded engine's
//! TTL buckets)? PostgreSQL enforces a unique key only within a partition,
//! and only if it includes the partition key: a key's rows of two expiry
//! days would be two rows, so "one reservation per key" would need a lock
//! and a second statement in every `begin`, which this design does in one
//! statement. The table is instead kept small by the sweeper, with a low
//! autovacuum threshold and a fill factor that leaves room for updates in
//! place.
//!
//! ## The record in the handler's transaction
//!
//! ```no_run
//! # async fn handler(lease: idemstore_postgres::PostgresLease, backend: idemstore_postgres::PostgresBackend)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! let mut tx = backend.pool().begin().await?;
//! sqlx::query("INSERT INTO payments (id, amount) VALUES ($1, $2)")
//!     .bind("pay_1").bind(500_i64).execute(&mut *tx).await?;
//! let coupled = lease
//!     .complete_in(&mut tx, idemstore::Response::new(201, r#"{"id":"pay_1"}"#))
//!     .await?;
//! tx.commit().await?;
//! coupled.committed();
//! # Ok(()) }
//! ```
//!
//! The stored response becomes visible exactly when the transaction
//! commits. A rollback (or a crash) leaves the row reserved, and the
//! dropped [`Coupled`] guard frees it, so the retry runs at once: nothing
//! of the first attempt was committed. A holder whose lease ended and was
//! taken over gets [`BackendError::Fenced`](idemstore_http::BackendError)
//! from `complete_in` and must roll back, so two attempts never both
//! commit.
//!
//! ## Failure
//!
//! - Database down, slow, or the pool exhausted: every call is bounded by
//!   [`PostgresConfig::timeout`] (waiting for a connection included). A
//!   `begin` that fails is a 503 and the handler does not run; if its reply
//!   was lost after the row was written, the reservation is freed by its
//!   nonce in the background: one batched statement every 250 ms for all
//!   such begins, until freed or their lease would have ended.
//! - Serialization failures and deadlocks of the backend's own statements
//!   are retried (a few times, within the timeout).
//! - A completion the database does not take is kept and retried in the
//!   background with the lease renewed, the key staying reserved
//!   (`BackendError::Deferred`: the layer answers 503, a retry gets 409,
//!   then the replay); the handler never runs twice.
//!
//! ## Layout
//!
//! `config` ([`PostgresConfig`]), `backend` ([`PostgresBackend`]: pool,
//! schema, sweeper), `begin` (the [`Backend`](idemstore_http::Backend)
//! impl), `lease` ([`PostgresLease`], [`Coupled`]), `unsettled` (begins
//! whose reply was lost, freed in batches), `sql` (the statements).

mod backend;
mod begin;
mod config;
mod lease;
mod sql;
mod unsettled;

pub use backend::PostgresBackend;
pub use config::PostgresConfig;
pub use lease::{Coupled, PostgresLease, complete_in_handler};

use backend::unavailable;
use idemstore_http::BackendError;
use std::time::Duration;

/// A duration in whole milliseconds, as the statements take it.
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Runs `call` (one statement on the pool) within `timeout`, again after a
/// serialization failure or deadlock (SQLSTATE 40001, 40P01), at most four
/// times; any other error, or the time running out, is `Unavailable`.
pub(crate) async fn retrying<T, F, Fut>(
    timeout: Duration,
    what: &str,
    mut call: F,
) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tries = 0;
    loop {
        tries += 1;
        match tokio::time::timeout_at(deadline, call()).await {
            Err(_) => return Err(unavailable(what, "timed out")),
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if tries < 4 && retryable(&e) => {}
            Ok(Err(e)) => return Err(unavailable(what, e)),
        }
    }
}

fn retryable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "40001" || c == "40P01")
}

//! [`RedisLease`]: a reservation held in Redis, its renew / complete /
//! abort, and the background retry of a completion Redis did not take.

use crate::backend::{DeferredGuard, RedisBackend};
use crate::conn::unavailable;
use crate::ms;
use idemstore::{Fingerprint, Response, StoredResponse, TenantDigest, Timestamp};
use idemstore_http::{BackendError, Lease};
use redis::Cmd;
use std::time::Duration;

/// A reservation held in Redis. Dropping it unfinished aborts it (in the
/// background, on the current tokio runtime); if that cannot run, the lease
/// simply ends.
pub struct RedisLease {
    backend: RedisBackend,
    rkey: String,
    tenant: TenantDigest,
    key: Vec<u8>,
    fingerprint: Fingerprint,
    token: u64,
    nonce: u64,
    started_at: Timestamp,
    /// How long the completion is kept (and the hash meanwhile).
    retention: Duration,
    done: bool,
}

impl std::fmt::Debug for RedisLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLease")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// The key of a reservation and the proof that it is this holder's.
#[derive(Clone)]
struct Holder {
    backend: RedisBackend,
    rkey: String,
    token: u64,
    nonce: u64,
    retention: Duration,
}

impl Holder {
    /// Extends the lease; `false` when the key is no longer this holder's.
    /// Counts only once the replicas hold it, when they are waited for.
    async fn renew(&self) -> Result<bool, BackendError> {
        let b = &self.backend;
        let c = &b.0.config;
        let args = |cmd: &mut Cmd| {
            cmd.arg(self.token)
                .arg(self.nonce)
                .arg(ms(c.lease))
                .arg(ms(self.retention));
        };
        let reply = b
            .script(&b.0.scripts.renew, &self.rkey, &args, true)
            .await?;
        match redis::from_redis_value::<i64>(reply.value) {
            Ok(1) if !reply.confirmed => Err(b.replicas_missing("the lease renewal")),
            Ok(n) => Ok(n == 1),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Stores `record`: `Some(true)` once stored (and held by the replicas
    /// waited for), `Some(false)` when fenced, `None` when stored on the
    /// master only.
    async fn complete(
        &self,
        record: &[u8],
        retention: Duration,
    ) -> Result<Option<bool>, BackendError> {
        let b = &self.backend;
        let args = |cmd: &mut Cmd| {
            cmd.arg(self.token)
                .arg(self.nonce)
                .arg(record)
                .arg(ms(retention))
                .arg(b.0.config.grace_ms());
        };
        let reply = b
            .script(&b.0.scripts.complete, &self.rkey, &args, true)
            .await?;
        match redis::from_redis_value::<i64>(reply.value) {
            Ok(1) if !reply.confirmed => Ok(None),
            Ok(n) => Ok(Some(n == 1)),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Frees the key; `false` when it is no longer this holder's. Not
    /// waited for: a failover that forgets an abort leaves the key
    /// reserved until its lease ends, never run twice.
    async fn abort(&self) -> Result<bool, BackendError> {
        let b = &self.backend;
        let args = |cmd: &mut Cmd| {
            cmd.arg(self.token)
                .arg(self.nonce)
                .arg(ms(b.0.config.lease));
        };
        let reply = b
            .script(&b.0.scripts.abort, &self.rkey, &args, false)
            .await?;
        redis::from_redis_value::<i64>(reply.value)
            .map(|n| n == 1)
            .map_err(unavailable)
    }
}

impl RedisLease {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        backend: RedisBackend,
        rkey: String,
        tenant: TenantDigest,
        key: Vec<u8>,
        fingerprint: Fingerprint,
        token: u64,
        nonce: u64,
        started_at: Timestamp,
        retention: Duration,
    ) -> RedisLease {
        RedisLease {
            backend,
            rkey,
            tenant,
            key,
            fingerprint,
            token,
            nonce,
            started_at,
            retention,
            done: false,
        }
    }

    /// The fencing token.
    pub fn token(&self) -> u64 {
        self.token
    }

    fn holder(&self) -> Holder {
        Holder {
            backend: self.backend.clone(),
            rkey: self.rkey.clone(),
            token: self.token,
            nonce: self.nonce,
            retention: self.retention,
        }
    }

    /// Aborts, ignoring whether it was still ours.
    pub(crate) async fn abort_quietly(mut self) -> Result<bool, BackendError> {
        self.done = true;
        self.holder().abort().await
    }
}

/// First pause between tries of a completion Redis did not take.
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// Longest pause between tries.
const RETRY_MAX: Duration = Duration::from_millis(500);

/// Stores a completion whose first try failed (Redis down, slow or out of
/// memory, or replicas that did not acknowledge it), trying again with
/// growing pauses (at most `RETRY_MAX`, so the record lands soon after
/// Redis returns) and renewing the lease between tries, until it is stored,
/// the key was taken over, the retention has passed (the record would have
/// expired by then: the key is left to its lease), or the runtime stops.
/// The key stays reserved in Redis meanwhile: a retry of the request gets
/// 409, then the replay.
async fn retry_complete(
    guard: DeferredGuard,
    holder: Holder,
    record: Vec<u8>,
    retention: Duration,
) {
    let _guard = guard;
    let give_up = tokio::time::Instant::now() + retention;
    let mut pause = RETRY_FIRST;
    loop {
        if tokio::time::Instant::now() >= give_up {
            tracing::error!(
                "a deferred idempotent response could not be stored in Redis within the \
                 retention; its key is left to its lease"
            );
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
        match holder.complete(&record, retention).await {
            Ok(Some(true)) => {
                tracing::info!("a deferred idempotent response is now stored in Redis");
                return;
            }
            Ok(Some(false)) => {
                tracing::error!(
                    "a deferred idempotent response could not be stored: its lease ended and \
                     a later request took the key over"
                );
                return;
            }
            Ok(None) | Err(_) => {
                // Keep the key ours while Redis or its replicas are slow
                // rather than gone.
                let _ = holder.renew().await;
            }
        }
    }
}

fn fenced() -> BackendError {
    BackendError::Fenced(
        "the lease ended and a later request took the key over; nothing was stored".into(),
    )
}

impl Lease for RedisLease {
    fn token(&self) -> u64 {
        self.token
    }

    fn renew(&mut self) -> impl Future<Output = Result<(), BackendError>> + Send {
        let holder = self.holder();
        async move {
            if holder.renew().await? {
                Ok(())
            } else {
                Err(fenced())
            }
        }
    }

    fn fits(&self, response: &Response) -> Result<(), BackendError> {
        idemstore::codec::unencodable(response)
            .map_or(Ok(()), |why| Err(BackendError::TooLarge(why)))
    }

    fn complete(
        mut self,
        response: Response,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        self.done = true;
        let retention = self.retention;
        // The record's own two times are placeholders from the server's
        // start time: the script keeps the server's completion and expiry
        // times beside it, and a replay reads those.
        let stored = StoredResponse {
            fingerprint: self.fingerprint,
            started_at: self.started_at,
            completed_at: self.started_at,
            expires_at: self.started_at.saturating_add(retention),
            response,
        };
        let record = idemstore::codec::encode(&self.tenant, &self.key, self.token, &stored);
        let holder = self.holder();
        async move {
            let record = match record {
                Ok(r) => r,
                Err(why) => {
                    // Cannot be stored: free the key rather than leave it held.
                    let _ = holder.abort().await;
                    return Err(BackendError::TooLarge(why));
                }
            };
            let why = match holder.complete(&record, retention).await {
                Ok(Some(true)) => return Ok(()),
                Ok(Some(false)) => return Err(fenced()),
                Ok(None) => holder
                    .backend
                    .replicas_missing("the completion")
                    .to_string(),
                Err(e) => e.to_string(),
            };
            // The key stays reserved in Redis; store the record (on enough
            // replicas) as soon as Redis answers again, renewing the lease.
            let guard = holder.backend.deferred_guard();
            tokio::spawn(retry_complete(guard, holder, record, retention));
            Err(BackendError::Deferred(why))
        }
    }

    fn abandon(mut self) {
        // The hash keeps its lease end: the key is free once it passes.
        self.done = true;
    }

    fn abort(mut self) -> impl Future<Output = Result<(), BackendError>> + Send {
        self.done = true;
        let holder = self.holder();
        async move {
            if holder.abort().await? {
                Ok(())
            } else {
                Err(fenced())
            }
        }
    }
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let holder = self.holder();
            rt.spawn(async move {
                if let Err(e) = holder.abort().await {
                    tracing::warn!(error = %e, "aborting a dropped idempotency lease failed; it ends with its lease");
                }
            });
        }
    }
}

//! `begin` ([`Backend`] for [`PostgresBackend`]): reserve, replay or refuse,
//! in one statement.

use crate::backend::{PostgresBackend, unavailable};
use crate::lease::PostgresLease;
use crate::{ms, retrying, sql};
use idemstore::{Fingerprint, Key, Tenant, TenantDigest, Timestamp};
use idemstore_http::{Backend, BackendError, Outcome};
use sqlx::Row;
use std::time::Duration;

/// A random 64-bit value (std's randomly keyed hasher, seeded from the OS),
/// to tell reservations apart even if a key's tokens restart.
fn random_nonce() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    i64::from_ne_bytes(h.finish().to_ne_bytes())
}

/// A row as the begin statement returns it.
struct Seen {
    state: i8,
    token: i64,
    started_at: i64,
    lease_end: i64,
    tenant: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    fingerprint: Option<Vec<u8>>,
    record: Option<Vec<u8>>,
    completed_at: Option<i64>,
    expires_at: Option<i64>,
    now: i64,
}

impl Seen {
    /// True for an existing row the snapshot shows free, by the insert's
    /// `WHERE` at the same `now()`: the insert judged a newer version of it,
    /// which this row is not. Times are whole milliseconds here, so only a
    /// time a whole millisecond before `now` counts as passed.
    fn is_stale(&self) -> bool {
        self.state != b'r' as i8
            && (self.state == b'a' as i8
                || self.expires_at.is_some_and(|e| e < self.now)
                || (self.state == b'p' as i8 && self.lease_end < self.now))
    }
}

fn millis(n: i64) -> Duration {
    Duration::from_millis(u64::try_from(n).unwrap_or(0))
}

fn stamp(n: i64) -> Timestamp {
    Timestamp(u64::try_from(n).unwrap_or(0))
}

impl Backend for PostgresBackend {
    type Lease = PostgresLease;

    fn max_key_len(&self) -> Option<usize> {
        Some(self.0.config.max_key_len)
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.0.config.lease)
    }

    fn retention(&self) -> Option<Duration> {
        Some(self.0.config.retention)
    }

    fn max_response_body(&self) -> Option<usize> {
        Some(
            self.0
                .config
                .max_record_bytes
                .saturating_sub(idemstore_http::RECORD_ROOM + self.0.config.max_key_len),
        )
    }

    fn begin_with(
        &self,
        tenant: Tenant<'_>,
        key: Key<'_>,
        fingerprint: Fingerprint,
        retention: Option<Duration>,
    ) -> impl Future<Output = Result<Outcome<PostgresLease>, BackendError>> + Send {
        let retention = retention.unwrap_or(self.0.config.retention);
        let td = TenantDigest::of(tenant.as_bytes());
        let key = key.as_bytes().to_vec();
        let this = self.clone();
        async move {
            let c = &this.0.config;
            if retention <= c.lease {
                return Err(unavailable(
                    "begin",
                    format!(
                        "a record's retention ({retention:?}) must be longer than the lease ({:?})",
                        c.lease
                    ),
                ));
            }
            if key.len() > c.max_key_len || key.is_empty() {
                return Err(BackendError::InvalidKey(format!(
                    "the key is {} bytes; send 1..={}",
                    key.len(),
                    c.max_key_len
                )));
            }
            let digest = PostgresBackend::key_digest(&td, &key);
            let nonce = random_nonce();
            let seen = match this
                .run_begin(&digest, &td, &key, nonce, fingerprint, retention)
                .await
            {
                Ok(seen) => seen,
                Err(e) => {
                    // The reply may be what was lost, or the statement may
                    // still run (a paused server resumes it): the
                    // reservation it makes is freed by its nonce (nothing
                    // ran; the client is told 503).
                    this.0.unsettled.add(digest, nonce, c.lease);
                    return Err(e);
                }
            };
            this.judge(seen, td, key, digest, nonce, fingerprint, retention)
        }
    }
}

impl PostgresBackend {
    async fn run_begin(
        &self,
        digest: &[u8],
        td: &TenantDigest,
        key: &[u8],
        nonce: i64,
        fingerprint: Fingerprint,
        retention: Duration,
    ) -> Result<Seen, BackendError> {
        let c = &self.0.config;
        // A row committed by another session after the statement's snapshot
        // is seen by neither half: run it again (rare; bounded). A row seen
        // reserved is looked at once more: the statement may have waited
        // for the holder's transaction (a completion inside the caller's
        // transaction) and still read the reservation from its snapshot;
        // the second statement reads the commit, and replays it. A row the
        // snapshot shows free (aborted, expired, a lease that ended) was
        // not free for the insert's half, which judges the newest version:
        // another session changed it since; run it again.
        let mut looked_again = false;
        for _ in 0..8 {
            let row = retrying(c.timeout, "begin", || {
                sqlx::query(sql::BEGIN)
                    .bind(digest)
                    .bind(&td.0[..])
                    .bind(key)
                    .bind(nonce)
                    .bind(&fingerprint.0[..])
                    .bind(ms(c.lease))
                    .bind(ms(retention))
                    .fetch_optional(&self.0.pool)
            })
            .await?;
            let Some(row) = row else { continue };
            let get = |e: sqlx::Error| unavailable("reading the begin reply", e);
            let state: i8 = row.try_get("state").map_err(get)?;
            if state == b'p' as i8 && !looked_again {
                looked_again = true;
                continue;
            }
            let seen = Seen {
                state,
                token: row.try_get("token").map_err(get)?,
                started_at: row.try_get("started_at").map_err(get)?,
                lease_end: row.try_get("lease_end").map_err(get)?,
                tenant: row.try_get("tenant").map_err(get)?,
                key: row.try_get("key").map_err(get)?,
                fingerprint: row.try_get("fingerprint").map_err(get)?,
                record: row.try_get("record").map_err(get)?,
                completed_at: row.try_get("completed_at").map_err(get)?,
                expires_at: row.try_get("expires_at").map_err(get)?,
                now: row.try_get("now").map_err(get)?,
            };
            if seen.is_stale() {
                continue;
            }
            return Ok(seen);
        }
        Err(unavailable(
            "begin",
            "the key's row changed under every try; retry the request",
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn judge(
        &self,
        seen: Seen,
        td: TenantDigest,
        key: Vec<u8>,
        digest: Vec<u8>,
        nonce: i64,
        fingerprint: Fingerprint,
        retention: Duration,
    ) -> Result<Outcome<PostgresLease>, BackendError> {
        if seen.state == b'r' as i8 {
            return Ok(Outcome::Reserved(PostgresLease::new(
                self.clone(),
                digest,
                td,
                key,
                fingerprint,
                seen.token,
                nonce,
                stamp(seen.started_at),
                retention,
            )));
        }
        // Same check as the engine: never answer with another scope's row.
        if seen.tenant.as_deref() != Some(&td.0[..]) || seen.key.as_deref() != Some(&key[..]) {
            return Err(BackendError::Collision);
        }
        let same = seen.fingerprint.as_deref() == Some(&fingerprint.0[..]);
        match seen.state {
            s if s == b'p' as i8 => Ok(Outcome::InFlight {
                lease_left: millis(seen.lease_end - seen.now),
                running_for: Some(millis(seen.now - seen.started_at)),
                same_request: same,
            }),
            s if s == b'c' as i8 => {
                let bytes = seen.record.unwrap_or_default();
                let decoded = idemstore::codec::decode(&bytes)
                    .map_err(|e| unavailable("stored record does not decode", e))?;
                let (rtd, rk, mut stored) = decoded;
                if rtd != td || rk != key {
                    return Err(BackendError::Collision);
                }
                // The completion and expiry times are the database's, kept
                // beside the record.
                if let (Some(ca), Some(ex)) = (seen.completed_at, seen.expires_at) {
                    stored.completed_at = stamp(ca);
                    stored.expires_at = stamp(ex);
                }
                if same {
                    Ok(Outcome::Replay(stored))
                } else {
                    Ok(Outcome::Mismatch(Some(Box::new(stored))))
                }
            }
            other => Err(unavailable(
                "begin",
                format!("unexpected row state {other}"),
            )),
        }
    }
}

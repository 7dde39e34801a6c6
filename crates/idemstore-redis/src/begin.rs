//! `begin` ([`Backend`] for [`RedisBackend`]): reserve, replay or refuse,
//! in one script.

use crate::backend::RedisBackend;
use crate::conn::unavailable;
use crate::lease::RedisLease;
use crate::ms;
use idemstore::{Fingerprint, Key, Tenant, TenantDigest, Timestamp};
use idemstore_http::{Backend, BackendError, Outcome};
use redis::Cmd;
use std::time::Duration;

fn num(v: Option<&Vec<u8>>) -> u64 {
    v.and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A random 64-bit value (std's randomly keyed hasher, seeded from the OS),
/// to tell reservations apart if generations ever restart.
fn random_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}

impl Backend for RedisBackend {
    type Lease = RedisLease;

    fn max_key_len(&self) -> Option<usize> {
        Some(self.0.config.max_key_len)
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.0.config.lease)
    }

    fn retention(&self) -> Option<Duration> {
        Some(self.0.config.retention)
    }

    fn begin_with(
        &self,
        tenant: Tenant<'_>,
        key: Key<'_>,
        fingerprint: Fingerprint,
        retention: Option<Duration>,
    ) -> impl Future<Output = Result<Outcome<RedisLease>, BackendError>> + Send {
        let retention = retention.unwrap_or(self.0.config.retention);
        let td = TenantDigest::of(tenant.as_bytes());
        let key = key.as_bytes();
        let rkey = self.key_of(&td, key);
        let key = key.to_vec();
        let this = self.clone();
        async move {
            let c = &this.0.config;
            if retention <= c.lease {
                return Err(unavailable(format!(
                    "a record's retention ({retention:?}) must be longer than the lease ({:?})",
                    c.lease
                )));
            }
            if key.len() > c.max_key_len || key.is_empty() {
                return Err(BackendError::InvalidKey(format!(
                    "the key is {} bytes; send 1..={}",
                    key.len(),
                    c.max_key_len
                )));
            }
            if this.replicas_short(&rkey) {
                return Err(this.replicas_missing("a recent write"));
            }
            let nonce = random_nonce();
            let confirm = if c.wait.is_some() { "1" } else { "0" };
            let args = |cmd: &mut Cmd| {
                cmd.arg(&td.0[..])
                    .arg(&key[..])
                    .arg(&fingerprint.0[..])
                    .arg(ms(c.lease))
                    .arg(ms(retention))
                    .arg(nonce)
                    .arg(confirm)
                    .arg(c.grace_ms());
            };
            let reply = this
                .script(&this.0.scripts.begin, &rkey, &args, true)
                .await?;
            let parts: Vec<Vec<u8>> = redis::from_redis_value(reply.value)
                .map_err(|e| unavailable(format!("unexpected reply from the begin script: {e}")))?;
            match parts.first().map(Vec::as_slice) {
                Some(b"reserved") => {
                    let lease = RedisLease::new(
                        this.clone(),
                        rkey,
                        td,
                        key,
                        fingerprint,
                        num(parts.get(1)),
                        nonce,
                        Timestamp(num(parts.get(2))),
                        retention,
                    );
                    if reply.confirmed {
                        return Ok(Outcome::Reserved(lease));
                    }
                    // Not on enough replicas: a failover could forget it while
                    // the handler runs, and a retry would run it again. Give
                    // it back; nothing ran.
                    let _ = lease.abort_quietly().await;
                    Err(this.replicas_missing("the reservation"))
                }
                Some(b"inflight") => Ok(Outcome::InFlight {
                    lease_left: Duration::from_millis(num(parts.get(1))),
                    running_for: parts
                        .get(3)
                        .map(|_| Duration::from_millis(num(parts.get(3)))),
                    same_request: parts.get(2).is_some_and(|v| v == b"1"),
                }),
                Some(b"replay") => {
                    if !reply.confirmed {
                        return Err(this.replicas_missing("the stored response"));
                    }
                    let bytes = parts.get(1).cloned().unwrap_or_default();
                    let (rtd, rk, mut stored) = idemstore::codec::decode(&bytes)
                        .map_err(|e| unavailable(format!("stored record does not decode: {e}")))?;
                    // Same check as the engine: never serve another scope's record.
                    if rtd != td || rk != key {
                        return Err(BackendError::Collision);
                    }
                    // The completion and expiry times are the server's, kept
                    // beside the record.
                    if let (Some(ca), Some(ex)) = (parts.get(2), parts.get(3))
                        && !ca.is_empty()
                        && !ex.is_empty()
                    {
                        stored.completed_at = Timestamp(num(Some(ca)));
                        stored.expires_at = Timestamp(num(Some(ex)));
                    }
                    Ok(Outcome::Replay(stored))
                }
                Some(b"mismatch") => {
                    // The first request's record, for naming what differs;
                    // one that does not decode or is another scope's is
                    // simply not used.
                    let stored = parts
                        .get(1)
                        .and_then(|b| idemstore::codec::decode(b).ok())
                        .filter(|(rtd, rk, _)| *rtd == td && *rk == key)
                        .map(|(_, _, s)| Box::new(s));
                    Ok(Outcome::Mismatch(stored))
                }
                Some(b"expired") => Ok(Outcome::Expired {
                    expired_at: Timestamp(num(parts.get(1))),
                }),
                Some(b"collision") => Err(BackendError::Collision),
                _ => Err(unavailable("unexpected reply from the begin script")),
            }
        }
    }
}

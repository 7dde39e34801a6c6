//! [`RedisBackend`]: connecting, and what every step shares: the script
//! call (bounded by the timeout, followed by `WAIT` when configured), the
//! per-slot replica breaker, the count of background completions.

use crate::config::RedisConfig;
use crate::conn::{self, Pool, unavailable};
use crate::ms;
use crate::scripts::{self, Lua, Scripts};
use idemstore::{TenantDigest, internals::default_index_hash};
use idemstore_http::BackendError;
use redis::{Cmd, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Hash slots of a Redis Cluster.
const SLOTS: usize = 16384;

pub(crate) struct Inner {
    pool: Pool,
    pub(crate) config: RedisConfig,
    pub(crate) scripts: Scripts,
    /// Completions being retried in the background.
    deferred: Deferred,
    /// Per cluster slot (one Redis node: only entry 0), until when (ms after
    /// `epoch`) new reservations are refused at once, because a write to that
    /// slot's master recently missed its replicas. A miss marks every slot
    /// of that master (read from `CLUSTER SLOTS`), so one master without its
    /// replica does not stop the others' keys, nor hold up its own behind
    /// `WAIT`s that time out.
    replicas_short_until: Box<[AtomicU64]>,
    epoch: Instant,
}

/// A count of background completion retries, and a way to wait for none.
#[derive(Default)]
struct Deferred {
    running: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Held by a background completion retry.
pub(crate) struct DeferredGuard(pub(crate) RedisBackend);

impl Drop for DeferredGuard {
    fn drop(&mut self) {
        let d = &(self.0).0.deferred;
        if d.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            d.idle.notify_waiters();
        }
    }
}

/// The shared backend. Cheap to clone.
#[derive(Clone)]
pub struct RedisBackend(pub(crate) Arc<Inner>);

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.0.config.prefix)
            .field("cluster", &self.0.pool.is_cluster())
            .field("wait", &self.0.config.wait)
            .finish_non_exhaustive()
    }
}

/// What a script answered, and whether enough replicas hold its writes
/// (always, when no replicas are waited for).
pub(crate) struct Reply {
    pub(crate) value: Value,
    pub(crate) confirmed: bool,
}

impl RedisBackend {
    /// Connects to the single Redis node at `url` (`redis://host:port/db`).
    /// Fails if it cannot be reached within `config.timeout`, if it is older
    /// than Redis 5, or if `config` waits for more replicas than it has.
    pub async fn connect(url: &str, config: RedisConfig) -> Result<RedisBackend, BackendError> {
        config.check()?;
        let pool = conn::node(url, &config).await?;
        Ok(Self::with(pool, config))
    }

    /// Connects to a Redis Cluster through `seeds`, one or more of its
    /// nodes (`redis://host:port`); the rest are found from them. Every call
    /// goes to the master of its key's slot, following MOVED and ASK while
    /// slots move. Fails as [`RedisBackend::connect`] does, for any master.
    pub async fn connect_cluster(
        seeds: &[&str],
        config: RedisConfig,
    ) -> Result<RedisBackend, BackendError> {
        config.check()?;
        let pool = conn::cluster(seeds, &config).await?;
        Ok(Self::with(pool, config))
    }

    fn with(pool: Pool, config: RedisConfig) -> RedisBackend {
        RedisBackend(Arc::new(Inner {
            pool,
            config,
            scripts: Scripts::new(),
            deferred: Deferred::default(),
            replicas_short_until: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
        }))
    }

    /// Completions Redis did not take that are being retried in the
    /// background (see the crate docs, "Failure").
    pub fn deferred_completions(&self) -> usize {
        self.0.deferred.running.load(Ordering::Acquire)
    }

    /// Resolves once no completion is being retried: a server shutting down
    /// awaits this (bounded by its own timeout) after the layer's work, so a
    /// response kept while Redis was away is not dropped with the process.
    pub async fn settled(&self) {
        loop {
            let notified = self.0.deferred.idle.notified();
            if self.deferred_completions() == 0 {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn deferred_guard(&self) -> DeferredGuard {
        self.0.deferred.running.fetch_add(1, Ordering::AcqRel);
        DeferredGuard(self.clone())
    }

    /// The cluster slot of a hash named by [`RedisBackend::key_of`]: CRC16
    /// of its hash tag, as Redis Cluster computes it.
    fn slot_of(rkey: &str) -> usize {
        let tag = rkey
            .rsplit_once('{')
            .and_then(|(_, t)| t.strip_suffix('}'))
            .unwrap_or(rkey);
        usize::from(crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes())) % SLOTS
    }

    pub(crate) fn key_of(&self, tenant: &TenantDigest, key: &[u8]) -> String {
        let ik = default_index_hash(tenant, key);
        format!("{}:{{{:016x}{:016x}}}", self.0.config.prefix, ik.hi, ik.lo)
    }

    fn since_epoch(&self) -> u64 {
        u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a write missed its replicas less than one replica timeout
    /// ago: new reservations are then refused without a round trip, so a
    /// lost replica does not queue every request behind a `WAIT` that
    /// times out.
    pub(crate) fn replicas_short(&self, rkey: &str) -> bool {
        self.since_epoch()
            < self.0.replicas_short_until[self.breaker_slot(rkey)].load(Ordering::Relaxed)
    }

    /// The breaker entry of `rkey`: its slot on a cluster, 0 on one node.
    fn breaker_slot(&self, rkey: &str) -> usize {
        if self.0.pool.is_cluster() {
            Self::slot_of(rkey)
        } else {
            0
        }
    }

    /// Refuses new reservations on `rkey`'s master for one replica timeout.
    async fn trip_breaker(&self, rkey: &str, wait: Duration) {
        let until = self.since_epoch().saturating_add(ms(wait));
        let marks = &self.0.replicas_short_until;
        let slot = self.breaker_slot(rkey);
        marks[slot].store(until, Ordering::Relaxed);
        if !self.0.pool.is_cluster() {
            return;
        }
        let mut conn = self.0.pool.get();
        let slots = tokio::time::timeout(
            self.0.config.timeout,
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Value>(&mut conn),
        )
        .await;
        let Ok(Ok(slots)) = slots else { return };
        for (start, end) in ranges_of_master(&slots, slot) {
            for m in &marks[start..=end.min(SLOTS - 1)] {
                m.store(until, Ordering::Relaxed);
            }
        }
    }

    /// Runs `lua` on `rkey`, bounded by the timeout; with `waits`, also
    /// waits for the configured replicas.
    pub(crate) async fn script(
        &self,
        lua: &Lua,
        rkey: &str,
        args: &(dyn Fn(&mut Cmd) + Sync),
        waits: bool,
    ) -> Result<Reply, BackendError> {
        let c = &self.0.config;
        let wait = if waits { c.wait } else { None };
        let mut conn = self.0.pool.get();
        let (value, acked) = match tokio::time::timeout(
            c.call_timeout(wait.is_some()),
            scripts::run(&mut conn, lua, rkey, args, wait),
        )
        .await
        {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(unavailable(e)),
            Err(_) => {
                // A call that waited this long was most likely held up by
                // replicas that do not answer.
                if let Some(w) = wait {
                    self.trip_breaker(rkey, w.timeout).await;
                }
                return Err(unavailable("timed out"));
            }
        };
        let confirmed = match (wait, acked) {
            (Some(w), Some(n)) => n >= w.replicas,
            (Some(_), None) => false,
            (None, _) => true,
        };
        if let (false, Some(w)) = (confirmed, wait) {
            self.trip_breaker(rkey, w.timeout).await;
        }
        Ok(Reply { value, confirmed })
    }

    /// Unavailable because a write did not reach its replicas.
    pub(crate) fn replicas_missing(&self, what: &str) -> BackendError {
        let (n, t) = self
            .0
            .config
            .wait
            .map_or((0, Duration::ZERO), |w| (w.replicas, w.timeout));
        BackendError::Unavailable(format!(
            "redis: {what} did not reach {n} replica(s) within {t:?}; check the replicas \
             (INFO replication) and retry"
        ))
    }
}

/// The slot ranges served by the master that serves `slot`, from a
/// `CLUSTER SLOTS` reply (`[[start, end, [host, port, ..], replicas..], ..]`);
/// empty when the reply does not say.
fn ranges_of_master(reply: &Value, slot: usize) -> Vec<(usize, usize)> {
    let entries: Vec<(usize, usize, Value)> =
        redis::from_redis_value::<Vec<Vec<Value>>>(reply.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| {
                let start = redis::from_redis_value::<usize>(e.first()?.clone()).ok()?;
                let end = redis::from_redis_value::<usize>(e.get(1)?.clone()).ok()?;
                let master = redis::from_redis_value::<Vec<Value>>(e.get(2)?.clone()).ok()?;
                // Host and port name the master.
                Some((
                    start,
                    end,
                    Value::Array(master.into_iter().take(2).collect()),
                ))
            })
            .collect();
    let Some(owner) = entries
        .iter()
        .find(|(s, e, _)| (*s..=*e).contains(&slot))
        .map(|(_, _, m)| m.clone())
    else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter(|(_, _, m)| *m == owner)
        .map(|(s, e, _)| (s, e))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miss_marks_every_range_of_the_same_master() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |s: i64, e: i64, master: Value| {
            Value::Array(vec![Value::Int(s), Value::Int(e), master, node("r", 1)])
        };
        let reply = Value::Array(vec![
            range(0, 99, node("a", 7000)),
            range(100, 199, node("b", 7001)),
            range(200, 16383, node("a", 7000)),
        ]);
        assert_eq!(ranges_of_master(&reply, 150), [(100, 199)]);
        assert_eq!(ranges_of_master(&reply, 5), [(0, 99), (200, 16383)]);
        assert!(ranges_of_master(&Value::Nil, 5).is_empty());
    }

    #[test]
    fn slots_are_the_clusters() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(RedisBackend::slot_of("idem:{foo}"), 12182);
        assert_eq!(RedisBackend::slot_of("x:{123456789}"), 12739);
    }
}

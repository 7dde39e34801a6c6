//! # idemstore-redis
//!
//! The idempotency contract of [`idemstore`] on Redis, for a service that runs
//! on several replicas: every replica's [`IdempotencyLayer`] talks to one
//! Redis, so a retry that lands on another replica still replays.
//!
//! [`IdempotencyLayer`]: idemstore_http::IdempotencyLayer
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use idemstore_redis::{RedisBackend, RedisConfig};
//! let backend = RedisBackend::connect("redis://127.0.0.1:6379", RedisConfig::default()).await?;
//! // Keys are per tenant: name where the tenant comes from (here a header).
//! let tenant = idemstore_http::TenantSource::Header(axum::http::HeaderName::from_static("x-api-key"));
//! let layer = idemstore_http::IdempotencyLayer::new(backend, idemstore_http::IdempotencyConfig::new(tenant));
//! # Ok(()) }
//! ```
//!
//! ## How it maps
//!
//! One Redis hash per (tenant, key), named `{prefix}:{<128-bit index digest in
//! hex>}` — the braces are a hash tag, so everything an operation touches is
//! in one cluster slot. Fields: `s` state (`p` pending, `c` completed, `a`
//! aborted), `g` generation (the fencing token, only ever incremented), `fp`
//! fingerprint, `le` lease end, `st` start (ms, Redis server time), `td`
//! tenant digest (never the raw tenant), `k` the key, `r` the completed record
//! in the engine's codec ([`idemstore::codec`]), so both backends store the
//! same bytes. begin / complete / abort / renew are each one Lua script: one
//! atomic step on the server, whichever replica calls it. Times come from the
//! Redis server's clock, so replicas with skewed clocks agree.
//!
//! Expiry is Redis expiry: a completed hash expires `retention` after its
//! completion; a pending one `retention + lease` after it was reserved (so
//! its generation outlives any stale holder's lease); an aborted one keeps
//! only its state and generation, for one lease, so failed requests hold no
//! memory for the retention. `connect` refuses a server older than Redis 5
//! (the scripts read the server's clock, then write), saying so.
//!
//! ## Failure
//!
//! Every call is bounded by [`RedisConfig::timeout`]; Redis down, slow or out
//! of memory gives [`BackendError::Unavailable`] (the layer answers 503 and
//! does not run the handler). The connection reconnects by itself
//! (redis-rs's `ConnectionManager`), so service resumes without a restart.
//!
//! A completion Redis does not take (down, paused, out of memory) is kept in
//! memory and tried again in a task of its own, with pauses growing to
//! 500 ms and the lease renewed between tries, until it is stored, the key
//! was taken over, or the process stops; the layer answers
//! [`BackendError::Deferred`] with 503, and the key stays reserved in Redis
//! meanwhile, so a retry gets 409, then the replay. A call whose reply was
//! lost may have run: completing twice with the same token is success. What
//! leases cannot rule out: if this replica cannot reach Redis for longer than
//! the lease while another replica can, that replica may take the key over.

use idemstore::{
    Fingerprint, Key, Response, StoredResponse, Tenant, TenantDigest, Timestamp,
    internals::default_index_hash,
};
use idemstore_http::{Backend, BackendError, Lease, Outcome};
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How the Redis backend behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Prefix of every key, so several services can share one Redis
    /// (default `idem`).
    pub prefix: String,
    /// How long a completed response is replayed (default 24 h).
    pub retention: Duration,
    /// How long a reservation holds its key unless renewed (default 60 s).
    pub lease: Duration,
    /// Longest a single Redis call may take before it fails (default 2 s).
    pub timeout: Duration,
    /// Longest key accepted, in bytes (default 255).
    pub max_key_len: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            prefix: "idem".into(),
            retention: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
            max_key_len: 255,
        }
    }
}

impl RedisConfig {
    /// Sets the key prefix.
    pub fn prefix(mut self, p: impl Into<String>) -> Self {
        self.prefix = p.into();
        self
    }
    /// Sets the retention.
    pub fn retention(mut self, d: Duration) -> Self {
        self.retention = d;
        self
    }
    /// Sets the lease.
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }
    /// Sets the per-call timeout.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }
}

const BEGIN: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 's', 'g', 'fp', 'le', 'td', 'k', 'r', 'st')
local s = h[1]
if (s == 'p' or s == 'c') and (h[5] ~= ARGV[1] or h[6] ~= ARGV[2]) then
  return {'collision'}
end
if s == 'c' then
  if h[3] == ARGV[3] then return {'replay', h[7]} end
  return {'mismatch'}
end
if s == 'p' and now < tonumber(h[4]) then
  local same = '0'
  if h[3] == ARGV[3] then same = '1' end
  return {'inflight', tostring(tonumber(h[4]) - now), same, tostring(now - tonumber(h[8] or now))}
end
local g = redis.call('HINCRBY', KEYS[1], 'g', 1)
local le = now + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 's', 'p', 'n', ARGV[6], 'fp', ARGV[3], 'le', le, 'st', now, 'td', ARGV[1], 'k', ARGV[2])
redis.call('HDEL', KEYS[1], 'r')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]) + tonumber(ARGV[4]))
return {'reserved', tostring(g), tostring(now), tostring(le)}
";

// The holder proves itself with the generation *and* a random nonce chosen at
// begin: if the hash ever disappears (expiry of a long-stalled holder,
// eviction, a failover) and generations restart, a stale holder's token may
// repeat, but its nonce will not. Completing twice is success: a call whose
// reply was lost (a timeout) is retried, and must not read as fenced.
const COMPLETE: &str = r"
local h = redis.call('HMGET', KEYS[1], 's', 'g', 'n')
if h[1] == 'c' and h[2] == ARGV[1] and h[3] == ARGV[2] then return 1 end
if h[1] ~= 'p' or h[2] ~= ARGV[1] or h[3] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 's', 'c', 'r', ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
";

// An aborted key keeps only what fencing needs (its state and generation),
// for one lease: a failed request does not hold memory for the retention.
// (Once the hash is gone a stale holder is still fenced by its nonce.)
const ABORT: &str = r"
local h = redis.call('HMGET', KEYS[1], 's', 'g', 'n')
if h[1] ~= 'p' or h[2] ~= ARGV[1] or h[3] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 's', 'a')
redis.call('HDEL', KEYS[1], 'fp', 'td', 'k', 'r')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
";

const RENEW: &str = r"
local h = redis.call('HMGET', KEYS[1], 's', 'g', 'n')
if h[1] ~= 'p' or h[2] ~= ARGV[1] or h[3] ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'le', now + tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) + tonumber(ARGV[3]))
return 1
";

struct Scripts {
    begin: Script,
    complete: Script,
    abort: Script,
    renew: Script,
}

struct Inner {
    conn: ConnectionManager,
    config: RedisConfig,
    scripts: Scripts,
    /// Completions being retried in the background.
    deferred: Deferred,
}

/// A count of background completion retries, and a way to wait for none.
#[derive(Default)]
struct Deferred {
    running: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Held by a background completion retry.
struct DeferredGuard(RedisBackend);

impl Drop for DeferredGuard {
    fn drop(&mut self) {
        let d = &(self.0).0.deferred;
        if d.running.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            d.idle.notify_waiters();
        }
    }
}

/// The shared backend. Cheap to clone.
#[derive(Clone)]
pub struct RedisBackend(Arc<Inner>);

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.0.config.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!(
        "redis: {e}; check that Redis is running and reachable (it reconnects by itself)"
    ))
}

/// The oldest Redis whose scripts may read the server clock (`TIME`) and then
/// write: from 5.0 scripts replicate their effects, not themselves.
const MIN_REDIS_MAJOR: u32 = 5;

/// Refuses a server older than [`MIN_REDIS_MAJOR`], from its `INFO server`.
fn check_version(info: &str) -> Result<(), BackendError> {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .unwrap_or("");
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= MIN_REDIS_MAJOR => Ok(()),
        _ => Err(BackendError::Unavailable(format!(
            "Redis {} is too old or did not say its version: idemstore-redis needs Redis \
             {MIN_REDIS_MAJOR} or newer (its scripts read the server's clock, then write); \
             upgrade the server",
            if version.is_empty() {
                "(unknown)"
            } else {
                version
            }
        ))),
    }
}

/// Milliseconds for Redis, at most about 100 years (Lua turns larger
/// integers into floats that PEXPIRE refuses).
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .min(100 * 365 * 24 * 3_600_000)
}

/// A random 64-bit value (std's randomly keyed hasher, seeded from the OS),
/// to tell reservations apart if generations ever restart.
fn random_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}

impl RedisBackend {
    /// Connects to `url` (`redis://host:port/db`). Fails if Redis cannot be
    /// reached within `config.timeout`.
    pub async fn connect(url: &str, config: RedisConfig) -> Result<RedisBackend, BackendError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let cm = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            config.timeout,
            ConnectionManager::new_with_config(client, cm),
        )
        .await
        .map_err(|_| unavailable("timed out connecting"))?
        .map_err(unavailable)?;
        let mut probe = conn.clone();
        let info: String = tokio::time::timeout(
            config.timeout,
            redis::cmd("INFO").arg("server").query_async(&mut probe),
        )
        .await
        .map_err(|_| unavailable("timed out asking the server's version"))?
        .map_err(unavailable)?;
        check_version(&info)?;
        Ok(RedisBackend(Arc::new(Inner {
            conn,
            config,
            scripts: Scripts {
                begin: Script::new(BEGIN),
                complete: Script::new(COMPLETE),
                abort: Script::new(ABORT),
                renew: Script::new(RENEW),
            },
            deferred: Deferred::default(),
        })))
    }

    /// Completions Redis did not take that are being retried in the
    /// background (see the crate docs, "Failure").
    pub fn deferred_completions(&self) -> usize {
        self.0
            .deferred
            .running
            .load(std::sync::atomic::Ordering::Acquire)
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

    fn deferred_guard(&self) -> DeferredGuard {
        self.0
            .deferred
            .running
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        DeferredGuard(self.clone())
    }

    fn key_of(&self, tenant: &TenantDigest, key: &[u8]) -> String {
        let ik = default_index_hash(tenant, key);
        format!("{}:{{{:016x}{:016x}}}", self.0.config.prefix, ik.hi, ik.lo)
    }

    /// Runs `f` on a connection, bounded by the configured timeout.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, BackendError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.0.config.timeout, f(self.0.conn.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(unavailable("timed out")),
        }
    }
}

fn num(v: Option<&Vec<u8>>) -> u64 {
    v.and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Backend for RedisBackend {
    type Lease = RedisLease;

    fn max_key_len(&self) -> Option<usize> {
        Some(self.0.config.max_key_len)
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.0.config.lease)
    }

    fn begin(
        &self,
        tenant: Tenant<'_>,
        key: Key<'_>,
        fingerprint: Fingerprint,
    ) -> impl Future<Output = Result<Outcome<RedisLease>, BackendError>> + Send {
        let td = TenantDigest::of(tenant.as_bytes());
        let key = key.as_bytes();
        let rkey = self.key_of(&td, key);
        let key = key.to_vec();
        let this = self.clone();
        async move {
            if key.len() > this.0.config.max_key_len || key.is_empty() {
                return Err(BackendError::InvalidKey(format!(
                    "the key is {} bytes; send 1..={}",
                    key.len(),
                    this.0.config.max_key_len
                )));
            }
            let c = &this.0.config;
            let nonce = random_nonce();
            let reply: Vec<Vec<u8>> = this
                .call(|mut conn| {
                    let s = &this.0.scripts.begin;
                    let mut inv = s.key(&rkey);
                    inv.arg(&td.0[..])
                        .arg(&key[..])
                        .arg(&fingerprint.0[..])
                        .arg(ms(c.lease))
                        .arg(ms(c.retention))
                        .arg(nonce);
                    async move { inv.invoke_async(&mut conn).await }
                })
                .await?;
            match reply.first().map(Vec::as_slice) {
                Some(b"reserved") => Ok(Outcome::Reserved(RedisLease {
                    backend: this.clone(),
                    rkey,
                    tenant: td,
                    key,
                    fingerprint,
                    token: num(reply.get(1)),
                    nonce,
                    started_at: Timestamp(num(reply.get(2))),
                    done: false,
                })),
                Some(b"inflight") => Ok(Outcome::InFlight {
                    lease_left: Duration::from_millis(num(reply.get(1))),
                    running_for: reply
                        .get(3)
                        .map(|_| Duration::from_millis(num(reply.get(3)))),
                    same_request: reply.get(2).is_some_and(|v| v == b"1"),
                }),
                Some(b"replay") => {
                    let bytes = reply.get(1).cloned().unwrap_or_default();
                    let (rtd, rk, stored) = idemstore::codec::decode(&bytes)
                        .map_err(|e| unavailable(format!("stored record does not decode: {e}")))?;
                    // Same check as the engine: never serve another scope's record.
                    if rtd != td || rk != key {
                        return Err(BackendError::Collision);
                    }
                    Ok(Outcome::Replay(stored))
                }
                Some(b"mismatch") => Ok(Outcome::Mismatch),
                Some(b"collision") => Err(BackendError::Collision),
                _ => Err(unavailable("unexpected reply from the begin script")),
            }
        }
    }
}

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
    done: bool,
}

impl std::fmt::Debug for RedisLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLease")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl RedisLease {
    /// The fencing token.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Extends the lease; `false` when the key is no longer this holder's.
    async fn run_renew(
        b: &RedisBackend,
        rkey: &str,
        token: u64,
        nonce: u64,
    ) -> Result<bool, BackendError> {
        let c = &b.0.config;
        let n: i64 = b
            .call(|mut conn| {
                let mut inv = b.0.scripts.renew.key(rkey);
                inv.arg(token)
                    .arg(nonce)
                    .arg(ms(c.lease))
                    .arg(ms(c.retention));
                async move { inv.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(n == 1)
    }

    async fn run_complete(
        b: &RedisBackend,
        rkey: &str,
        token: u64,
        nonce: u64,
        record: &[u8],
        retention: Duration,
    ) -> Result<bool, BackendError> {
        let n: i64 = b
            .call(|mut conn| {
                let mut inv = b.0.scripts.complete.key(rkey);
                inv.arg(token).arg(nonce).arg(record).arg(ms(retention));
                async move { inv.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(n == 1)
    }

    async fn run_abort(
        backend: RedisBackend,
        rkey: String,
        token: u64,
        nonce: u64,
    ) -> Result<bool, BackendError> {
        let n: i64 = backend
            .call(|mut conn| {
                let mut inv = backend.0.scripts.abort.key(&rkey);
                inv.arg(token).arg(nonce).arg(ms(backend.0.config.lease));
                async move { inv.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(n == 1)
    }
}

/// First pause between tries of a completion Redis did not take.
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// Longest pause between tries.
const RETRY_MAX: Duration = Duration::from_millis(500);

/// Stores a completion whose first try failed (Redis down, slow or out of
/// memory), trying again with growing pauses (at most `RETRY_MAX`, so the
/// record lands soon after Redis returns) and renewing the lease between
/// tries, until it is stored, the key was taken over, the retention has
/// passed (the record would have expired by then: the key is left to its
/// lease), or the runtime stops. The key stays reserved in Redis meanwhile:
/// a retry of the request gets 409, then the replay.
async fn retry_complete(
    guard: DeferredGuard,
    rkey: String,
    token: u64,
    nonce: u64,
    record: Vec<u8>,
    retention: Duration,
) {
    let b = &guard.0;
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
        match RedisLease::run_complete(b, &rkey, token, nonce, &record, retention).await {
            Ok(true) => {
                tracing::info!("a deferred idempotent response is now stored in Redis");
                return;
            }
            Ok(false) => {
                tracing::error!(
                    "a deferred idempotent response could not be stored: its lease ended and \
                     a later request took the key over"
                );
                return;
            }
            Err(_) => {
                // Keep the key ours while Redis is slow rather than down.
                let _ = RedisLease::run_renew(b, &rkey, token, nonce).await;
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
    fn renew(&mut self) -> impl Future<Output = Result<(), BackendError>> + Send {
        let b = self.backend.clone();
        let rkey = self.rkey.clone();
        let (token, nonce) = (self.token, self.nonce);
        async move {
            if RedisLease::run_renew(&b, &rkey, token, nonce).await? {
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
        let now = Timestamp(
            u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(u64::MAX),
        );
        let retention = self.backend.0.config.retention;
        let stored = StoredResponse {
            fingerprint: self.fingerprint,
            started_at: self.started_at,
            completed_at: now,
            expires_at: now.saturating_add(retention),
            response,
        };
        let record = idemstore::codec::encode(&self.tenant, &self.key, self.token, &stored);
        let b = self.backend.clone();
        let rkey = std::mem::take(&mut self.rkey);
        let (token, nonce) = (self.token, self.nonce);
        async move {
            let record = match record {
                Ok(r) => r,
                Err(why) => {
                    // Cannot be stored: free the key rather than leave it held.
                    let _ = RedisLease::run_abort(b, rkey, token, nonce).await;
                    return Err(BackendError::TooLarge(why));
                }
            };
            match RedisLease::run_complete(&b, &rkey, token, nonce, &record, retention).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(fenced()),
                Err(e) => {
                    // The key stays reserved in Redis; store the record as
                    // soon as Redis answers again, renewing the lease.
                    let guard = b.deferred_guard();
                    tokio::spawn(retry_complete(guard, rkey, token, nonce, record, retention));
                    Err(BackendError::Deferred(e.to_string()))
                }
            }
        }
    }

    fn abandon(self) {
        self.abandon_inner();
    }

    fn abort(mut self) -> impl Future<Output = Result<(), BackendError>> + Send {
        self.done = true;
        let (b, rkey) = (self.backend.clone(), std::mem::take(&mut self.rkey));
        let (token, nonce) = (self.token, self.nonce);
        async move {
            if RedisLease::run_abort(b, rkey, token, nonce).await? {
                Ok(())
            } else {
                Err(fenced())
            }
        }
    }
}

impl RedisLease {
    fn abandon_inner(mut self) {
        // The hash keeps its lease end: the key is free once it passes.
        self.done = true;
    }
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (b, rkey) = (self.backend.clone(), std::mem::take(&mut self.rkey));
            let (token, nonce) = (self.token, self.nonce);
            rt.spawn(async move {
                if let Err(e) = RedisLease::run_abort(b, rkey, token, nonce).await {
                    tracing::warn!(error = %e, "aborting a dropped idempotency lease failed; it ends with its lease");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_older_than_redis_5_are_refused_saying_what_to_do() {
        assert!(
            check_version("# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n").is_ok()
        );
        assert!(check_version("redis_version:5.0.0\n").is_ok());
        let old = check_version("redis_version:4.0.14\n")
            .unwrap_err()
            .to_string();
        assert!(
            old.contains("4.0.14") && old.contains("Redis 5 or newer"),
            "{old}"
        );
        assert!(check_version("no version here").is_err());
    }
}

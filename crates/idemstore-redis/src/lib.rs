//! # idemstore-redis
//!
//! The idempotency contract of [`idemstore`] on Redis, for a service that runs
//! on several replicas: every replica's [`IdempotencyLayer`] talks to one
//! Redis (a single node, [`RedisBackend::connect`], or a Redis Cluster,
//! [`RedisBackend::connect_cluster`]), so a retry that lands on another
//! replica still replays.
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
//! aborted), `g` generation (the fencing token, only ever incremented), `n`
//! the holder's random nonce (fences a stale holder even if the hash was lost
//! and generations restarted), `fp`
//! fingerprint, `le` lease end, `st` start (ms, Redis server time), `td`
//! tenant digest (never the raw tenant), `k` the key, `r` the completed record
//! in the engine's codec ([`idemstore::codec`]), so both backends store the
//! same bytes, and `ca` / `ex`, its completion and expiry times. begin /
//! complete / abort / renew are each one Lua script: one atomic step on the
//! server that holds the key, whichever replica calls it. Every time stored
//! or judged comes from that server's `TIME`, read inside the script, so
//! replicas with skewed clocks agree (the completion and expiry times inside
//! `r` are placeholders; a replay reads `ca` and `ex`).
//!
//! ## Cluster
//!
//! On a Redis Cluster each hash lives in the slot of its hash tag, so every
//! script touches one slot, on its master; the cluster connection follows
//! MOVED and ASK while slots move (`redis-cli --cluster reshard`) and re-reads
//! the slot map after a failover. A prefix containing `{` or `}` is refused:
//! it would change the hash tag.
//!
//! ## Replicas and failover
//!
//! Redis replicates asynchronously: a master that acknowledged a write and
//! dies before its replica has it loses the write when the replica is
//! promoted. [`RedisConfig::wait_replicas`] closes that window: every write
//! (reservation, completion, renewal, and the re-write that precedes a
//! replay) is followed by `WAIT n timeout` on the same connection, and counts
//! only once `n` replicas hold it. What a failover can lose:
//!
//! | setting | a failover (the master dies, a replica is promoted) can lose |
//! |---|---|
//! | no `wait_replicas` | the last writes the master acknowledged before it died: a completed response (the retry runs the handler again) or a reservation (a retry runs the handler while the first still runs) |
//! | `wait_replicas(n, t)` | nothing acknowledged, if the promoted replica is one of the `n` that acknowledged (with `n` = all replicas of each master, any replica the cluster promotes); writes not acknowledged in `t` fail: a reservation is given back and answered 503, the handler not run; a completion is answered 503 and retried until the replicas hold it |
//!
//! `WAIT` does not make Redis a consensus store: a manual failover to a
//! replica that missed writes, or losing the master and the acknowledging
//! replicas at once, still loses them. The promoted replica judges leases by
//! its own clock; keep the nodes' clocks in sync (NTP).
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
//! Every call is bounded by [`RedisConfig::timeout`] (plus the replica wait,
//! when it waits); Redis down, slow or out of memory gives
//! [`BackendError::Unavailable`] (the layer answers 503 and does not run the
//! handler). The connections reconnect by themselves (redis-rs's
//! `ConnectionManager` and cluster connection), so service resumes without a
//! restart. After a write missed its replicas, every begin on that master
//! (replays included) is refused at once for one replica timeout, so a lost
//! replica does not queue every request behind a `WAIT` that times out;
//! other masters' keys are unaffected. Calls already queued behind a
//! blocked `WAIT` may still run after their caller gave up: a reservation
//! made that way holds its key until its lease ends (a retry gets 409, then
//! runs), never run twice.
//!
//! A completion Redis does not take (down, paused, out of memory) is kept in
//! memory and tried again in a task of its own (also when its replicas did
//! not acknowledge it), with pauses growing to
//! 500 ms and the lease renewed between tries, until it is stored, the key
//! was taken over, or the process stops; the layer answers
//! [`BackendError::Deferred`] with 503, and the key stays reserved in Redis
//! meanwhile, so a retry gets 409, then the replay. A call whose reply was
//! lost may have run: completing twice with the same token is success. What
//! leases cannot rule out: if this replica cannot reach Redis for longer than
//! the lease while another replica can, that replica may take the key over.

//!
//! ## Modules
//!
//! - `config`: [`RedisConfig`], [`WaitReplicas`], and the checks on them;
//! - `conn`: connections to a node or a cluster, and the server checks made
//!   when connecting (version, attached replicas);
//! - `scripts`: the Lua scripts and how they run (`EVALSHA`, then `WAIT`);
//! - `backend`: [`RedisBackend`]: connecting, the script call every step
//!   makes, the replica breaker, the background completions' count;
//! - `lease`: [`RedisLease`], and the background retry of a completion;
//! - `begin`: `begin`, which makes leases (so it comes after both).

mod backend;
mod begin;
mod config;
mod conn;
mod lease;
mod scripts;

pub use backend::RedisBackend;
pub use config::{RedisConfig, WaitReplicas};
pub use lease::RedisLease;

use std::time::Duration;

/// Milliseconds for Redis, at most about 100 years (Lua turns larger
/// integers into floats that PEXPIRE refuses).
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .min(100 * 365 * 24 * 3_600_000)
}

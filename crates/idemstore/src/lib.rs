//! # idemstore
//!
//! An embedded, durable store for the server side of the `Idempotency-Key`
//! HTTP header: a request resent after a timeout executes once, and every
//! retry gets the first response back, byte for byte.
//!
//! ```
//! use idemstore::{Begin, Config, Fingerprint, Key, Response, Store, Tenant};
//! # let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path(), Config::default())?;
//! let request = Fingerprint::of(b"POST /v1/payments amount=100");
//! match store.begin(Tenant::new("tenant-api-key"), Key::new("order-42"), request)? {
//!     // First time: run the handler, then store its response durably.
//!     Begin::Reserved(reservation) => reservation.complete(Response::new(201, "paid"))?,
//!     Begin::Replay(stored) => { /* send stored.response back */ }
//!     Begin::InFlight(_) => { /* 409: the first request is still running */ }
//!     Begin::Mismatch(_) => { /* 422: same key, different request */ }
//!     Begin::Expired(_) => { /* 422: the key expired (only with refuse_expired_keys_for) */ }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Contract
//!
//! - **Once.** For a given (tenant, key), while its record lives, `begin`
//!   hands out at most one [`Reservation`] at a time; a second caller sees
//!   [`Begin::InFlight`], then [`Begin::Replay`] once the first completes.
//! - **Scoped.** Keys are per tenant. Only a blake3 digest of the tenant is
//!   stored, and every read compares the full digest and key, so one tenant is
//!   never served another's response, even on an index-digest collision.
//! - **Durable.** With [`Durability::Sync`], [`Reservation::complete`]
//!   returns only after the record is fsynced; a crash loses no acknowledged
//!   completion, and no retry is replayed a response a crash could take back.
//! - **Fenced.** A lease that runs out lets a later request take over; the
//!   old holder's `complete` then fails with [`Error::Fenced`].
//! - **Exact expiry.** A record is never served at or after its `expires_at`,
//!   whether or not its file has been deleted yet.
//!
//! ## Layout
//!
//! Imports flow one way: from the API down to the threads, from the threads
//! down to the shared state, the messages and the files. One `complete()`
//! takes this path:
//!
//! - `store/`: the API — `lifecycle` ([`Store`]: open, read-only open,
//!   threads, close), `begin` ([`Store::begin`], [`Store::get`]),
//!   `reservation` ([`Reservation`]), `admin` (an operator's calls:
//!   [`Store::records`], [`Store::release`], [`Store::purge`]).
//! - `shared`: the state callers and background threads share, and the gate
//!   every message to the writer passes; `poison`: the store's first fatal
//!   cause; `pipeline`: the messages between threads.
//! - `write/`: `writer`, the writer thread (batches, append, fsync);
//!   `group_commit`, the window that keeps a batch open for the callers the
//!   last fsync carried; `active`, the segments it appends to (preallocation,
//!   rollover, hand-over to the compactor, the one fsync helper); `settler`,
//!   which publishes and wakes each written batch.
//! - `index`: the sharded in-memory index (a 20-byte slot per completed key).
//! - `segment`: segment files at run time (bucket math, reading one record);
//!   `doorbell`: how the writer waits for work; `commit`: [`Commit`], a
//!   waitable and awaitable write result.
//! - `compactor`: bucket expiry; `tombstones`: what it writes first for the
//!   keys still refused after their bucket ended; `hints`: hint files,
//!   written for each segment the writer seals.
//! - `recovery/`: rebuilding the index on open (`listing` of the files,
//!   `read` of one segment, building the `shards`); `floor`: the durable lower
//!   bound that keeps fencing tokens increasing across restarts.
//! - `format/`: the on-disk format, one file per concept (see `FORMAT.md`),
//!   built on `format::primitive`'s little-endian integers; `format::codec`
//!   is the public [`codec`] of a completed record.
//! - `verify`: [`verify`], which checks every byte of a store directory
//!   without opening it.
//! - [`storage`]: the file-I/O seam (real disk, or in-memory with crash images,
//!   or failing chosen calls).
//! - `scope` (tenant digest, index key, fingerprint), `response`, `config`,
//!   `clock`, `error`: the types of the API; [`metrics`]: the names of the
//!   metrics recorded through the `metrics` facade.
//!
//! `ARCHITECTURE.md` in the repository walks one `complete()` from the call to
//! the fsync; `crates/idemstore/FORMAT.md` documents every byte on disk.

#![cfg_attr(test, allow(clippy::cast_possible_truncation))]

mod clock;
mod commit;
mod compactor;
mod config;
mod doorbell;
mod error;
mod floor;
mod format;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod hints;
mod index;
pub mod metrics;
mod pipeline;
mod poison;
mod recovery;
mod response;
mod scope;
mod segment;
mod shared;
pub mod storage;
mod store;
mod tombstones;
mod verify;
mod write;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use commit::Commit;
pub use compactor::CompactionReport;
pub use config::{Config, Durability};
pub use error::{Error, Result};
pub use format::codec;
pub use recovery::{Abandoned, LastOpen, RecoveryReport};
pub use response::{Response, StoredResponse};
pub use scope::{Fingerprint, Key, Tenant, TenantDigest};
pub use verify::{Finding, VerifyReport, verify, verify_storage};

/// What other backends need to lay records out exactly as this engine does
/// (the Redis backend names its keys by the index digest), and tests need to
/// force digest collisions. Not part of the API: it may change with the
/// index.
#[doc(hidden)]
pub mod internals {
    pub use crate::scope::{IndexHashFn, IndexKey, default_index_hash};
}
pub use store::{
    Begin, Expired, InFlight, KeyState, LiveRecord, Mismatch, Records, Reservation, SegmentInfo,
    Stats, Store,
};

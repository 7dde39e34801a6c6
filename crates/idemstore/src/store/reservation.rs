//! [`Reservation`]: the right to execute one request, and the records it
//! writes (pending, renewal, completion, abort).

use super::lifecycle::StoreInner;
use crate::clock::Timestamp;
use crate::commit::{Commit, Completer};
use crate::error::{Error, Result};
use crate::format::hint;
use crate::format::record::{self, Body, Pending};
use crate::index::{Holder, PendingEntry, Shard, SlotKey};
use crate::pipeline::{Append, Install, Msg, entry_of, frame_record};
use crate::response::{Response, StoredResponse};
use crate::scope::{Fingerprint, IndexKey, TenantDigest};
use std::fmt;
use std::sync::Arc;

/// The right to execute a request for one key, until the lease ends.
///
/// Finish it with [`complete`](Self::complete) or [`abort`](Self::abort);
/// dropping it unfinished aborts it, so a failed handler frees the key for a
/// retry at once.
pub struct Reservation {
    pub(super) store: Arc<StoreInner>,
    pub(super) index_key: IndexKey,
    pub(super) tenant: TenantDigest,
    pub(super) key: Box<[u8]>,
    pub(super) fingerprint: Fingerprint,
    pub(super) token: u64,
    pub(super) started_at: Timestamp,
    pub(super) lease_end: Timestamp,
    /// How long its completion is kept (and its records' bucket).
    pub(super) retention: std::time::Duration,
    pub(super) persisted: Commit,
    pub(super) finished: bool,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("token", &self.token)
            .field("started_at", &self.started_at)
            .field("lease_end", &self.lease_end)
            .finish_non_exhaustive()
    }
}

impl Reservation {
    /// The fencing token: unique per reservation, and greater than every
    /// token handed out before it on this directory — by this store, by any
    /// earlier store that was closed cleanly, and, after a crash, every token
    /// whose reservation left a record that survived the crash (one that
    /// [`persisted`](Self::persisted) or an acknowledged completion waited
    /// for, as far as the [`Durability`](crate::Durability) mode makes it
    /// survive). That holds after expiry has deleted every record the
    /// earlier tokens came with: a floor file outlives them (FORMAT.md,
    /// "Sequence floor"). Only a token whose reservation left no record
    /// before a crash may be handed out again: its holder died with the
    /// process.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// When the key was reserved.
    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    /// When the lease ends (after the last renewal).
    pub fn lease_end(&self) -> Timestamp {
        self.lease_end
    }

    /// Settles once the reservation's newest pending record (from `begin`, or
    /// the last [`renew`](Self::renew)) is as durable as the store's
    /// [`Durability`](crate::Durability) makes any write before it is
    /// acknowledged:
    ///
    /// - `Sync`: fsynced; the reservation survives a power cut.
    /// - `Periodic` and `None`: written to the operating system, not
    ///   fsynced; it survives a crash of the process, but a power cut before
    ///   the next periodic fsync (or [`Store::flush`](crate::Store::flush) / `close`) can lose it.
    ///
    /// A record that a newer record of this reservation supersedes in the
    /// same group commit (its completion, its abort) is never written; it
    /// settles `Ok` with that batch, whose newer record is as durable. So does
    /// a record whose bucket had already ended when the writer reached it
    /// (after a forward clock step): there is nothing left to keep. It
    /// settles with an error if the record could not be written.
    ///
    /// `begin` does not wait for it; a handler whose side effects must never
    /// repeat after a crash within the lease can wait on this before acting.
    pub fn persisted(&self) -> Commit {
        self.persisted.clone()
    }

    /// Extends the lease to `now + lease`. Fails with [`Error::Fenced`] if the
    /// key was already taken over.
    ///
    /// ```
    /// # use idemstore::*;
    /// # use std::time::Duration;
    /// # let dir = tempfile::tempdir()?;
    /// let clock = ManualClock::new(Timestamp(1_800_000_000_000));
    /// let config = Config::default().clock(std::sync::Arc::new(clock.clone()));
    /// let store = Store::open(dir.path(), config)?;
    /// let fp = Fingerprint::of(b"req");
    /// let Begin::Reserved(mut r) = store.begin(Tenant::new("t"), Key::new("k"), fp)? else { unreachable!() };
    /// clock.advance(Duration::from_secs(50));
    /// let end = r.renew()?; // a long handler keeps its key
    /// clock.advance(Duration::from_secs(50));
    /// assert!(matches!(store.begin(Tenant::new("t"), Key::new("k"), fp)?, Begin::InFlight(i) if i.lease_end == end));
    /// r.complete(Response::new(201, "done"))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn renew(&mut self) -> Result<Timestamp> {
        self.store.shared.check_open()?;
        let shared = &self.store.shared;
        let lease_end = shared.clock().now().saturating_add(shared.config.lease);
        let seq = {
            let mut shard = shared.index.lock(&self.index_key);
            self.held(&mut shard)?.lease_end = lease_end;
            shared.next_seq()
        };
        self.lease_end = lease_end;
        self.persisted = self.write_pending(seq)?;
        Ok(lease_end)
    }

    /// This reservation's entry in its locked `shard`, while it still holds
    /// the key; else [`Error::Fenced`]: the lease ended and a later request
    /// took the key over.
    fn held<'a>(&self, shard: &'a mut Shard) -> Result<&'a mut PendingEntry> {
        match shard.pending.get_mut(&SlotKey::from(&self.index_key)) {
            Some(p) if p.token == self.token && p.holder == Holder::Held => Ok(p),
            _ => Err(Error::Fenced {
                reason: "the lease ended and a later request took the key over",
            }),
        }
    }

    /// Appends this reservation's pending record (sequence number `seq`).
    pub(super) fn write_pending(&self, seq: u64) -> Result<Commit> {
        let (c, commit) = Completer::new();
        let body = Body::Pending(Pending {
            fingerprint: self.fingerprint,
            started_at: self.started_at,
            lease_end: self.lease_end,
        });
        self.enqueue_reservation_record(seq, &body, Some(c))?;
        Ok(commit)
    }

    /// Queues a reservation record (pending, renewal, abort) for the writer.
    /// They go to the bucket of `started_at + retention`, where the
    /// completion almost always lands too — or of the lease's end, for a
    /// reservation renewed past that, so its record lives as long as its lease.
    fn enqueue_reservation_record(
        &self,
        seq: u64,
        body: &Body,
        done: Option<Completer>,
    ) -> Result<()> {
        let shared = &self.store.shared;
        let append = Append {
            bucket: shared.bucket(
                self.started_at
                    .saturating_add(self.retention)
                    .max(self.lease_end),
            ),
            frame: self.frame(seq, body),
            entry: self.entry(seq, body),
            install: None,
            done,
        };
        shared.enqueue(self.token, append)
    }

    /// The record's index entry (the writer fills in its offset).
    fn entry(&self, seq: u64, body: &Body) -> hint::Entry {
        entry_of(self.index_key, seq, body)
    }

    /// Frames a record of this reservation with sequence number `seq`.
    fn frame(&self, seq: u64, body: &Body) -> Vec<u8> {
        frame_record(seq, &self.tenant, &self.key, self.token, body)
    }

    /// Stores `response` as the key's result and returns once it is as durable
    /// as the store's [`Durability`](crate::Durability) says. From then on a
    /// retry with the same fingerprint replays it.
    ///
    /// Once the record is accepted, a store failure never frees the key:
    /// if the write fails (a full disk), this returns [`Error::Deferred`]
    /// while the store keeps the record and writes it again by itself; the
    /// key answers [`Begin::InFlight`](crate::Begin::InFlight) until then and replays after. A
    /// response the store refuses ([`Error::RecordTooLarge`]) or a lost lease
    /// ([`Error::Fenced`]) stores nothing, and the reservation is aborted.
    ///
    /// Blocks the calling thread; from async code use
    /// [`complete_async`](Self::complete_async).
    ///
    /// ```
    /// # use idemstore::*;
    /// # use std::time::Duration;
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Config::default())?;
    /// let fp = Fingerprint::of(b"req");
    /// let Begin::Reserved(r) = store.begin(Tenant::new("t"), Key::new("k"), fp)? else { unreachable!() };
    /// r.complete(Response::new(201, "created").with_header("content-type", "text/plain"))?;
    /// store.close()?;
    /// // Fsynced before `complete` returned: it is there after a restart.
    /// let store = Store::open(dir.path(), Config::default())?;
    /// let Begin::Replay(s) = store.begin(Tenant::new("t"), Key::new("k"), fp)? else { unreachable!() };
    /// assert_eq!((s.response.status, &s.response.body[..]), (201, &b"created"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn complete(self, response: Response) -> Result<()> {
        self.complete_async(response).wait()
    }

    /// Like [`complete`](Self::complete), but returns a [`Commit`] to
    /// `.await` (or `wait`). The record is queued before this returns.
    ///
    /// ```
    /// # use idemstore::*;
    /// # use std::time::Duration;
    /// # let dir = tempfile::tempdir()?;
    /// # // Any executor: here a minimal one, so the example needs no runtime.
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     use std::task::{Context, Poll, Wake, Waker};
    /// #     struct T(std::thread::Thread);
    /// #     impl Wake for T { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
    /// #     let waker = Waker::from(std::sync::Arc::new(T(std::thread::current())));
    /// #     let (mut cx, mut f) = (Context::from_waker(&waker), std::pin::pin!(f));
    /// #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } std::thread::park(); }
    /// # }
    /// let store = Store::open(dir.path(), Config::default())?;
    /// let fp = Fingerprint::of(b"req");
    /// let Begin::Reserved(r) = store.begin(Tenant::new("t"), Key::new("k"), fp)? else { unreachable!() };
    /// // Awaits the group commit without blocking the executor's thread.
    /// block_on(async { r.complete_async(Response::new(201, "created")).await })?;
    /// assert!(matches!(store.begin(Tenant::new("t"), Key::new("k"), fp)?, Begin::Replay(_)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn complete_async(mut self, response: Response) -> Commit {
        match self.submit_completion(response) {
            Ok(c) => c,
            Err(e) => Commit::ready(Err(e)),
        }
    }

    /// Whether the store can hold `response` as this key's record: fails
    /// with [`Error::RecordTooLarge`] when [`complete`](Self::complete)
    /// would refuse it, so a caller can store something smaller instead
    /// while it still holds the key.
    pub fn check_fits(&self, response: &Response) -> Result<()> {
        let max = self.store.shared.config.max_record_bytes;
        let size = record::completed_payload_len(self.key.len(), response);
        if size > max || record::unencodable(response).is_some() {
            return Err(Error::RecordTooLarge { size, max });
        }
        Ok(())
    }

    fn submit_completion(&mut self, response: Response) -> Result<Commit> {
        // Refuse what cannot be stored before touching the index; dropping
        // `self` on the error path aborts the reservation and frees the key.
        self.store.shared.check_open()?;
        self.check_fits(&response)?;
        let shared = &self.store.shared;
        {
            let mut shard = shared.index.lock(&self.index_key);
            match self.held(&mut shard) {
                Ok(p) => p.holder = Holder::Completing,
                Err(e) => {
                    self.finished = true;
                    return Err(e);
                }
            }
        }
        self.finished = true;
        let now = shared.clock().now();
        let expires_at = now.saturating_add(self.retention);
        let seq = shared.next_seq();
        let body = Body::Completed(StoredResponse {
            fingerprint: self.fingerprint,
            started_at: self.started_at,
            completed_at: now,
            expires_at,
            response,
        });
        let frame = self.frame(seq, &body);
        let entry = self.entry(seq, &body);
        let (c, commit) = Completer::new();
        shared.submit(
            &self.store.writer_tx,
            Msg::Append(Append {
                bucket: shared.bucket(expires_at),
                frame,
                entry,
                install: Some(Install::Completion {
                    key: self.index_key,
                    token: self.token,
                }),
                done: Some(c),
            }),
        )?;
        Ok(commit)
    }

    /// Stops holding the key without freeing it: it stays reserved until
    /// its lease ends, as if this process had stopped. For work cut short by
    /// a shutdown, whose side effects may have happened: a retry is told
    /// the request is in flight until the lease ends, instead of running it
    /// again at once (which [`abort`](Self::abort), or dropping, would allow).
    pub fn abandon(mut self) {
        self.finished = true;
    }

    /// Gives the key up without storing anything: a retry executes again.
    ///
    /// ```
    /// # use idemstore::*;
    /// # use std::time::Duration;
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Config::default())?;
    /// let fp = Fingerprint::of(b"req");
    /// let Begin::Reserved(r) = store.begin(Tenant::new("t"), Key::new("k"), fp)? else { unreachable!() };
    /// r.abort()?; // the handler failed before any side effect
    /// assert!(matches!(store.begin(Tenant::new("t"), Key::new("k"), fp)?, Begin::Reserved(_)), "the retry runs");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abort(mut self) -> Result<()> {
        self.abort_inner()
    }

    fn abort_inner(&mut self) -> Result<()> {
        self.finished = true;
        let shared = &self.store.shared;
        let seq = {
            let mut shard = shared.index.lock(&self.index_key);
            self.held(&mut shard)?;
            shard.pending.remove(&SlotKey::from(&self.index_key));
            shared.next_seq()
        };
        self.store.shared.check_open()?;
        let body = Body::Aborted {
            lease_end: self.lease_end,
        };
        self.enqueue_reservation_record(seq, &body, None)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.abort_inner();
        }
    }
}

//! The public face of the engine: [`Store`], [`Begin`] and [`Reservation`].

use crate::clock::Timestamp;
use crate::commit::{Commit, Completer};
use crate::compactor::{self, CompactionReport};
use crate::config::Config;
use crate::error::{Error, Result, advice};
use crate::format::record::{self, Body, Pending};
use crate::format::{frame, hint};
use crate::index::{Holder, PendingEntry, Slot, SlotKey};
use crate::pipeline::{Append, Install, Msg};
use crate::recovery::{self, RecoveryReport};
use crate::response::{Response, StoredResponse};
use crate::scope::{Fingerprint, IndexKey, TenantDigest};
use crate::shared::{Looked, Shared};
use crate::storage::{FsStorage, LockOutcome, Storage};
use crate::write::writer::Writer;
use crossbeam_channel::{Sender, bounded};
use parking_lot::Mutex;
use std::any::Any;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

/// Messages the writer channel holds before callers wait for room.
const CHANNEL_CAPACITY: usize = 16 * 1024;

/// The answer of [`Store::begin`]: exactly one of four.
#[derive(Debug)]
pub enum Begin {
    /// The key is yours: execute the request, then
    /// [`complete`](Reservation::complete) or [`abort`](Reservation::abort).
    Reserved(Reservation),
    /// Another request holds the key right now.
    InFlight(InFlight),
    /// The key completed with the same request fingerprint: send this back.
    Replay(StoredResponse),
    /// The key completed for a different request.
    Mismatch(Mismatch),
}

/// A reservation held by someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    /// When the holder reserved the key.
    pub started_at: Timestamp,
    /// When its lease ends (a later `begin` may take over from then on,
    /// unless it is completing).
    pub lease_end: Timestamp,
    /// Whether the holder's request has the same fingerprint as this one.
    pub same_request: bool,
}

/// The key was completed by a different request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// Fingerprint of the request that completed the key.
    pub stored_fingerprint: Fingerprint,
    /// When it completed.
    pub completed_at: Timestamp,
}

/// What [`Store::get`] sees for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Reserved, not completed.
    Pending {
        /// Fingerprint of the holder's request.
        fingerprint: Fingerprint,
        /// When it was reserved.
        started_at: Timestamp,
        /// When the lease ends.
        lease_end: Timestamp,
        /// True when the holder died with an earlier process (found on disk
        /// at open).
        abandoned: bool,
    },
    /// Completed and not expired.
    Completed(StoredResponse),
}

/// Figures about a running store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Keys in the index (pending + completed).
    pub live_keys: u64,
    /// Reservations in flight.
    pub pending: u64,
    /// Completed keys in the index (expired ones stay counted until the
    /// compactor drops their bucket).
    pub completed: u64,
    /// Estimated heap bytes of the index.
    pub index_bytes: u64,
    /// Bytes in segment files.
    pub disk_bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Distinct TTL buckets with files.
    pub buckets: u64,
    /// Group commits (writer batches) so far.
    pub batches: u64,
    /// fsync calls on segment files so far.
    pub fsyncs: u64,
    /// Records appended so far.
    pub records_written: u64,
    /// Bytes appended so far.
    pub bytes_written: u64,
    /// Segment files deleted by the compactor.
    pub segments_dropped: u64,
    /// Failed compaction passes (retried on the next tick).
    pub compaction_errors: u64,
    /// Reservations taken over after their lease ended.
    pub takeovers: u64,
    /// Reservation records never written because a newer record of the same
    /// reservation (usually its completion) was in the same group commit.
    pub records_elided: u64,
    /// Hint files written for sealed segments (see FORMAT.md, "Hint files").
    pub hints_written: u64,
    /// Hint files that could not be written (the next open scans those
    /// segments instead; nothing is lost).
    pub hint_errors: u64,
}

struct Threads {
    writer: JoinHandle<()>,
    compactor: JoinHandle<()>,
    stop_compactor: Sender<()>,
}

struct StoreInner {
    shared: Arc<Shared>,
    writer_tx: Sender<Msg>,
    threads: Mutex<Option<Threads>>,
    lock: Mutex<Option<Box<dyn Any + Send + Sync>>>,
    report: RecoveryReport,
}

/// An open store. Cheap to clone; every clone is the same store. The store
/// closes when [`Store::close`] is called or the last clone (and the last
/// [`Reservation`]) is dropped.
///
/// ```
/// use idemstore::{Begin, Config, Fingerprint, Response, Store};
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path(), Config::default())?;
/// let fp = Fingerprint::of(b"POST /v1/payments {\"amount\":100}");
/// match store.begin("api-key-1", "key-123", fp)? {
///     Begin::Reserved(r) => r.complete(Response::new(201, "created"))?,
///     other => panic!("first request must reserve, got {other:?}"),
/// }
/// match store.begin("api-key-1", "key-123", fp)? {
///     Begin::Replay(stored) => assert_eq!(stored.response.body, b"created"),
///     other => panic!("retry must replay, got {other:?}"),
/// }
/// store.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.shared.dir)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl Store {
    /// The state shared with the background threads, for white-box tests.
    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }
}

/// Catches a panic in a background thread and poisons the store, so callers
/// get an error instead of waiting forever.
struct PanicGuard {
    shared: Arc<Shared>,
    name: &'static str,
    /// The writer's channel, to fail what it will never take.
    rx: Option<crossbeam_channel::Receiver<Msg>>,
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.shared
                .poison(format!("the {} thread panicked", self.name));
            if let Some(rx) = &self.rx {
                // Senders check the poison flag under the gate's read side:
                // once we hold the write side, nothing more arrives.
                let _gate = self.shared.gate.write();
                let err = self.shared.check_open().err().unwrap_or(Error::Closed);
                self.shared.fail_stranded(rx, &err);
            }
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store in directory `dir`.
    ///
    /// Fails with [`Error::Locked`] if another store, in this or another
    /// process, has the directory open. What recovery found is in
    /// [`Store::recovery_report`].
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Store> {
        let dir = dir.as_ref();
        let storage = FsStorage::new(dir)
            .map_err(|e| Error::io("creating the store directory", dir, e, advice::OPEN))?;
        Store::open_with_storage(Arc::new(storage), config)
    }

    /// Opens a store on any [`Storage`] (an in-memory one in tests).
    pub fn open_with_storage(storage: Arc<dyn Storage>, config: Config) -> Result<Store> {
        config.validate()?;
        let dir = storage.location();
        let guard = match storage.lock() {
            Ok(LockOutcome::Acquired(g)) => g,
            Ok(LockOutcome::Held { holder }) => {
                let holder = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" ({holder})")
                };
                return Err(Error::Locked { path: dir, holder });
            }
            Err(e) => return Err(Error::io("locking", dir, e, advice::OPEN)),
        };
        let now = config.clock.now();
        let rec = recovery::recover(storage.as_ref(), &config, now)?;
        let compaction_interval = config.compaction_interval;
        let shared = Arc::new(Shared::new(
            config,
            storage,
            dir.clone(),
            rec.index,
            rec.segments,
            rec.next_seq,
            rec.floor,
        ));
        let (tx, rx) = bounded(CHANNEL_CAPACITY);
        // Sealed segments, writer -> compactor (for their hint files).
        let (sealed_tx, sealed_rx) = crossbeam_channel::unbounded();
        let spawn_err = |e| Error::io("starting a thread for", dir.clone(), e, advice::OPEN);
        let writer = {
            let shared = shared.clone();
            let next_segment = rec.next_segment_id;
            let sealed = (sealed_tx, sealed_rx.clone());
            std::thread::Builder::new()
                .name("idemstore-writer".into())
                .spawn(move || {
                    let _guard = PanicGuard {
                        shared: shared.clone(),
                        name: "writer",
                        rx: Some(rx.clone()),
                    };
                    Writer::new(shared, rx, next_segment, sealed).run();
                })
                .map_err(spawn_err)?
        };
        let (stop_tx, stop_rx) = bounded(1);
        let compactor = {
            let shared = shared.clone();
            let tx = tx.clone();
            std::thread::Builder::new()
                .name("idemstore-compactor".into())
                .spawn(move || {
                    let _guard = PanicGuard {
                        shared: shared.clone(),
                        name: "compactor",
                        rx: None,
                    };
                    compactor::run(shared, tx, stop_rx, sealed_rx, compaction_interval);
                })
                .map_err(spawn_err)?
        };
        Ok(Store {
            inner: Arc::new(StoreInner {
                shared,
                writer_tx: tx,
                threads: Mutex::new(Some(Threads {
                    writer,
                    compactor,
                    stop_compactor: stop_tx,
                })),
                lock: Mutex::new(Some(guard)),
                report: rec.report,
            }),
        })
    }

    /// Starts a request with idempotency `key` for `tenant` (any bytes that
    /// identify the caller: an API key, an account id; only its digest is
    /// stored). Does not wait for the disk.
    ///
    /// Reads the stored record from disk for a completed key (one `pread`,
    /// usually served from the page cache).
    pub fn begin(
        &self,
        tenant: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        fingerprint: Fingerprint,
    ) -> Result<Begin> {
        self.inner.shared.check_open()?;
        let shared = &self.inner.shared;
        let key = key.as_ref();
        self.check_key(key)?;
        let tenant = TenantDigest::of(tenant.as_ref());
        let ik = (shared.config.index_hash)(&tenant, key);
        let mut known: Option<(Slot, Looked)> = None;
        loop {
            let now = shared.clock().now();
            let mut shard = shared.index.lock(&ik);
            let mut taking_over = false;
            if let Some(p) = shard.pending.get(&SlotKey::from(&ik)) {
                if !p.is_for(&tenant, key) {
                    return Err(Error::DigestCollision);
                }
                if !p.can_take_over(now) {
                    return Ok(Begin::InFlight(InFlight {
                        started_at: p.started_at,
                        lease_end: p.lease_end,
                        same_request: p.fingerprint == fingerprint,
                    }));
                }
                taking_over = true;
            }
            if let Some(slot) = shard.completed(&ik) {
                match known.take() {
                    Some((s, looked)) if s == slot => match looked {
                        Looked::Gone => {
                            shard.remove_completed(&ik);
                        }
                        Looked::Collision => return Err(Error::DigestCollision),
                        // Judged at the previous pass's clock: re-check now.
                        Looked::Live(stored) if stored.expires_at <= now => {
                            shard.remove_completed(&ik);
                        }
                        Looked::Live(stored) => {
                            return Ok(if stored.fingerprint == fingerprint {
                                Begin::Replay(*stored)
                            } else {
                                Begin::Mismatch(Mismatch {
                                    stored_fingerprint: stored.fingerprint,
                                    completed_at: stored.completed_at,
                                })
                            });
                        }
                    },
                    _ => {
                        // Read without holding the shard lock, then look again.
                        drop(shard);
                        known = Some((slot, shared.look(slot, &tenant, key, now)?));
                        continue;
                    }
                }
            }
            shared.check_writable()?;
            if taking_over {
                shared.counters.takeovers.fetch_add(1, Ordering::Relaxed);
            }
            let token = shared.next_seq();
            let lease_end = now.saturating_add(shared.config.lease);
            let entry = PendingEntry {
                token,
                tenant,
                key: key.into(),
                fingerprint,
                started_at: now,
                lease_end,
                holder: Holder::Held,
            };
            shard.pending.insert(SlotKey::from(&ik), entry);
            drop(shard);
            let mut r = Reservation {
                store: self.inner.clone(),
                index_key: ik,
                tenant,
                key: key.into(),
                fingerprint,
                token,
                started_at: now,
                lease_end,
                persisted: Commit::ready(Ok(())),
                finished: false,
            };
            r.persisted = r.write_pending(token)?;
            return Ok(Begin::Reserved(r));
        }
    }

    /// What the store holds for a key, without reserving it. Expired records
    /// and lapsed reservations are `None`.
    pub fn get(&self, tenant: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Result<Option<KeyState>> {
        self.inner.shared.check_open()?;
        let shared = &self.inner.shared;
        let key = key.as_ref();
        self.check_key(key)?;
        let tenant = TenantDigest::of(tenant.as_ref());
        let ik = (shared.config.index_hash)(&tenant, key);
        let now = shared.clock().now();
        let slot = {
            let shard = shared.index.lock(&ik);
            if let Some(p) = shard.pending.get(&SlotKey::from(&ik)) {
                if !p.is_for(&tenant, key) {
                    return Err(Error::DigestCollision);
                }
                if !p.can_take_over(now) {
                    return Ok(Some(KeyState::Pending {
                        fingerprint: p.fingerprint,
                        started_at: p.started_at,
                        lease_end: p.lease_end,
                        abandoned: p.holder == Holder::Orphan,
                    }));
                }
            }
            shard.completed(&ik)
        };
        let Some(slot) = slot else { return Ok(None) };
        match shared.look(slot, &tenant, key, now)? {
            Looked::Gone => Ok(None),
            Looked::Collision => Err(Error::DigestCollision),
            Looked::Live(s) => Ok(Some(KeyState::Completed(*s))),
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        let c = &self.inner.shared.config;
        if key.len() < c.min_key_len || key.len() > c.max_key_len {
            return Err(Error::InvalidKey {
                reason: format!("the key is {} bytes long", key.len()),
                min: c.min_key_len,
                max: c.max_key_len,
            });
        }
        Ok(())
    }

    /// Figures about the store now.
    pub fn stats(&self) -> Stats {
        let s = &self.inner.shared;
        let (completed, pending, index_bytes) = s.index.counts();
        let (segments, buckets, disk_bytes) = s.segments.totals();
        let c = &s.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            live_keys: completed + pending,
            pending,
            completed,
            index_bytes,
            disk_bytes,
            segments,
            buckets,
            batches: get(&c.batches),
            fsyncs: get(&c.fsyncs),
            records_written: get(&c.records_written),
            bytes_written: get(&c.bytes_written),
            segments_dropped: get(&c.segments_dropped),
            compaction_errors: get(&c.compaction_errors),
            takeovers: get(&c.takeovers),
            records_elided: get(&c.records_elided),
            hints_written: get(&c.hints_written),
            hint_errors: get(&c.hint_errors),
        }
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.shared.config
    }

    /// The current time by the store's clock (the one every expiry and lease
    /// is judged by).
    pub fn now(&self) -> Timestamp {
        self.inner.shared.clock().now()
    }

    /// What `open` found on disk.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// Runs one compaction pass now (the compactor thread also runs one every
    /// `compaction_interval`).
    pub fn compact_now(&self) -> Result<CompactionReport> {
        self.inner.shared.check_open()?;
        compactor::compact_once(&self.inner.shared, &self.inner.writer_tx)
    }

    /// Makes everything written so far durable, whatever the durability mode.
    /// Records kept after a failed write are written again first; if that
    /// still fails, this returns [`Error::Deferred`].
    pub fn flush(&self) -> Result<()> {
        let (c, commit) = Completer::new();
        self.inner
            .shared
            .submit(&self.inner.writer_tx, Msg::Flush(c))?;
        commit.wait()
    }

    /// Flushes, stops and joins the background threads, and releases
    /// the directory lock. Later calls on any clone get [`Error::Closed`];
    /// reservations still held can no longer complete. Idempotent.
    pub fn close(&self) -> Result<()> {
        self.inner.shutdown()
    }
}

impl StoreInner {
    fn shutdown(&self) -> Result<()> {
        // Held throughout, so a second `close` returns only once this one
        // has flushed and joined.
        let mut threads = self.threads.lock();
        let Some(t) = threads.take() else {
            return Ok(());
        };
        {
            // After this no sender can queue anything behind `Shutdown`.
            let _gate = self.shared.gate.write();
            self.shared.closed.store(true, Ordering::SeqCst);
        }
        let _ = t.stop_compactor.send(());
        let compactor_ok = t.compactor.join().is_ok();
        let _ = self.writer_tx.send(Msg::Shutdown);
        self.shared.doorbell.ring();
        let writer_ok = t.writer.join().is_ok();
        if !writer_ok || !compactor_ok {
            self.lock.lock().take();
            return Err(Error::Poisoned {
                cause: "a background thread panicked".into(),
            });
        }
        let result = self.shared.check_poison();
        // Every token handed out is now below the durable floor, even those
        // whose records were never written: the next open starts above them.
        let floor = result.clone().and_then(|()| self.shared.raise_floor());
        self.lock.lock().take();
        result.and(floor)
    }
}

impl Drop for StoreInner {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The right to execute a request for one key, until the lease ends.
///
/// Finish it with [`complete`](Self::complete) or [`abort`](Self::abort);
/// dropping it unfinished aborts it, so a failed handler frees the key for a
/// retry at once.
pub struct Reservation {
    store: Arc<StoreInner>,
    index_key: IndexKey,
    tenant: TenantDigest,
    key: Box<[u8]>,
    fingerprint: Fingerprint,
    token: u64,
    started_at: Timestamp,
    lease_end: Timestamp,
    persisted: Commit,
    finished: bool,
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
    ///   the next periodic fsync (or [`Store::flush`] / `close`) can lose it.
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
    pub fn renew(&mut self) -> Result<Timestamp> {
        self.store.shared.check_open()?;
        let shared = &self.store.shared;
        let lease_end = shared.clock().now().saturating_add(shared.config.lease);
        let seq = {
            let mut shard = shared.index.lock(&self.index_key);
            match shard.pending.get_mut(&SlotKey::from(&self.index_key)) {
                Some(p) if p.token == self.token && p.holder == Holder::Held => {
                    p.lease_end = lease_end;
                }
                _ => {
                    return Err(Error::Fenced {
                        reason: "the lease ended and a later request took the key over",
                    });
                }
            }
            shared.next_seq()
        };
        self.lease_end = lease_end;
        self.persisted = self.write_pending(seq)?;
        Ok(lease_end)
    }

    /// Appends this reservation's pending record (sequence number `seq`).
    fn write_pending(&self, seq: u64) -> Result<Commit> {
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
                    .saturating_add(shared.config.retention)
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
        let (kind, live_until) = body.kind_and_live_until();
        hint::Entry {
            key: self.index_key,
            seq,
            live_until,
            offset: 0,
            kind,
        }
    }

    /// Frames a record of this reservation with sequence number `seq`.
    fn frame(&self, seq: u64, body: &Body) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.key.len());
        let start = frame::begin(&mut out);
        record::encode_parts(&mut out, seq, &self.tenant, &self.key, self.token, body);
        frame::finish(&mut out, start);
        out
    }

    /// Stores `response` as the key's result and returns once it is as durable
    /// as the store's [`Durability`](crate::Durability) says. From then on a
    /// retry with the same fingerprint replays it.
    ///
    /// Once the record is accepted, a store failure never frees the key:
    /// if the write fails (a full disk), this returns [`Error::Deferred`]
    /// while the store keeps the record and writes it again by itself; the
    /// key answers [`Begin::InFlight`] until then and replays after. A
    /// response the store refuses ([`Error::RecordTooLarge`]) or a lost lease
    /// ([`Error::Fenced`]) stores nothing, and the reservation is aborted.
    ///
    /// Blocks the calling thread; from async code use
    /// [`complete_async`](Self::complete_async).
    pub fn complete(self, response: Response) -> Result<()> {
        self.complete_async(response).wait()
    }

    /// Like [`complete`](Self::complete), but returns a [`Commit`] to
    /// `.await` (or `wait`). The record is queued before this returns.
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
            match shard.pending.get_mut(&SlotKey::from(&self.index_key)) {
                Some(p) if p.token == self.token && p.holder == Holder::Held => {
                    p.holder = Holder::Completing;
                }
                _ => {
                    self.finished = true;
                    return Err(Error::Fenced {
                        reason: "the lease ended and a later request took the key over",
                    });
                }
            }
        }
        self.finished = true;
        let now = shared.clock().now();
        let expires_at = now.saturating_add(shared.config.retention);
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
                install: Some(Install {
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
    pub fn abort(mut self) -> Result<()> {
        self.abort_inner()
    }

    fn abort_inner(&mut self) -> Result<()> {
        self.finished = true;
        let shared = &self.store.shared;
        let seq = {
            let mut shard = shared.index.lock(&self.index_key);
            match shard.pending.get(&SlotKey::from(&self.index_key)) {
                Some(p) if p.token == self.token && p.holder == Holder::Held => {
                    shard.pending.remove(&SlotKey::from(&self.index_key));
                }
                _ => {
                    return Err(Error::Fenced {
                        reason: "the lease ended and a later request took the key over",
                    });
                }
            }
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

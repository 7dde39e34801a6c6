//! The state the callers, the writer, the settler and the compactor share:
//! the index and segments, counters, poison, the write-failure state, and the
//! gate every message to the writer passes (`submit`, `enqueue`).

use crate::clock::{Clock, Timestamp, duration_millis};
use crate::commit::Settlement;
use crate::config::Config;
use crate::doorbell::Doorbell;
use crate::error::{Error, Result, advice};
use crate::floor::Floor;
use crate::format::record::{Body, Record};
use crate::index::{Index, Slot, SlotKey};
use crate::pipeline::{Append, Install, Msg, Queued, SideQueue};
use crate::poison::Poison;
use crate::response::StoredResponse;
use crate::scope::TenantDigest;
use crate::segment::{Segments, bucket_of};
use crate::storage::Storage;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::{Mutex, RwLock};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

/// Monotonic counters, read by [`Store::stats`].
#[derive(Default, Debug)]
pub(crate) struct Counters {
    pub(crate) batches: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) records_written: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) segments_dropped: AtomicU64,
    pub(crate) compaction_errors: AtomicU64,
    pub(crate) takeovers: AtomicU64,
    pub(crate) records_elided: AtomicU64,
    pub(crate) hints_written: AtomicU64,
    pub(crate) hint_errors: AtomicU64,
    pub(crate) refused_expired: AtomicU64,
    pub(crate) tombstones_written: AtomicU64,
}

/// State shared by callers, the writer and the compactor.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) dir: PathBuf,
    pub(crate) index: Index,
    pub(crate) segments: Segments,
    /// Next sequence number; also the source of fencing tokens.
    seq: AtomicU64,
    poison: Poison,
    /// Set (under the gate's write side) when the store closes.
    pub(crate) closed: AtomicBool,
    /// The last failed write, while writes are failing (a full disk).
    write_failure: Mutex<Option<Error>>,
    has_write_failure: AtomicBool,
    /// Senders to the writer hold the read side; see `submit`.
    pub(crate) gate: RwLock<()>,
    pub(crate) counters: Counters,
    /// Reservation records (pending, renewal, abort) waiting for the writer.
    pub(crate) queue: Mutex<SideQueue>,
    /// Wakes the writer after a message was sent (see doorbell.rs).
    pub(crate) doorbell: Doorbell,
    /// Held for a whole compaction pass and for each hint file written (see
    /// `hints::write_sealed`): passes run one at a time, and never between
    /// a hint writer's check that its segment exists and the hint's write.
    pub(crate) compaction: Mutex<()>,
    /// The durable lower bound of sequence numbers (see floor.rs).
    floor: Mutex<Floor>,
    /// Opened read-only: no writer runs, and every write is refused.
    pub(crate) read_only: bool,
}

impl Shared {
    /// The shared state of a store recovery rebuilt `index` and `segments`
    /// for, handing out sequence numbers from `next_seq`.
    pub(crate) fn new(
        config: Config,
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        index: Index,
        segments: Segments,
        next_seq: u64,
        floor: Floor,
    ) -> Shared {
        Shared {
            config,
            storage,
            dir,
            index,
            segments,
            seq: AtomicU64::new(next_seq),
            poison: Poison::default(),
            closed: AtomicBool::new(false),
            write_failure: Mutex::new(None),
            has_write_failure: AtomicBool::new(false),
            gate: RwLock::new(()),
            counters: Counters::default(),
            queue: Mutex::new(SideQueue::default()),
            doorbell: Doorbell::default(),
            compaction: Mutex::new(()),
            floor: Mutex::new(floor),
            read_only: false,
        }
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        self.config.clock.as_ref()
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes the durable floor (see floor.rs) at least the next sequence
    /// number, so that no restart can hand out one already used, whatever
    /// is deleted after this returns.
    pub(crate) fn raise_floor(&self) -> Result<()> {
        let mut floor = self.floor.lock();
        let next = self.seq.load(Ordering::SeqCst);
        floor.raise(self.storage.as_ref(), next).map_err(|e| {
            Error::io(
                "writing the sequence floor in",
                self.dir.clone(),
                e,
                advice::WRITE,
            )
        })
    }

    fn width_ms(&self) -> u64 {
        duration_millis(self.config.bucket_width)
    }

    /// The bucket a record expiring at `t` goes to.
    pub(crate) fn bucket(&self, t: Timestamp) -> (Timestamp, Timestamp) {
        bucket_of(t, self.width_ms())
    }

    /// Marks the store unusable for writes; the first cause is kept.
    pub(crate) fn poison(&self, cause: String) {
        self.poison.set(cause);
    }

    pub(crate) fn check_poison(&self) -> Result<()> {
        self.poison.check()
    }

    /// Called once a completion or tombstone is durable: the key now replays
    /// (or is refused). `slot` is `None` when the record expired before it
    /// could be written.
    pub(crate) fn publish(&self, inst: &Install, slot: Option<Slot>) {
        match *inst {
            Install::Completion { key, token } => {
                let mut shard = self.index.lock(&key);
                if shard
                    .pending
                    .get(&SlotKey::from(&key))
                    .is_some_and(|p| p.token == token)
                {
                    shard.pending.remove(&SlotKey::from(&key));
                    if let Some(slot) = slot {
                        shard.set_completed(&key, slot);
                    }
                }
            }
            Install::Tombstone { key, replaces } => {
                let mut shard = self.index.lock(&key);
                if let Some(slot) = slot
                    && shard.completed(&key) == Some(replaces)
                {
                    shard.set_completed(&key, slot);
                }
            }
        }
    }

    /// Reads the completed record (or tombstone) a slot points at and
    /// judges it for (`tenant`, `key`) at `now`.
    pub(crate) fn look(
        &self,
        slot: Slot,
        tenant: &TenantDigest,
        key: &[u8],
        now: Timestamp,
    ) -> Result<Looked> {
        let Some(rec) = self.read_slot(slot, now)? else {
            return Ok(Looked::Gone);
        };
        if rec.tenant != *tenant || rec.key != key {
            return Ok(Looked::Collision);
        }
        Ok(self.judge(rec, now))
    }

    /// The record a completed slot points at, unless its segment is gone or
    /// its bucket ended (longer than the grace ago: with a grace, a bucket
    /// that ended may still hold completions whose keys are refused, which
    /// the compactor tombstones before it deletes the files). A record that
    /// is not a completion or tombstone is corruption.
    pub(crate) fn read_slot(&self, slot: Slot, now: Timestamp) -> Result<Option<Record>> {
        let Some(seg) = self.segments.get(slot.seg) else {
            return Ok(None);
        };
        if seg.header.bucket_end.saturating_add(self.config.grace()) <= now {
            return Ok(None);
        }
        let payload = seg.read_payload(slot.off, &self.dir)?;
        let corrupt = |reason: String| Error::Corrupt {
            path: self.dir.join(&seg.name),
            offset: u64::from(slot.off),
            reason,
        };
        let rec = Record::decode(&payload).map_err(|e| corrupt(e.to_string()))?;
        match rec.body {
            Body::Completed(_) | Body::Expired { .. } => Ok(Some(rec)),
            _ => Err(corrupt(
                "index points at a record that is not a completion".into(),
            )),
        }
    }

    /// What a completion or tombstone (`read_slot`'s) means at `now`. A key
    /// is refused while within the grace as configured now (a tombstone
    /// written under a longer one ends sooner).
    pub(crate) fn judge(&self, rec: Record, now: Timestamp) -> Looked {
        let grace = self.config.grace();
        let refused = |expired_at: Timestamp, until: Timestamp| {
            let until = until.min(expired_at.saturating_add(grace));
            if grace.is_zero() || until <= now {
                Looked::Gone
            } else {
                Looked::Refused {
                    expired_at,
                    until,
                    token: rec.token,
                }
            }
        };
        match rec.body {
            Body::Completed(c) if c.expires_at > now => Looked::Live(Box::new(c), rec.token),
            Body::Completed(c) => refused(c.expires_at, c.expires_at.saturating_add(grace)),
            Body::Expired { expired_at, until } => refused(expired_at, until),
            Body::Pending(_) | Body::Aborted { .. } | Body::Purged { .. } => Looked::Gone,
        }
    }

    pub(crate) fn note_write_failure(&self, e: Error) {
        *self.write_failure.lock() = Some(e);
        self.has_write_failure.store(true, Ordering::SeqCst);
    }

    pub(crate) fn clear_write_failure(&self) {
        if self.has_write_failure.swap(false, Ordering::SeqCst) {
            *self.write_failure.lock() = None;
        }
    }

    /// While writes fail (a full disk), new reservations are refused with
    /// the write's error instead of running a handler whose result cannot
    /// be stored; replays need no write and are still served. The writer
    /// writes the failed records again every `write_retry_interval` and
    /// ends this state itself with the first write that succeeds. A
    /// read-only store refuses every write.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                path: self.dir.clone(),
            });
        }
        if !self.has_write_failure.load(Ordering::SeqCst) {
            return Ok(());
        }
        match &*self.write_failure.lock() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Fails if the store was closed or poisoned.
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        self.check_poison()
    }

    /// Hands a message to the writer, unless the store is closed or
    /// poisoned. Runs under the gate's read side: `close` and a dying writer
    /// take the write side before they stop taking messages, so no message
    /// is ever left behind `Shutdown` or in a dead writer's channel, where
    /// its caller would wait forever. Never blocks on a full channel while
    /// the store is failing.
    pub(crate) fn submit(&self, tx: &Sender<Msg>, mut msg: Msg) -> Result<()> {
        let _gate = self.gate.read();
        let mut tries = 0u32;
        loop {
            self.check_open()?;
            match tx.try_send(msg) {
                Ok(()) => {
                    self.doorbell.ring();
                    return Ok(());
                }
                Err(TrySendError::Disconnected(_)) => return Err(Error::Closed),
                Err(TrySendError::Full(m)) => {
                    msg = m;
                    tries += 1;
                    if tries < 64 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(std::time::Duration::from_micros(100));
                    }
                }
            }
        }
    }

    /// Puts a reservation record in the writer's side queue (under the same
    /// gate as `submit`). If the queue was empty, notes when, for the
    /// writer's deadline, and nudges the writer (which wakes it only from a
    /// deep sleep; see doorbell.rs), or rings it if records must go at once.
    pub(crate) fn enqueue(&self, token: u64, append: Append) -> Result<()> {
        let _gate = self.gate.read();
        self.check_open()?;
        let was_empty = {
            let mut q = self.queue.lock();
            let was_empty = q.items.is_empty();
            if was_empty {
                q.since = Some(std::time::Instant::now());
            }
            q.items.push(Queued { token, append });
            was_empty
        };
        if was_empty {
            if self.config.pending_write_delay.is_zero() {
                self.doorbell.ring();
            } else {
                self.doorbell.nudge();
            }
        }
        Ok(())
    }

    /// Fails every message still waiting for a writer that will not take it
    /// (called by the dying writer's guard, under the gate's write side).
    fn fail_stranded(&self, rx: &crossbeam_channel::Receiver<Msg>, err: &Error) {
        let mut s = Settlement::default();
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Append(Append { done: Some(d), .. }) | Msg::Flush(d) => {
                    s.add(d, Err(err.clone()))
                }
                // A Retire's reply sender is dropped here: its waiter gets an error.
                _ => {}
            }
        }
        for q in std::mem::take(&mut self.queue.lock().items) {
            if let Some(d) = q.append.done {
                s.add(d, Err(err.clone()));
            }
        }
        s.finish();
    }
}

/// Starts the background thread `idemstore-{name}` running `work` under a
/// [`PanicGuard`]; given the writer's channel `rx`, the guard also fails
/// what waits in it.
pub(crate) fn spawn_guarded(
    shared: &Arc<Shared>,
    name: &'static str,
    rx: Option<Receiver<Msg>>,
    work: impl FnOnce(Arc<Shared>) + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let shared = shared.clone();
    std::thread::Builder::new()
        .name(format!("idemstore-{name}"))
        .spawn(move || {
            let _guard = PanicGuard {
                shared: shared.clone(),
                name,
                rx,
            };
            work(shared);
        })
}

/// Catches a panic in a background thread and poisons the store, so callers
/// get an error instead of waiting forever. Held by the writer, the settler
/// (whose batch's completions would never be published: their callers get
/// errors, their `Completer`s dropped unsettled) and the compactor.
struct PanicGuard {
    shared: Arc<Shared>,
    /// The thread's name in the poison cause.
    name: &'static str,
    /// The writer's channel, to fail what it will never take.
    rx: Option<Receiver<Msg>>,
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

/// What a lookup of a completed slot found.
pub(crate) enum Looked {
    /// Expired, or its bucket is gone: the key is free.
    Gone,
    /// Another (tenant, key) owns this index key.
    Collision,
    /// The record, and the fencing token of the reservation that wrote it.
    Live(Box<StoredResponse>, u64),
    /// Its completion expired at `expired_at`, and requests with the key are
    /// refused until `until` (`Config::refuse_expired_keys_for`).
    Refused {
        expired_at: Timestamp,
        until: Timestamp,
        token: u64,
    },
}

impl Looked {
    /// Whether this judgement no longer holds at `now` (it was made
    /// earlier, and the record has since expired or its grace ended).
    pub(crate) fn stale_at(&self, now: Timestamp) -> bool {
        match self {
            Looked::Live(s, _) => s.expires_at <= now,
            Looked::Refused { until, .. } => *until <= now,
            Looked::Gone | Looked::Collision => false,
        }
    }
}

//! A store's life: [`Store::open`] (recovery, the background threads), its
//! figures, [`Store::flush`] and [`Store::close`] (stop and join).

use crate::clock::Timestamp;
use crate::commit::Completer;
use crate::compactor::{self, CompactionReport};
use crate::config::Config;
use crate::error::{Error, Result, advice};
use crate::pipeline::Msg;
use crate::recovery::{self, LastOpen, Mode, RecoveryReport, last_open};
use crate::shared::{Shared, spawn_guarded};
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
    /// Requests refused because their key's record expired within
    /// [`Config::refuse_expired_keys_for`].
    pub refused_expired: u64,
    /// Tombstones the compactor wrote for the completions of ended buckets.
    pub tombstones_written: u64,
}

struct Threads {
    writer: JoinHandle<()>,
    compactor: JoinHandle<()>,
    stop_compactor: Sender<()>,
}

pub(super) struct StoreInner {
    pub(super) shared: Arc<Shared>,
    pub(super) writer_tx: Sender<Msg>,
    threads: Mutex<Option<Threads>>,
    lock: Mutex<Option<Box<dyn Any + Send + Sync>>>,
    report: RecoveryReport,
    previous_open: Option<LastOpen>,
}

/// An open store. Cheap to clone; every clone is the same store. The store
/// closes when [`Store::close`] is called or the last clone (and the last
/// [`Reservation`](crate::Reservation)) is dropped.
///
/// ```
/// use idemstore::{Begin, Config, Fingerprint, Key, Response, Store, Tenant};
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path(), Config::default())?;
/// let fp = Fingerprint::of(b"POST /v1/payments {\"amount\":100}");
/// match store.begin(Tenant::new("api-key-1"), Key::new("key-123"), fp)? {
///     Begin::Reserved(r) => r.complete(Response::new(201, "created"))?,
///     other => panic!("first request must reserve, got {other:?}"),
/// }
/// match store.begin(Tenant::new("api-key-1"), Key::new("key-123"), fp)? {
///     Begin::Replay(stored) => assert_eq!(stored.response.body, b"created"),
///     other => panic!("retry must replay, got {other:?}"),
/// }
/// store.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Store {
    pub(super) inner: Arc<StoreInner>,
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
        let previous_open = last_open::read(storage.as_ref());
        let rec = recovery::recover(storage.as_ref(), &config, now, Mode::Repair)?;
        last_open::write(storage.as_ref(), &rec.report, now);
        let compaction_interval = config.compaction_interval;
        let config = Config {
            refuse_expired_keys_for: Some(rec.grace),
            ..config
        };
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
            let next_segment = rec.next_segment_id;
            let sealed = (sealed_tx, sealed_rx.clone());
            // Given the channel, a panicking writer fails what waits in it.
            spawn_guarded(&shared, "writer", Some(rx.clone()), move |shared| {
                Writer::new(shared, rx, next_segment, sealed).run();
            })
            .map_err(spawn_err)?
        };
        let (stop_tx, stop_rx) = bounded(1);
        let compactor = {
            let tx = tx.clone();
            spawn_guarded(&shared, "compactor", None, move |shared| {
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
                previous_open,
            }),
        })
    }

    /// Opens the store in the existing directory `dir` to read it, without
    /// taking its lock: safe while another process has it open and writes.
    ///
    /// The store is what the files hold at the moment `open_read_only`
    /// reads them, and stays so: later writes by the other process are not
    /// seen. Every whole record in them counts: in a running store's files
    /// those are acknowledged completions and the reservations that were
    /// in flight, plus, for an instant, a completion being written whose
    /// caller has not been answered yet. A record being written is ignored;
    /// nothing is repaired, removed or created (the
    /// [`recovery_report`](Self::recovery_report) says what a writable open
    /// would repair). Reads ([`get`](Self::get), [`records`](Self::records),
    /// [`stats`](Self::stats), [`segments`](Self::segments)) work; every
    /// write fails with [`Error::ReadOnly`]. A file the other process
    /// deletes meanwhile (a bucket that ended) is still read from the open
    /// descriptor.
    ///
    /// ```
    /// # use idemstore::*;
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Config::default())?;
    /// let fp = Fingerprint::of(b"req");
    /// let Begin::Reserved(r) = store.begin(Tenant::new("t"), Key::new("k"), fp)? else { unreachable!() };
    /// r.complete(Response::new(201, "created"))?;
    /// // Beside the open store, whose lock it does not need:
    /// let reader = Store::open_read_only(dir.path(), Config::default())?;
    /// assert!(matches!(reader.get(Tenant::new("t"), Key::new("k"))?, Some(KeyState::Completed(_))));
    /// assert!(matches!(reader.begin(Tenant::new("t"), Key::new("j"), fp), Err(Error::ReadOnly { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_read_only(dir: impl AsRef<Path>, config: Config) -> Result<Store> {
        let dir = dir.as_ref();
        let storage = FsStorage::read_only(dir)
            .map_err(|e| Error::io("opening", dir, e, advice::OPEN_READ_ONLY))?;
        Store::open_read_only_with_storage(Arc::new(storage), config)
    }

    /// Like [`open_read_only`](Self::open_read_only), on any [`Storage`]
    /// (which it only reads).
    pub fn open_read_only_with_storage(storage: Arc<dyn Storage>, config: Config) -> Result<Store> {
        config.validate()?;
        let now = config.clock.now();
        let previous_open = last_open::read(storage.as_ref());
        let rec = recovery::recover(storage.as_ref(), &config, now, Mode::ReadOnly)?;
        let dir = storage.location();
        let config = Config {
            refuse_expired_keys_for: Some(rec.grace),
            ..config
        };
        let mut shared = Shared::new(
            config,
            storage,
            dir,
            rec.index,
            rec.segments,
            rec.next_seq,
            rec.floor,
        );
        shared.read_only = true;
        // No writer takes from this channel: nothing is ever sent (every
        // write is refused first), and a send would fail, not wait.
        let (tx, _) = bounded(1);
        Ok(Store {
            inner: Arc::new(StoreInner {
                shared: Arc::new(shared),
                writer_tx: tx,
                threads: Mutex::new(None),
                lock: Mutex::new(None),
                report: rec.report,
                previous_open,
            }),
        })
    }

    /// True for a store opened with [`open_read_only`](Self::open_read_only).
    pub fn is_read_only(&self) -> bool {
        self.inner.shared.read_only
    }

    /// Figures about the store now.
    pub fn stats(&self) -> Stats {
        let s = &self.inner.shared;
        let (completed, pending, index_bytes) = s.index.counts();
        let (segments, buckets, disk_bytes) = s.segments.totals();
        let c = &s.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        crate::metrics::gauges(completed + pending, pending, disk_bytes);
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
            refused_expired: get(&c.refused_expired),
            tombstones_written: get(&c.tombstones_written),
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

    /// What the writable open before this one found, as it left it in the
    /// directory (the `LAST-OPEN` file, FORMAT.md): after a crash, once the
    /// service has restarted and repaired, what that repair was. For a
    /// [read-only](Self::open_read_only) store, the last writable open's
    /// (the running service's, beside which it reads). `None` for a new
    /// directory, or if the file is missing or unreadable (it is best
    /// effort: not fsynced).
    pub fn previous_open(&self) -> Option<&LastOpen> {
        self.inner.previous_open.as_ref()
    }

    /// Runs one compaction pass now (the compactor thread also runs one every
    /// `compaction_interval`).
    ///
    /// ```
    /// # use idemstore::*;
    /// # use std::time::Duration;
    /// # let dir = tempfile::tempdir()?;
    /// let clock = ManualClock::new(Timestamp(1_800_000_000_000));
    /// let config = Config::default().clock(std::sync::Arc::new(clock.clone()));
    /// let store = Store::open(dir.path(), config)?;
    /// let Begin::Reserved(r) = store.begin(Tenant::new("t"), Key::new("k"), Fingerprint::of(b"req"))? else { unreachable!() };
    /// r.complete(Response::new(201, "created"))?;
    /// clock.advance(Duration::from_secs(26 * 3600)); // past the 24 h retention
    /// let report = store.compact_now()?;
    /// assert_eq!(report.segments_dropped, 1, "the bucket's file is deleted whole");
    /// assert_eq!(store.stats().disk_bytes, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compact_now(&self) -> Result<CompactionReport> {
        self.inner.shared.check_open()?;
        self.check_not_read_only()?;
        compactor::compact_once(&self.inner.shared, &self.inner.writer_tx)
    }

    /// Makes everything written so far durable, whatever the durability mode.
    /// Records kept after a failed write are written again first; if that
    /// still fails, this returns [`Error::Deferred`].
    pub fn flush(&self) -> Result<()> {
        self.check_not_read_only()?;
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

    /// [`Error::ReadOnly`] for a read-only store.
    pub(super) fn check_not_read_only(&self) -> Result<()> {
        if self.inner.shared.read_only {
            return Err(Error::ReadOnly {
                path: self.inner.shared.dir.clone(),
            });
        }
        Ok(())
    }
}

impl StoreInner {
    fn shutdown(&self) -> Result<()> {
        // Held throughout, so a second `close` returns only once this one
        // has flushed and joined.
        let mut threads = self.threads.lock();
        let Some(t) = threads.take() else {
            // Closed before, or read-only (no threads).
            self.shared.closed.store(true, Ordering::SeqCst);
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

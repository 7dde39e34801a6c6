//! The writer thread: the only code that appends to segment files.
//!
//! Callers encode their records on their own threads. Completions travel
//! over a bounded channel; reservation records (pending, renewal, abort) go
//! to a side queue that the writer drains with every batch, and at the latest
//! `pending_write_delay` after the first one arrived. The writer takes every
//! message waiting (up to `max_batch`) plus the side queue, appends each
//! segment's share with one write call, fsyncs each touched segment once
//! (`Sync` mode), then has the batch settled — its completed records
//! published in the index and its callers woken — by the settler thread
//! while it goes on to the next batch (see settler.rs): group commit.
//!
//! A reservation record is *elided* (not written) when the same batch holds a
//! newer record of the same reservation (its completion, its abort, or a
//! later renewal): the newer record supersedes it on disk at the same fsync.
//! Under load most reservations complete within one batch, so they cost no
//! disk bytes and no write of their own.
//!
//! Invariants:
//! - a completed record becomes visible to `begin` (replay) only after it is
//!   as durable as the mode promises, so no retry is ever served a response
//!   that a crash could still take back;
//! - records are appended in channel order, so a reservation's pending record
//!   is on disk no later than its completion;
//! - after any failed write or fsync the store is poisoned: nothing later is
//!   acknowledged (as PostgreSQL does after an fsync failure, since the page
//!   cache may have dropped the dirty pages).

use crate::commit::Settlement;
use crate::config::Durability;
use crate::error::{Error, advice};
use crate::format::{frame, hint};
use crate::hints;
use crate::index::Slot;
use crate::pipeline::{Append, Msg, Sealed};
use crate::segment::Segment;
use crate::shared::Shared;
use crate::write::active::{self, ActiveSegments, PAGE};
use crate::write::group_commit::GroupCommit;
use crate::write::settler::{self, Placed, Settler};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// For this long after a batch the writer only naps between messages (see
/// `Writer::next_message`).
const ACTIVE: Duration = Duration::from_millis(100);

pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    /// The segments being appended to (see active.rs).
    segments: ActiveSegments,
    /// When the last batch was written (see `next_message`).
    last_batch: Instant,
    /// Scratch: tokens completed in the batch being written.
    completing: HashSet<u64>,
    /// Scratch: newest side-queue position per token.
    newest: HashMap<u64, usize>,
    /// The group-commit window (see group_commit.rs).
    group: GroupCommit,
    /// The compactor's end of the segments' hand-over: at shutdown the
    /// writer writes the hints the compactor did not get to.
    sealed_rx: Receiver<Sealed>,
    /// The settler thread (without one the writer settles batches itself).
    settler: Option<Settler>,
    /// Records whose write failed, oldest first, to be written again.
    retry: Vec<Append>,
    /// While writes fail: when to try `retry` again, and the last failure.
    retry_at: Option<(Instant, Error)>,
    /// When the size gauges were last set (see `metrics`).
    gauges_at: Instant,
}

/// Longest the size gauges go without an update while batches are written.
const GAUGES_EVERY: Duration = Duration::from_secs(1);

/// Poisons the store with its message, if any, when dropped.
struct PoisonOnDrop(Arc<Shared>, Option<String>);

impl Drop for PoisonOnDrop {
    fn drop(&mut self) {
        if let Some(cause) = self.1.take() {
            self.0.poison(cause);
        }
    }
}

/// Moves the records `placed` put in segment `id` to `to` (their write did
/// not happen).
fn take_placed_in(placed: &mut Placed, id: u32, to: &mut Vec<Append>) {
    let mut i = 0;
    while i < placed.len() {
        if placed[i].1.is_some_and(|s| s.seg == id) {
            to.push(placed.remove(i).0);
        } else {
            i += 1;
        }
    }
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: Receiver<Msg>,
        next_segment_id: u32,
        sealed: (Sender<Sealed>, Receiver<Sealed>),
    ) -> Self {
        Writer {
            shared,
            rx,
            segments: ActiveSegments::new(next_segment_id, sealed.0),
            last_batch: Instant::now(),
            completing: HashSet::new(),
            newest: HashMap::new(),
            group: GroupCommit::default(),
            sealed_rx: sealed.1,
            settler: None,
            retry: Vec::new(),
            retry_at: None,
            gauges_at: Instant::now(),
        }
    }

    pub(crate) fn run(mut self) {
        let max_batch = self.shared.config.max_batch;
        self.settler = Settler::start(&self.shared);
        let mut batch: Vec<Append> = Vec::new();
        loop {
            // Messages that queued up during the last fsync came from callers
            // it did not carry: there is concurrency worth a window.
            let Some(first) = self.next_message() else {
                // Every sender is gone: the store was dropped.
                self.write_batch(&mut batch, true);
                self.finish();
                return;
            };
            let mut control = None;
            match first {
                Msg::Append(a) => batch.push(a),
                other => control = Some(other),
            }
            while control.is_none() && batch.len() < max_batch {
                match self.rx.try_recv() {
                    Ok(Msg::Append(a)) => batch.push(a),
                    Ok(other) => control = Some(other),
                    Err(_) => break,
                }
            }
            if control.is_none() {
                control = self.group.linger(
                    &self.shared.config,
                    &self.shared.doorbell,
                    &self.rx,
                    &mut batch,
                );
            }
            // Every control message first writes what is queued before it.
            self.write_batch(&mut batch, false);
            match control {
                None | Some(Msg::Append(_)) => {}
                Some(Msg::Retire { upto, done }) => {
                    self.segments.retire(upto);
                    let _ = done.send(());
                }
                Some(Msg::Flush(c)) => {
                    // What waits for a retry is tried at once: a flush asks
                    // for everything to be made durable now.
                    if !self.retry.is_empty() {
                        self.write_batch(&mut Vec::new(), true);
                    }
                    let synced = self.segments.sync_all(&self.shared);
                    let r = synced.and_then(|()| match &self.retry_at {
                        Some((_, err)) => Err(Error::Deferred {
                            cause: err.to_string(),
                        }),
                        None => Ok(()),
                    });
                    c.settle(r);
                }
                Some(Msg::Shutdown) => {
                    self.finish();
                    return;
                }
            }
        }
    }

    /// The next message. While waiting, writes the side queue when its
    /// deadline passes and syncs on time in `Periodic` mode. Within
    /// `ACTIVE` of the last batch the writer only naps (at most
    /// `pending_write_delay`), which records put in the side queue do not
    /// interrupt; after that it sleeps deeply, and the first record wakes
    /// it. While records wait it naps until their deadline (or a message):
    /// every wait ends at a deadline, a message or a record, never sooner.
    fn next_message(&mut self) -> Option<Msg> {
        let delay = self.shared.config.pending_write_delay;
        // With no delay every queued record rings the writer: a nap then
        // needs no bound of its own.
        let nap = if delay.is_zero() { ACTIVE } else { delay };
        loop {
            let sync_due = self.segments.sync_due(self.shared.config.durability);
            let queue_due = self.queue_due(delay);
            let due = [sync_due, queue_due, self.retry_due()]
                .into_iter()
                .flatten()
                .min();
            let now = Instant::now();
            // Records waiting in the side queue have a deadline: nap until
            // it. (A deep sleep returns at once while the queue holds
            // records, so it would spin until the deadline.)
            let napping = now < self.last_batch + ACTIVE || queue_due.is_some();
            let bell = &self.shared.doorbell;
            let got = if napping {
                let until = due.map_or(now + nap, |d| d.min(now + nap));
                bell.recv(&self.rx, Some(until.max(now + Duration::from_micros(1))))
            } else {
                let queue = &self.shared.queue;
                let queued = || queue.lock().since.is_some();
                bell.recv_deep(&self.rx, due, &queued)
            };
            let msg = match got {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return None,
            };
            let now = Instant::now();
            if self.retry_due().is_some_and(|d| now >= d) {
                self.write_batch(&mut Vec::new(), true);
            } else if self.queue_due(delay).is_some_and(|d| now >= d) {
                self.write_batch(&mut Vec::new(), false);
            }
            if sync_due.is_some_and(|d| now >= d) {
                let _ = self.segments.sync_all(&self.shared);
            }
            if msg.is_some() {
                return msg;
            }
        }
    }

    /// When the side queue must be written by (`delay` after it last went
    /// from empty to non-empty), if it holds records.
    fn queue_due(&self, delay: Duration) -> Option<Instant> {
        self.shared.queue.lock().since.map(|t| t + delay)
    }

    /// Takes the side queue and adds what must be written to `batch`;
    /// superseded reservation records are settled with the batch unwritten.
    fn take_queue(&mut self, batch: &mut Vec<Append>, elided: &mut Vec<Append>) {
        let queued = {
            let mut q = self.shared.queue.lock();
            q.since = None;
            std::mem::take(&mut q.items)
        };
        if queued.is_empty() {
            return;
        }
        self.completing.clear();
        self.completing
            .extend(batch.iter().filter_map(Append::completes));
        self.newest.clear();
        for (i, q) in queued.iter().enumerate() {
            self.newest.insert(q.token, i);
        }
        let mut keep = Vec::with_capacity(queued.len());
        for (i, q) in queued.into_iter().enumerate() {
            let superseded =
                self.completing.contains(&q.token) || self.newest.get(&q.token) != Some(&i);
            if superseded {
                elided.push(q.append);
            } else {
                keep.push(q.append);
            }
        }
        // Reservation records first: the file then reads in causal order.
        keep.append(batch);
        *batch = keep;
    }

    /// Appends `batch` (and the side queue), fsyncs it in `Sync` mode, and
    /// hands it to the settler, which publishes and acknowledges it.
    fn write_batch(&mut self, batch: &mut Vec<Append>, now: bool) {
        let began = Instant::now();
        let Some((segments, placed)) = self.append(batch, now) else {
            return;
        };
        self.last_batch = Instant::now();
        let result = if segments.is_empty() {
            // Only elided or expired records: nothing to make durable.
            Ok(())
        } else if self.shared.config.durability == Durability::Sync {
            let started = Instant::now();
            let result = active::sync(&self.shared, &segments);
            self.group.fsynced(started.elapsed(), self.rx.len());
            result
        } else {
            for seg in segments {
                self.segments.mark_dirty(seg);
            }
            Ok(())
        };
        let failed = result.is_err();
        if failed {
            crate::metrics::write_failure();
        } else {
            let written = placed.iter().filter(|(_, s)| s.is_some()).count() as u64;
            crate::metrics::batch(began.elapsed(), written);
        }
        match &self.settler {
            Some(s) => s.settle(&self.shared, placed, result, !self.rx.is_empty()),
            None => settler::settle(&self.shared, placed, result),
        }
        if !failed && self.segments.has_sealing() {
            self.segments.hand_over_sealed(&self.shared);
        }
        if self.gauges_at.elapsed() >= GAUGES_EVERY {
            self.gauges_at = Instant::now();
            let (completed, pending, _) = self.shared.index.counts();
            let (_, _, disk) = self.shared.segments.totals();
            crate::metrics::gauges(completed + pending, pending, disk);
        }
    }

    /// Appends `batch` (after the records waiting to be written again and
    /// the side queue's records) to its segments. Returns the segments
    /// written and every record written or settled with them, or `None` when
    /// nothing was written. Records whose write failed wait in `retry` (see
    /// `defer`); while writes fail they are tried again every
    /// `write_retry_interval`, and records that arrive meanwhile join them
    /// unless `now` asks for a try at once.
    fn append(
        &mut self,
        batch: &mut Vec<Append>,
        now: bool,
    ) -> Option<(Vec<Arc<Segment>>, Placed)> {
        let mut elided = Vec::new();
        self.take_queue(batch, &mut elided);
        if !self.retry.is_empty() {
            // What failed before goes first.
            let mut all = std::mem::take(&mut self.retry);
            all.append(batch);
            *batch = all;
        }
        if batch.is_empty() && elided.is_empty() {
            return None;
        }
        self.group.appending();
        if let Err(e) = self.shared.check_poison() {
            // Completions stay reserved (`Completing`): the key is never
            // freed by a failure, and the next open sees their reservations.
            // Nothing is retried on a poisoned store.
            self.retry_at = None;
            let mut s = Settlement::default();
            for a in batch.drain(..).chain(elided) {
                if let Some(d) = a.done {
                    s.add(d, Err(e.clone()));
                }
            }
            s.finish();
            return None;
        }
        if !now
            && let Some((_, err)) = self
                .retry_at
                .as_ref()
                .filter(|(at, _)| Instant::now() < *at)
        {
            let err = err.clone();
            // Superseded records wait with what superseded them.
            // Joining the list leaves its retry time as it is: only a
            // failed write puts it off.
            self.defer(elided.into_iter().chain(batch.drain(..)), &err, false);
            return None;
        }
        let clock_now = self.shared.clock().now();
        // Lay the batch out: which segment and offset each frame goes to.
        let mut groups: Vec<(Arc<Segment>, Vec<u8>)> = Vec::new();
        let mut placed: Placed = Vec::with_capacity(batch.len() + elided.len());
        placed.extend(elided.into_iter().map(|a| (a, None)));
        let mut unplaced: Vec<Append> = Vec::new();
        let mut failure: Option<Error> = None;
        let mut records = batch.drain(..);
        for a in records.by_ref() {
            let meaningful_until = a
                .entry
                .kind
                .meaningful_until(a.entry.live_until, self.shared.config.grace());
            if a.bucket.1 <= self.segments.retired_upto() && meaningful_until <= clock_now {
                // Expired before it could be written: nothing to keep. (A
                // record still meaningful for a bucket the compactor retired
                // (after the clock went back, or a completion whose key is
                // still refused) gets a segment of its own below.)
                placed.push((a, None));
                continue;
            }
            let group = self
                .segments
                .group_for(&self.shared, &mut groups, a.bucket, a.frame.len());
            let gi = match group {
                Ok(gi) => gi,
                Err(e) => {
                    failure = Some(e);
                    unplaced.push(a);
                    break;
                }
            };
            let (seg, buf) = &mut groups[gi];
            let off = seg.len.load(Ordering::Relaxed) + buf.len() as u64;
            let at = buf.len();
            buf.extend_from_slice(&a.frame);
            frame::seal(&mut buf[at..], seg.id(), off);
            let slot = Slot {
                seg: seg.id(),
                off: u32::try_from(off).unwrap_or(u32::MAX),
            };
            placed.push((a, Some(slot)));
        }
        unplaced.extend(records);
        let mut bytes = 0u64;
        let mut written_segments = Vec::with_capacity(groups.len());
        for (seg, mut buf) in groups {
            if failure.is_some() {
                // An earlier segment's write failed: this one waits with it.
                let id = seg.id();
                take_placed_in(&mut placed, id, &mut unplaced);
                continue;
            }
            let at = seg.len.load(Ordering::Relaxed);
            let data = buf.len() as u64;
            let ahead = self.segments.preallocate(&self.shared, &seg, at + data);
            // Into zeros written ahead, the write runs on to the end of its
            // last page with zeros (no change to what the file holds): that
            // page is then wholly written, so the next batch finds it in the
            // page cache. Zeros written with O_DIRECT are not cached, and a
            // partial write to an uncached page reads it from the disk first.
            let padded = (at + data).next_multiple_of(PAGE).min(ahead).max(at + data);
            #[allow(clippy::cast_possible_truncation)] // < PAGE more than buf
            buf.resize((padded - at) as usize, 0);
            if let Err(e) = seg.file.write_all_at(&buf, at) {
                // The segment's length is not advanced: whatever part of the
                // buffer reached the file is overwritten by the next write
                // (or truncated as a torn tail by recovery).
                failure = Some(self.io_error("writing", &seg, e));
                take_placed_in(&mut placed, seg.id(), &mut unplaced);
                continue;
            }
            seg.len.store(at + data, Ordering::Release);
            bytes += data;
            // These records are in the file now: the hint must list them.
            let list = self.segments.entries_of(seg.id());
            for (a, slot) in &placed {
                if let Some(slot) = slot.filter(|s| s.seg == seg.id()) {
                    list.max_seq = list.max_seq.max(a.entry.seq);
                    list.entries.push(hint::Entry {
                        offset: slot.off,
                        ..a.entry
                    });
                }
            }
            written_segments.push(seg);
        }
        match failure {
            Some(err) => {
                // Superseded records wait with what superseded them.
                let mut i = 0;
                while i < placed.len() {
                    if placed[i].1.is_none() && placed[i].0.install.is_none() {
                        unplaced.push(placed.remove(i).0);
                    } else {
                        i += 1;
                    }
                }
                self.defer(unplaced.into_iter(), &err, true);
            }
            None => {
                self.retry_at = None;
                self.shared.clear_write_failure();
            }
        }
        let c = &self.shared.counters;
        let written = placed.iter().filter(|(_, s)| s.is_some()).count() as u64;
        if written > 0 {
            c.batches.fetch_add(1, Ordering::Relaxed);
        }
        c.records_written.fetch_add(written, Ordering::Relaxed);
        c.records_elided
            .fetch_add(placed.len() as u64 - written, Ordering::Relaxed);
        c.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        self.group.carried(
            placed
                .iter()
                .filter(|(a, _)| a.completes().is_some())
                .count(),
        );
        if placed.is_empty() {
            return None;
        }
        Some((written_segments, placed))
    }

    fn io_error(&self, op: &'static str, seg: &Segment, e: std::io::Error) -> Error {
        let advice = if op == "fsyncing" {
            advice::FSYNC
        } else {
            advice::WRITE
        };
        Error::io(op, self.shared.dir.join(&seg.name), e, advice)
    }

    /// Keeps records whose write failed (a full disk, EIO on write) to be
    /// written again, in order, every `write_retry_interval` until a write
    /// succeeds. That does not poison the store: the segment's length was not
    /// advanced and nothing was acknowledged. Their callers are told now
    /// ([`Error::Deferred`]), while a completion's key stays reserved
    /// (`Completing`) until its record is written: a store failure never
    /// frees a key whose request ran. Meanwhile `begin` refuses new
    /// reservations (see `Shared::check_writable`) but serves replays. (A
    /// failed fsync does poison the store: see `active::fsync`.)
    fn defer(&mut self, records: impl Iterator<Item = Append>, err: &Error, failed_now: bool) {
        if failed_now {
            crate::metrics::write_failure();
            self.shared.note_write_failure(err.clone());
            let at = Instant::now() + self.shared.config.write_retry_interval;
            self.retry_at = Some((at, err.clone()));
        }
        let deferred = Error::Deferred {
            cause: err.to_string(),
        };
        let mut s = Settlement::default();
        for mut a in records {
            if let Some(d) = a.done.take() {
                s.add(d, Err(deferred.clone()));
            }
            self.retry.push(a);
        }
        s.finish();
    }

    /// When the records waiting to be written again are due.
    fn retry_due(&self) -> Option<Instant> {
        if self.retry.is_empty() {
            return None;
        }
        self.retry_at.as_ref().map(|(at, _)| *at)
    }

    /// At shutdown: syncs everything, then writes the hint files of every
    /// segment still open for appends or waiting for the compactor, so that
    /// the next open reads no segment. Skipped if the store is poisoned.
    fn finish(&mut self) {
        if !self.retry.is_empty() {
            // A last try for what could not be written; what still fails is
            // lost with this process (its reservations, if written, remain).
            self.write_batch(&mut Vec::new(), true);
        }
        if let Some(s) = self.settler.take() {
            s.stop();
        }
        // What was written is made durable (and hinted) even if some records
        // could not be written; those are reported by poisoning the closing
        // store, so `close` says so.
        let unwritten = (!self.retry.is_empty())
            .then(|| self.retry_at.as_ref().map(|(_, e)| e.to_string()))
            .flatten()
            .map(|err| {
                format!(
                    "{} records could not be written before the store closed ({err})",
                    self.retry.len()
                )
            });
        let _poison_at_end = PoisonOnDrop(self.shared.clone(), unwritten);
        if self.segments.sync_all(&self.shared).is_err() {
            return;
        }
        let Ok(mut todo) = self.segments.seal_all(&self.shared) else {
            return;
        };
        todo.extend(self.sealed_rx.try_iter());
        for sealed in todo {
            hints::write_sealed(&self.shared, sealed);
        }
    }
}

//! Expiry: deciding which buckets are past (a pure function) and carrying
//! the decision out on a timer (the compactor thread).
//!
//! A bucket `[start, end)` holds only records expiring before `end`, so once
//! `end <= now` every record in it has expired and its segment files are
//! deleted whole. No record is ever rewritten: write amplification is 1
//! (with `Config::refuse_expired_keys_for`, a small tombstone per key is
//! written first; see `tombstones`).

use crate::clock::Timestamp;
use crate::error::{Error, Result, advice};
use crate::format::hint;
use crate::hints;
use crate::index::Holder;
use crate::pipeline::{Msg, Sealed};
use crate::shared::Shared;
use crate::storage::remove_if_present;
use crate::tombstones;
use crossbeam_channel::{Receiver, Sender, bounded};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What the compactor should do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    Nothing,
    /// Delete these segments (ids): their buckets have ended.
    Drop(Vec<u32>),
}

/// Segments `(id, bucket_end)` whose bucket ended at or before `now`.
pub(crate) fn choose(segments: &[(u32, Timestamp)], now: Timestamp) -> Choice {
    let mut ids: Vec<u32> = segments
        .iter()
        .filter(|(_, end)| *end <= now)
        .map(|(id, _)| *id)
        .collect();
    if ids.is_empty() {
        return Choice::Nothing;
    }
    ids.sort_unstable();
    Choice::Drop(ids)
}

/// What one compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionReport {
    /// Segment files deleted.
    pub segments_dropped: u64,
    /// Bytes those files held.
    pub bytes_freed: u64,
    /// Index entries of expired records removed.
    pub index_entries_dropped: u64,
    /// Abandoned reservations (recovered from disk, lease over) forgotten.
    pub orphans_dropped: u64,
    /// Tombstones written for the completions of the deleted segments
    /// (`Config::refuse_expired_keys_for`).
    pub tombstones_written: u64,
}

/// One pass: forget abandoned reservations, drop ended buckets. Runs on the
/// compactor thread or on the caller's (`Store::compact_now`); the passes
/// take turns, and no hint file is written while one runs
/// (`Shared::compaction`).
pub(crate) fn compact_once(shared: &Shared, writer: &Sender<Msg>) -> Result<CompactionReport> {
    let _pass = shared.compaction.lock();
    let now = shared.clock().now();
    let mut report = CompactionReport::default();
    shared.index.for_each_shard(|s| {
        let before = s.pending.len();
        s.pending
            .retain(|_, e| !(e.holder == Holder::Orphan && now >= e.lease_end));
        report.orphans_dropped += (before - s.pending.len()) as u64;
    });
    let Choice::Drop(ids) = choose(&shared.segments.buckets(), now) else {
        return Ok(report);
    };
    // The writer must stop appending to these buckets before they go.
    let (tx, rx) = bounded(1);
    shared.submit(
        writer,
        Msg::Retire {
            upto: now,
            done: tx,
        },
    )?;
    rx.recv().map_err(|_| Error::Closed)?;
    // Keys still refused after their bucket ended keep a tombstone: durable
    // before the files go (else a retry would run again).
    let tombstoned = tombstones::write(shared, writer, &ids, now)?;
    report.tombstones_written = tombstoned.tombstones;
    let ids: Vec<u32> = ids
        .into_iter()
        .filter(|id| !tombstoned.kept.contains(id))
        .collect();
    // A segment kept for a completion that could not be read fails the
    // pass with that error once the others are gone (a compaction error in
    // `Stats`); its key is refused meanwhile, and the segment goes once its
    // bucket ended longer than the grace ago, or the key is purged.
    let mut first_error = tombstoned.first_error;
    // These segments may hold the highest sequence numbers used so far: the
    // floor must be above them before they go (else a restart could hand
    // out fencing tokens already used).
    shared.raise_floor()?;

    let removed = shared.segments.remove(&ids);
    let gone: HashSet<u32> = removed.iter().map(|s| s.id()).collect();
    shared.index.for_each_shard(|s| {
        report.index_entries_dropped += s.drop_completed(|slot| gone.contains(&slot.seg)) as u64;
    });
    for seg in &removed {
        report.bytes_freed += seg.len.load(Ordering::Relaxed);
        // The hint goes first: a hint never outlives its segment.
        if let Some(h) = hint::name_for(&seg.name)
            && let Err(e) = remove_if_present(shared.storage.as_ref(), &h)
        {
            first_error.get_or_insert(Error::io(
                "deleting the hint of an expired segment",
                shared.dir.join(&h),
                e,
                advice::WRITE,
            ));
            continue;
        }
        match shared.storage.remove(&seg.name) {
            Ok(()) => report.segments_dropped += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                first_error.get_or_insert(Error::io(
                    "deleting expired segment",
                    shared.dir.join(&seg.name),
                    e,
                    advice::WRITE,
                ));
            }
        }
    }
    if let Err(e) = shared.storage.sync_dir() {
        first_error.get_or_insert(Error::io("syncing", shared.dir.clone(), e, advice::WRITE));
    }
    shared
        .counters
        .segments_dropped
        .fetch_add(report.segments_dropped, Ordering::Relaxed);
    match first_error {
        // Failing to delete an expired file loses nothing: it is retried by
        // the next pass (recovery also skips expired buckets).
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// The compactor thread's loop: a pass every `interval`, and the hint file
/// of every segment the writer seals, until told to stop.
pub(crate) fn run(
    shared: Arc<Shared>,
    writer: Sender<Msg>,
    stop: Receiver<()>,
    mut sealed: Receiver<Sealed>,
    interval: Duration,
) {
    let mut next_pass = Instant::now() + interval;
    loop {
        let wait = next_pass.saturating_duration_since(Instant::now());
        crossbeam_channel::select! {
            recv(stop) -> _ => return,
            recv(sealed) -> seg => match seg {
                Ok(s) => hints::write_sealed(&shared, s),
                // The writer is gone: stop listening (else this spins).
                Err(_) => sealed = crossbeam_channel::never(),
            },
            default(wait) => {
                next_pass = Instant::now() + interval;
                if let Err(e) = compact_once(&shared, &writer) {
                    if matches!(e, Error::Closed) {
                        return;
                    }
                    shared
                        .counters
                        .compaction_errors
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_drops_exactly_the_ended_buckets() {
        let segs = [(3, Timestamp(100)), (1, Timestamp(50)), (2, Timestamp(101))];
        assert_eq!(choose(&segs, Timestamp(49)), Choice::Nothing);
        assert_eq!(choose(&segs, Timestamp(50)), Choice::Drop(vec![1]));
        assert_eq!(choose(&segs, Timestamp(100)), Choice::Drop(vec![1, 3]));
        assert_eq!(choose(&segs, Timestamp(1_000)), Choice::Drop(vec![1, 2, 3]));
        assert_eq!(choose(&[], Timestamp(1_000)), Choice::Nothing);
    }
}

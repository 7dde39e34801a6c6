//! The segments the writer appends to: one active segment per bucket, the
//! zeros written ahead of each, the index entries that become each one's
//! hint file, and the hand-over of the segments it rolled over to the
//! compactor. Owned by the writer thread alone.
//!
//! Invariants:
//! - a segment id is never reused, even one whose creation failed;
//! - a segment is handed to the compactor only once it is trimmed and
//!   durable, with the entries of every record written to it;
//! - every fsync of a segment goes through [`fsync`]: a failure poisons the
//!   store (the kernel may have dropped the dirty pages, so nothing written
//!   since the last good fsync can be trusted: PostgreSQL's lesson).

use crate::clock::Timestamp;
use crate::config::Durability;
use crate::error::{Error, advice};
use crate::format::segment_header::SegmentHeader;
use crate::pipeline::{Sealed, SegmentEntries};
use crate::segment::{self, Segment};
use crate::shared::Shared;
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Zeros kept written ahead of a segment's append point (see
/// `ActiveSegments::preallocate`).
const PREALLOCATE: u64 = 4 << 20;

/// The page size the writer aligns zeros and writes to.
pub(crate) const PAGE: u64 = 4096;

pub(crate) struct ActiveSegments {
    /// Segment being appended to, by bucket start.
    active: HashMap<u64, Arc<Segment>>,
    next_segment_id: u32,
    retired_upto: Timestamp,
    /// Written but not yet fsynced (Periodic and None modes).
    dirty: HashMap<u32, Arc<Segment>>,
    last_sync: Instant,
    /// The index entries of every record written to each segment the
    /// writer still appends to, by segment id: its hint file, once sealed.
    entries: HashMap<u32, SegmentEntries>,
    /// File length (data + zeros written ahead) of each segment the writer
    /// preallocated, by id.
    file_len: HashMap<u32, u64>,
    /// Segments the writer stopped appending to (rolled over), to be made
    /// durable and handed to the compactor, which writes their hint files,
    /// once the batch that rolled them over is written (it may still append
    /// to them).
    sealing: Vec<Arc<Segment>>,
    sealed_tx: Sender<Sealed>,
}

impl ActiveSegments {
    pub(crate) fn new(next_segment_id: u32, sealed_tx: Sender<Sealed>) -> Self {
        ActiveSegments {
            active: HashMap::new(),
            next_segment_id,
            retired_upto: Timestamp(0),
            dirty: HashMap::new(),
            last_sync: Instant::now(),
            entries: HashMap::new(),
            file_len: HashMap::new(),
            sealing: Vec::new(),
            sealed_tx,
        }
    }

    /// Every bucket ending at or before this was retired by the compactor.
    pub(crate) fn retired_upto(&self) -> Timestamp {
        self.retired_upto
    }

    /// Index into `groups` of the segment that takes `len` more bytes of
    /// `bucket`, creating or rolling the bucket's segment when needed.
    pub(crate) fn group_for(
        &mut self,
        shared: &Shared,
        groups: &mut Vec<(Arc<Segment>, Vec<u8>)>,
        bucket: (Timestamp, Timestamp),
        len: usize,
    ) -> Result<usize, Error> {
        let max = shared.config.max_segment_bytes;
        if let Some(seg) = self.active.get(&bucket.0.0) {
            let gi = match groups.iter().position(|(s, _)| Arc::ptr_eq(s, seg)) {
                Some(gi) => gi,
                None => {
                    groups.push((seg.clone(), Vec::new()));
                    groups.len() - 1
                }
            };
            let end = seg.len.load(Ordering::Relaxed) + (groups[gi].1.len() + len) as u64;
            if end <= max {
                return Ok(gi);
            }
        }
        let header = SegmentHeader {
            id: self.next_segment_id,
            bucket_start: bucket.0,
            bucket_end: bucket.1,
        };
        // Never reuse an id, even one whose creation failed.
        self.next_segment_id = self.next_segment_id.wrapping_add(1);
        // Mapped at the most it will hold (reads past a map use pread).
        let seg = segment::create(shared.storage.as_ref(), header, max)?;
        shared.segments.insert(seg.clone());
        if let Some(old) = self.active.insert(bucket.0.0, seg.clone()) {
            self.sealing.push(old);
        }
        groups.push((seg, Vec::new()));
        Ok(groups.len() - 1)
    }

    /// The entry list of segment `id`: what its hint file will list.
    pub(crate) fn entries_of(&mut self, id: u32) -> &mut SegmentEntries {
        self.entries.entry(id).or_default()
    }

    /// `seg` was written and waits for a sync (Periodic and None modes).
    pub(crate) fn mark_dirty(&mut self, seg: Arc<Segment>) {
        self.dirty.insert(seg.id(), seg);
    }

    /// When the dirty segments are due for a sync in `Periodic` mode.
    pub(crate) fn sync_due(&self, durability: Durability) -> Option<Instant> {
        match durability {
            Durability::Periodic(every) if !self.dirty.is_empty() => Some(self.last_sync + every),
            _ => None,
        }
    }

    pub(crate) fn retire(&mut self, upto: Timestamp) {
        self.retired_upto = self.retired_upto.max(upto);
        let upto = self.retired_upto;
        let (entries, file_len) = (&mut self.entries, &mut self.file_len);
        self.active.retain(|_, s| {
            let keep = s.header.bucket_end > upto;
            if !keep {
                entries.remove(&s.id());
                file_len.remove(&s.id());
            }
            keep
        });
        self.dirty.retain(|_, s| s.header.bucket_end > upto);
    }

    /// Keeps zeros written ahead of the append point, `PREALLOCATE` at a
    /// time (at most to `max_segment_bytes`), so that most batches overwrite
    /// bytes the file already has: their `fdatasync` then changes no file
    /// size and flushes no metadata (measured here: 2640 → 3600-3900
    /// fdatasyncs/s). The zeros are written before the data, with O_DIRECT
    /// where the file system allows it (`StorageFile::write_zeros`), and the
    /// next fsync makes the file's new size durable with the batch. A
    /// failure is ignored: the append then grows the file as before.
    /// A crash leaves the zero tail in the file; recovery truncates it like a
    /// torn tail. Sealing a segment trims it (`trim`).
    ///
    /// Returns how far the file holds data or zeros (at least `end` once
    /// the batch is written).
    pub(crate) fn preallocate(&mut self, shared: &Shared, seg: &Segment, end: u64) -> u64 {
        let max = shared.config.max_segment_bytes;
        let have = *self.file_len.entry(seg.id()).or_insert(end.min(max));
        if end <= have || have >= max {
            return have.max(end);
        }
        // Page-aligned, so that the zeros go with O_DIRECT where they can.
        let target = (end + PREALLOCATE).next_multiple_of(PAGE).min(max).max(end);
        if seg.file.write_zeros(have, target - have).is_ok() {
            self.file_len.insert(seg.id(), target);
            return target;
        }
        end
    }

    /// Cuts the zeros written ahead off a segment that will not grow again
    /// (so that its file length is its data and its hint matches it).
    fn trim(&mut self, shared: &Shared, seg: &Segment) -> Result<(), Error> {
        if self.file_len.remove(&seg.id()).is_none() {
            return Ok(());
        }
        let len = seg.len.load(Ordering::Acquire);
        if seg.file.set_len(len).is_err() {
            // Harmless: the next open truncates the zeros (and scans).
            return Ok(());
        }
        fsync(shared, seg)?;
        // That fsync made everything written to it durable too.
        self.dirty.remove(&seg.id());
        Ok(())
    }

    /// Whether a segment was rolled over and waits to be handed over.
    pub(crate) fn has_sealing(&self) -> bool {
        !self.sealing.is_empty()
    }

    /// Makes the segments the writer stopped appending to durable and hands
    /// them to the compactor, which writes their hint files.
    pub(crate) fn hand_over_sealed(&mut self, shared: &Shared) {
        for segment in std::mem::take(&mut self.sealing) {
            let seg = &segment;
            if self.trim(shared, seg).is_err() {
                return;
            }
            if self.dirty.remove(&seg.id()).is_some() && fsync(shared, seg).is_err() {
                return;
            }
            let entries = self.entries.remove(&seg.id()).unwrap_or_default();
            let _ = self.sealed_tx.send(Sealed { segment, entries });
        }
    }

    /// At shutdown, after `sync_all`: trims every segment still open for
    /// appends or rolled over and not yet handed over, and returns them with
    /// their entries (their hint files to write). An error if a trim's fsync
    /// failed (the store is then poisoned).
    pub(crate) fn seal_all(&mut self, shared: &Shared) -> Result<Vec<Sealed>, Error> {
        let mut segments: Vec<Arc<Segment>> = self.sealing.drain(..).collect();
        segments.extend(self.active.drain().map(|(_, s)| s));
        for seg in &segments {
            self.trim(shared, seg)?;
        }
        Ok(segments
            .into_iter()
            .map(|segment| {
                let entries = self.entries.remove(&segment.id()).unwrap_or_default();
                Sealed { segment, entries }
            })
            .collect())
    }

    /// fsyncs every segment written since the last sync.
    pub(crate) fn sync_all(&mut self, shared: &Shared) -> Result<(), Error> {
        self.last_sync = Instant::now();
        let dirty: Vec<Arc<Segment>> = self.dirty.drain().map(|(_, s)| s).collect();
        sync(shared, &dirty)?;
        shared.check_poison()
    }
}

/// fsyncs each of `segments` (see `fsync`).
pub(crate) fn sync(shared: &Shared, segments: &[Arc<Segment>]) -> Result<(), Error> {
    for seg in segments {
        fsync(shared, seg)?;
    }
    Ok(())
}

/// fsyncs `seg` and counts it. A failure poisons the store: the kernel may
/// have dropped the dirty pages, so nothing written since the last good
/// fsync can be trusted (PostgreSQL's lesson).
fn fsync(shared: &Shared, seg: &Segment) -> Result<(), Error> {
    if let Err(e) = seg.file.sync_data() {
        let err = Error::io("fsyncing", shared.dir.join(&seg.name), e, advice::FSYNC);
        shared.poison(err.to_string());
        return Err(err);
    }
    shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

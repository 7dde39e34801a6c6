//! Segment files as the running store sees them: which exist, which bucket
//! each belongs to, and reading one record back.
//!
//! A bucket is the half-open interval `[start, end)` of expiry times, `end -
//! start == bucket_width`, aligned to multiples of the width since the epoch.
//! Every record in a segment expires inside its bucket, so the whole file can
//! be deleted once `end <= now`.

use crate::clock::Timestamp;
use crate::error::{Error, Result, advice};
use crate::format::frame::{self, Frame};
use crate::format::segment_header::{self, SegmentHeader};
use crate::storage::{Mapping, StorageFile};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The bucket `[start, end)` whose interval holds `expiry`.
pub(crate) fn bucket_of(expiry: Timestamp, width_ms: u64) -> (Timestamp, Timestamp) {
    let start = expiry.0 - expiry.0 % width_ms;
    (Timestamp(start), Timestamp(start.saturating_add(width_ms)))
}

/// One segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) header: SegmentHeader,
    pub(crate) name: String,
    pub(crate) file: Arc<dyn StorageFile>,
    /// Bytes in the file that hold whole frames (the writer appends here).
    pub(crate) len: AtomicU64,
    /// A read-only map of the file, when the storage offers one.
    map: Option<Mapping>,
}

/// Bytes read speculatively with a record's header, so that most records need
/// a single read call.
const FIRST_READ: usize = 4096;

impl Segment {
    /// A segment of `len` valid bytes, mapped (if the storage can) up to
    /// `map_len` bytes: its length now for a recovered segment, the most it
    /// can grow to for a new one.
    pub(crate) fn new(
        header: SegmentHeader,
        file: Arc<dyn StorageFile>,
        len: u64,
        map_len: u64,
    ) -> Self {
        Segment {
            name: header.file_name(),
            header,
            map: file.map(map_len),
            file,
            len: AtomicU64::new(len),
        }
    }

    pub(crate) fn id(&self) -> u32 {
        self.header.id
    }

    /// Reads and checks the frame at `off`; returns its payload.
    pub(crate) fn read_payload(&self, off: u32, dir: &Path) -> Result<Vec<u8>> {
        let off = u64::from(off);
        let len = self.len.load(Ordering::Acquire);
        let corrupt = |reason: &str| Error::Corrupt {
            path: dir.join(&self.name),
            offset: off,
            reason: reason.to_owned(),
        };
        if off + frame::HEADER_LEN as u64 > len {
            return Err(corrupt("index points past the end of the segment"));
        }
        if let Some(bytes) = self.mapped(off, len) {
            return match frame::read(bytes, self.id(), off) {
                Frame::Valid { payload, .. } => Ok(payload.to_vec()),
                Frame::Incomplete => Err(corrupt("record cut short")),
                Frame::BadPayload { .. } => Err(corrupt("record checksum mismatch")),
                Frame::BadHeader => Err(corrupt("no valid frame header at this offset")),
            };
        }
        let avail = usize::try_from(len - off).unwrap_or(usize::MAX);
        let mut buf = vec![0u8; avail.min(FIRST_READ)];
        self.read_at(&mut buf, off, dir)?;
        let declared = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        let total = frame::HEADER_LEN + declared;
        if declared <= frame::MAX_PAYLOAD && total > buf.len() && total <= avail {
            let have = buf.len();
            buf.resize(total, 0);
            self.read_at(&mut buf[have..], off + have as u64, dir)?;
        }
        match frame::read(&buf, self.id(), off) {
            Frame::Valid { total, .. } => {
                buf.truncate(total);
                buf.drain(..frame::HEADER_LEN);
                Ok(buf)
            }
            Frame::Incomplete => Err(corrupt("record cut short")),
            Frame::BadPayload { .. } => Err(corrupt("record checksum mismatch")),
            Frame::BadHeader => Err(corrupt("no valid frame header at this offset")),
        }
    }

    /// The mapped bytes `[off, len)`, if mapped that far.
    fn mapped(&self, off: u64, len: u64) -> Option<&[u8]> {
        let bytes = self.map.as_ref()?.bytes();
        let end = usize::try_from(len).ok()?;
        bytes.get(usize::try_from(off).ok()?..end)
    }

    fn read_at(&self, buf: &mut [u8], off: u64, dir: &Path) -> Result<()> {
        self.file
            .read_exact_at(buf, off)
            .map_err(|e| Error::io("reading", dir.join(&self.name), e, advice::READ))
    }
}

/// The readable segments, by id.
#[derive(Default)]
pub(crate) struct Segments {
    map: RwLock<HashMap<u32, Arc<Segment>>>,
}

impl Segments {
    pub(crate) fn get(&self, id: u32) -> Option<Arc<Segment>> {
        self.map.read().get(&id).cloned()
    }

    pub(crate) fn insert(&self, seg: Arc<Segment>) {
        self.map.write().insert(seg.id(), seg);
    }

    pub(crate) fn remove(&self, ids: &[u32]) -> Vec<Arc<Segment>> {
        let mut m = self.map.write();
        ids.iter().filter_map(|id| m.remove(id)).collect()
    }

    /// (id, bucket end) of every segment.
    pub(crate) fn buckets(&self) -> Vec<(u32, Timestamp)> {
        self.map
            .read()
            .values()
            .map(|s| (s.id(), s.header.bucket_end))
            .collect()
    }

    /// Every segment, in no order.
    pub(crate) fn all(&self) -> Vec<Arc<Segment>> {
        self.map.read().values().cloned().collect()
    }

    /// (segment count, distinct buckets, bytes).
    pub(crate) fn totals(&self) -> (u64, u64, u64) {
        let m = self.map.read();
        let mut ends: Vec<u64> = m.values().map(|s| s.header.bucket_end.0).collect();
        ends.sort_unstable();
        ends.dedup();
        let bytes = m.values().map(|s| s.len.load(Ordering::Relaxed)).sum();
        (m.len() as u64, ends.len() as u64, bytes)
    }
}

/// Writes a new segment's header and makes the file and its directory entry
/// durable before any record goes in.
pub(crate) fn create(
    storage: &dyn crate::storage::Storage,
    header: SegmentHeader,
    max_len: u64,
) -> Result<Arc<Segment>> {
    let name = header.file_name();
    let path = storage.location().join(&name);
    let w = |e| Error::io("creating segment", path.clone(), e, advice::WRITE);
    let file = storage.create(&name).map_err(w)?;
    let made = file
        .write_all_at(&header.encode(), 0)
        .and_then(|()| file.sync_data())
        .and_then(|()| storage.sync_dir());
    if let Err(e) = made {
        // Best effort: a half-made segment holds no record either way
        // (recovery removes one cut short).
        let _ = storage.remove(&name);
        return Err(w(e));
    }
    Ok(Arc::new(Segment::new(
        header,
        file,
        segment_header::LEN as u64,
        max_len,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemStorage, Storage};

    #[test]
    fn buckets_are_aligned_half_open_intervals() {
        assert_eq!(bucket_of(Timestamp(0), 10), (Timestamp(0), Timestamp(10)));
        assert_eq!(bucket_of(Timestamp(9), 10), (Timestamp(0), Timestamp(10)));
        assert_eq!(bucket_of(Timestamp(10), 10), (Timestamp(10), Timestamp(20)));
    }

    #[test]
    fn read_back_what_was_framed_and_refuse_damage() {
        let st = MemStorage::new();
        let header = SegmentHeader {
            id: 1,
            bucket_start: Timestamp(0),
            bucket_end: Timestamp(10),
        };
        let seg = create(&st, header, 1 << 20).unwrap();
        let base = seg.len.load(Ordering::SeqCst);
        let mut buf = Vec::new();
        let small_at = buf.len();
        let s = frame::begin(&mut buf);
        buf.extend_from_slice(b"small");
        frame::finish(&mut buf, s);
        frame::seal(&mut buf[s..], 1, base + s as u64);
        let big_at = buf.len();
        let s = frame::begin(&mut buf);
        buf.extend(std::iter::repeat_n(7u8, 10_000));
        frame::finish(&mut buf, s);
        frame::seal(&mut buf[s..], 1, base + s as u64);
        seg.file.write_all_at(&buf, base).unwrap();
        seg.len.store(base + buf.len() as u64, Ordering::SeqCst);
        let dir = Path::new("/x");
        let at = |o: usize| u32::try_from(base as usize + o).unwrap();
        assert_eq!(seg.read_payload(at(small_at), dir).unwrap(), b"small");
        assert_eq!(seg.read_payload(at(big_at), dir).unwrap().len(), 10_000);
        assert!(matches!(
            seg.read_payload(at(small_at) + 1, dir),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            seg.read_payload(at(buf.len()), dir),
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(st.list().unwrap(), vec![header.file_name()]);
    }
}

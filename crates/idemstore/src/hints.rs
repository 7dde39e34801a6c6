//! Scanning a segment into index entries, and the hint files that save
//! `open` from doing it again (layout: `format/hint.rs`).
//!
//! When hints are written:
//! - when the writer stops appending to a segment (it rolled over to a new
//!   one), the compactor thread writes its hint in the background, from the
//!   entries the writer collected as it appended (the segment is not read
//!   back);
//! - `close` writes the hints of the segments still being appended to;
//! - `open` writes one for every segment it had to scan.
//!
//! A hint is written only for segment bytes that are durable (the writer
//! fsyncs a segment before handing it over, in every mode), and it is bound
//! to its segment by id, header checksum and the length it covers. An
//! unreadable or mismatched hint is ignored: `open` scans the segment.
//!
//! Invariant: a hint never outlives its segment. Deleting a segment deletes
//! its hint first; `open` deletes hints whose segment is gone, before any new
//! segment can be created, and never reuses the id of any file it saw.

use crate::format::frame::{Scanned, Scanner};
use crate::format::hint::{self, Entry, Header};
use crate::format::record;
use crate::format::segment_header;
use crate::pipeline::Sealed;
use crate::scope::{IndexHashFn, TenantDigest};
use crate::shared::Shared;
use crate::storage::{Storage, remove_if_present};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;

/// The probe value of an index hash function (see `format/hint.rs`).
pub(crate) fn probe(hash: IndexHashFn) -> u64 {
    hash(&TenantDigest([0; 32]), b"idemstore probe").hi
}

/// What scanning a segment's frames found.
#[derive(Default)]
pub(crate) struct Scan {
    /// Every decodable record, in file order.
    pub(crate) entries: Vec<Entry>,
    pub(crate) max_seq: u64,
    pub(crate) records: u64,
    pub(crate) corrupt_regions: u64,
    pub(crate) corrupt_bytes: u64,
    pub(crate) undecodable: u64,
    /// A record of a newer version than this build reads: `(offset, version)`.
    pub(crate) newer_record: Option<(u64, u8)>,
    /// Where the valid frames end (file offset): a torn tail starts here.
    pub(crate) valid_end: u64,
}

/// Scans `bytes`, the bytes of segment `id` from file offset `base` on.
pub(crate) fn scan(bytes: &[u8], id: u32, base: u64, hash: IndexHashFn) -> Scan {
    let mut s = Scan {
        valid_end: base + bytes.len() as u64,
        ..Scan::default()
    };
    for item in Scanner::new(bytes, id, base) {
        match item {
            Scanned::Record { offset, payload } => {
                let Ok(head) = record::decode_head(payload) else {
                    if payload.len() > 1 && payload[1] > record::VERSION {
                        s.newer_record
                            .get_or_insert((base + offset as u64, payload[1]));
                    }
                    s.undecodable += 1;
                    continue;
                };
                s.records += 1;
                s.max_seq = s.max_seq.max(head.seq);
                s.entries.push(Entry {
                    key: hash(&head.tenant, head.key),
                    seq: head.seq,
                    live_until: head.live_until,
                    // Segments are under 4 GiB (checked by the caller).
                    offset: u32::try_from(base + offset as u64).unwrap_or(u32::MAX),
                    kind: head.kind,
                });
            }
            Scanned::Corrupt { len, .. } => {
                s.corrupt_regions += 1;
                s.corrupt_bytes += len as u64;
            }
            Scanned::TornTail { offset } => s.valid_end = base + offset as u64,
        }
    }
    s
}

/// Keeps each key's newest entry, in file order.
pub(crate) fn newest_per_key(entries: &[Entry]) -> Vec<Entry> {
    let mut newest: HashMap<crate::scope::IndexKey, usize> = HashMap::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        newest
            .entry(e.key)
            .and_modify(|j| {
                if e.seq > entries[*j].seq {
                    *j = i;
                }
            })
            .or_insert(i);
    }
    let mut keep: Vec<usize> = newest.into_values().collect();
    keep.sort_unstable();
    keep.into_iter().map(|i| entries[i]).collect()
}

/// The hint header for segment `seg` whose bytes `[40, covered)` hold
/// `records` records, the highest with sequence number `max_seq`.
pub(crate) fn header_for(
    seg: &segment_header::SegmentHeader,
    covered: u64,
    max_seq: u64,
    records: u64,
    hash: IndexHashFn,
) -> Header {
    Header {
        segment_id: seg.id,
        segment_crc: segment_crc(seg),
        covered,
        max_seq,
        records,
        probe: probe(hash),
    }
}

/// The header checksum of a segment, as a hint records it.
pub(crate) fn segment_crc(header: &segment_header::SegmentHeader) -> u32 {
    let b = header.encode();
    u32::from_le_bytes([b[36], b[37], b[38], b[39]])
}

/// Writes the hint of segment `segment_name` (replacing any), then fsyncs it.
/// A crash midway leaves a hint that fails its checksum: harmless.
pub(crate) fn write(
    storage: &dyn Storage,
    segment_name: &str,
    header: &Header,
    scan_entries: &[Entry],
) -> io::Result<()> {
    let Some(name) = hint::name_for(segment_name) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a segment name",
        ));
    };
    let bytes = hint::encode(header, &newest_per_key(scan_entries));
    remove_if_present(storage, &name)?;
    let file = storage.create(&name)?;
    let written = file.write_all_at(&bytes, 0).and_then(|()| file.sync_data());
    if written.is_err() {
        let _ = storage.remove(&name);
    }
    written
}

/// The highest seq in segment `segment_name` (`seg_header`, `seg_len`
/// bytes on disk) as its hint's header says, if it has a hint whose header
/// is intact and matches the segment. Reads only the header.
pub(crate) fn max_seq_from_hint(
    storage: &dyn Storage,
    segment_name: &str,
    seg_header: &segment_header::SegmentHeader,
    seg_len: u64,
) -> Option<u64> {
    let file = storage.open(&hint::name_for(segment_name)?).ok()?;
    let mut head = [0u8; hint::HEADER_LEN];
    file.read_exact_at(&mut head, 0).ok()?;
    let (h, _, _) = hint::decode_header(&head).ok()?;
    let matches = h.segment_id == seg_header.id
        && h.segment_crc == segment_crc(seg_header)
        && h.covered == seg_len;
    matches.then_some(h.max_seq)
}

/// A hint that matches its segment.
pub(crate) struct Loaded<'a> {
    pub(crate) header: Header,
    /// The whole file; the entries start at `hint::HEADER_LEN`.
    bytes: &'a [u8],
}

impl Loaded<'_> {
    /// The entries (checked by their checksum when loaded).
    pub(crate) fn entries(
        &self,
    ) -> impl Iterator<Item = Result<Entry, crate::format::primitive::DecodeError>> + '_ {
        hint::entries(&self.bytes[hint::HEADER_LEN..])
    }
}

/// Loads the hint of `segment_name` into `buf` if it exists and matches the
/// segment (`seg_header`, `seg_len` bytes on disk) and the index hash.
/// `None`: no usable hint (the caller scans the segment). One `buf` serves
/// every segment of an open, so reading hints allocates nothing new.
pub(crate) fn load<'a>(
    storage: &dyn Storage,
    segment_name: &str,
    seg_header: &segment_header::SegmentHeader,
    seg_len: u64,
    hash: IndexHashFn,
    buf: &'a mut Vec<u8>,
) -> Option<Loaded<'a>> {
    let name = hint::name_for(segment_name)?;
    let file = storage.open(&name).ok()?;
    let len = file.len().ok()?;
    if len > seg_len {
        // Larger than its segment: 37 bytes per entry never are.
        return None;
    }
    buf.resize(usize::try_from(len).ok()?, 0);
    file.read_exact_at(buf, 0).ok()?;
    let (header, _) = hint::decode(buf).ok()?;
    if !matches(&header, seg_header, seg_len, hash) {
        return None;
    }
    Some(Loaded { header, bytes: buf })
}

/// Whether a hint with `header` describes the segment with `seg_header`,
/// `seg_len` bytes on disk, indexed with `hash`: open may use it instead
/// of reading the segment.
pub(crate) fn matches(
    header: &Header,
    seg_header: &segment_header::SegmentHeader,
    seg_len: u64,
    hash: IndexHashFn,
) -> bool {
    header.segment_id == seg_header.id
        && header.segment_crc == segment_crc(seg_header)
        && header.covered >= segment_header::LEN as u64
        && header.covered == seg_len
        && header.probe == probe(hash)
}

/// Writes the hint file of a segment the writer sealed, unless the segment
/// was deleted meanwhile (its hint would outlive it). Runs on the compactor
/// thread, or on the writer's at shutdown. Holds `Shared::compaction` from
/// the check to the end of the write, so no pass (which also holds it)
/// deletes the segment in between: a hint never outlives its segment.
pub(crate) fn write_sealed(shared: &Shared, sealed: Sealed) {
    let _no_pass = shared.compaction.lock();
    let seg = &sealed.segment;
    if shared.segments.get(seg.id()).is_none() {
        return;
    }
    let e = &sealed.entries;
    let header = header_for(
        &seg.header,
        seg.len.load(Ordering::Acquire),
        e.max_seq,
        e.entries.len() as u64,
        shared.config.index_hash,
    );
    let c = &shared.counters;
    match write(shared.storage.as_ref(), &seg.name, &header, &e.entries) {
        Ok(()) => c.hints_written.fetch_add(1, Ordering::Relaxed),
        Err(_) => c.hint_errors.fetch_add(1, Ordering::Relaxed),
    };
}

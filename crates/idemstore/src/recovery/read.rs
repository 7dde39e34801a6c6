//! Reading one segment on open: from its hint file when that matches,
//! else by scanning it (truncating a torn tail, skipping and counting
//! damage, then writing the hint the next open reads instead).

use super::report::RecoveryReport;
use super::shards::{Candidates, push};
use crate::clock::Timestamp;
use crate::config::Config;
use crate::error::{Error, Result, advice};
use crate::format::record;
use crate::format::segment_header::{self, SegmentHeader};
use crate::hints;
use crate::segment::{Segment, Segments};
use crate::storage::{Storage, read_all_shrinking, remove_if_present};
use std::path::Path;
use std::sync::Arc;

/// No segment this format writes is larger (`max_segment_bytes` is at most
/// 1 GiB, plus one record); anything larger is not read into memory.
pub(crate) const MAX_SEGMENT_FILE: u64 = (1 << 30) + crate::format::frame::MAX_PAYLOAD as u64 * 2;

/// Whether recovery may change the files.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// Truncate torn tails, remove what is dead, write hints: the store
    /// holds the lock and will write.
    Repair,
    /// Change nothing: the directory may belong to a running store, which
    /// may append, and delete expired files, while this reads.
    ReadOnly,
}

/// What reading the segments gathers, one segment after another.
pub(super) struct Gathered {
    pub(super) report: RecoveryReport,
    pub(super) cands: Candidates,
    /// The highest sequence number seen in any segment, indexed or not.
    pub(super) max_seq: u64,
    /// Segments whose bucket ended: removed once the floor is above their
    /// sequence numbers.
    pub(super) expired: Vec<String>,
    /// Whether a file was removed (the directory then needs an fsync).
    pub(super) removed_any: bool,
    pub(super) segments: Segments,
    /// Scratch for reading hint files.
    pub(super) hint_buf: Vec<u8>,
    pub(super) mode: Mode,
}

impl Gathered {
    /// How much of a segment of `len` bytes to map: none in a read-only
    /// open, whose files a running store may change (its reads use `pread`,
    /// which cannot fault), else all of it.
    fn map_len(&self, len: u64) -> u64 {
        match self.mode {
            Mode::Repair => len,
            Mode::ReadOnly => 0,
        }
    }
}

/// Reads segment `id` (file `name`) into `g`: its records' candidacies, its
/// highest sequence number, and what was found or repaired. A segment that
/// cannot be used is listed in the report, removed (never held a record) or
/// set aside as expired.
pub(super) fn read_segment(
    storage: &dyn Storage,
    config: &Config,
    now: Timestamp,
    dir: &Path,
    id: u32,
    name: String,
    g: &mut Gathered,
) -> Result<()> {
    let path = dir.join(&name);
    let file = match storage.open(&name) {
        Ok(f) => f,
        // Deleted since it was listed: only a running store's compactor
        // does that, to a segment whose bucket ended.
        Err(e) if g.mode == Mode::ReadOnly && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(());
        }
        Err(e) => return Err(Error::io("opening", path.clone(), e, advice::OPEN)),
    };
    let read_err = |e| Error::io("reading", path.clone(), e, advice::OPEN);
    let len = file.len().map_err(read_err)?;
    if len > MAX_SEGMENT_FILE {
        g.report.unreadable_segments.push((
            name,
            format!("{len} bytes: larger than any segment this format writes"),
        ));
        return Ok(());
    }
    let mut head = vec![0u8; usize::try_from(len).unwrap_or(0).min(segment_header::LEN)];
    file.read_exact_at(&mut head, 0).map_err(read_err)?;
    let header = match SegmentHeader::decode(&head) {
        Ok(h) if h.id == id => h,
        Ok(h) => {
            g.report.unreadable_segments.push((
                name,
                format!("header says segment {} but the name says {id}", h.id),
            ));
            return Ok(());
        }
        Err(_)
            if segment_header::claimed_version(&head)
                .is_some_and(|v| v > segment_header::FORMAT_VERSION) =>
        {
            return Err(Error::UnsupportedVersion {
                path,
                what: "segment format",
                found: segment_header::claimed_version(&head).unwrap_or_default(),
                supported: segment_header::FORMAT_VERSION,
            });
        }
        Err(e) => {
            let bytes = read_all_shrinking(file.as_ref()).map_err(read_err)?;
            if bytes.len() < segment_header::LEN || bytes.iter().all(|&b| b == 0) {
                // Read-only: perhaps one a running store is creating now.
                if g.mode == Mode::Repair {
                    remove_if_present(storage, &name).map_err(|e| {
                        Error::io("removing empty segment", path.clone(), e, advice::OPEN)
                    })?;
                    g.removed_any = true;
                }
                g.report.empty_segments_removed += 1;
                return Ok(());
            }
            // Not indexed, but its sequence numbers still count: if the
            // file is repaired later, its records must not outrank newer ones.
            let base = segment_header::LEN as u64;
            let s = hints::scan(&bytes[segment_header::LEN..], id, base, config.index_hash);
            g.max_seq = g.max_seq.max(s.max_seq);
            g.report.unreadable_segments.push((name, e.to_string()));
            return Ok(());
        }
    };
    // With a grace, a bucket that ended less than the grace ago is read:
    // its completions still refuse their keys until the compactor has
    // written their tombstones.
    if header.bucket_end.saturating_add(config.grace()) <= now {
        // Unread but for its highest sequence number: from its hint, or
        // a scan when it has none.
        let seg_max = match hints::max_seq_from_hint(storage, &name, &header, len) {
            Some(m) => m,
            None => {
                let bytes = read_all_shrinking(file.as_ref()).map_err(read_err)?;
                let base = segment_header::LEN as u64;
                hints::scan(&bytes[segment_header::LEN..], id, base, config.index_hash).max_seq
            }
        };
        g.max_seq = g.max_seq.max(seg_max);
        g.expired.push(name);
        return Ok(());
    }
    g.report.segments_read += 1;
    if let Some(h) = hints::load(
        storage,
        &name,
        &header,
        len,
        config.index_hash,
        &mut g.hint_buf,
    ) {
        let mut bad = false;
        for e in h.entries() {
            match e {
                Ok(e) => push(&mut g.cands, id, &e),
                Err(_) => bad = true,
            }
        }
        if !bad {
            g.report.segments_from_hints += 1;
            g.report.records_read += h.header.records;
            g.max_seq = g.max_seq.max(h.header.max_seq);
            let map_len = g.map_len(len);
            g.segments
                .insert(Arc::new(Segment::new(header, file, len, map_len)));
            return Ok(());
        }
        // Unreachable for a hint whose checksum held; scan to be sure.
        for c in &mut g.cands {
            c.retain(|(_, c)| c.slot.seg != id);
        }
    }
    let bytes = read_all_shrinking(file.as_ref()).map_err(read_err)?;
    let base = segment_header::LEN as u64;
    let s = hints::scan(&bytes[segment_header::LEN..], id, base, config.index_hash);
    if let Some((_, found)) = s.newer_record {
        return Err(Error::UnsupportedVersion {
            path,
            what: "record",
            found: u16::from(found),
            supported: u16::from(record::VERSION),
        });
    }
    g.report.records_read += s.records;
    g.report.corrupt_regions += s.corrupt_regions;
    g.report.corrupt_bytes += s.corrupt_bytes;
    g.report.undecodable_records += s.undecodable;
    g.max_seq = g.max_seq.max(s.max_seq);
    for e in &s.entries {
        push(&mut g.cands, id, e);
    }
    if g.mode == Mode::ReadOnly {
        // A running store may be appending past `valid_end` right now, or
        // have written zeros ahead there: a tail that is not all zeros is
        // counted as torn, and neither is read.
        let tail = usize::try_from(s.valid_end).map_or(&[][..], |at| &bytes[at.min(bytes.len())..]);
        if tail.iter().any(|&b| b != 0) {
            g.report.torn_tails += 1;
            g.report.bytes_truncated += tail.len() as u64;
        }
        g.segments
            .insert(Arc::new(Segment::new(header, file, s.valid_end, 0)));
        return Ok(());
    }
    let w = |e| Error::io("truncating torn tail of", path.clone(), e, advice::OPEN);
    if s.valid_end < len {
        file.set_len(s.valid_end).map_err(w)?;
        g.report.torn_tails += 1;
        g.report.bytes_truncated += len - s.valid_end;
    }
    // The hint may only describe durable bytes (a crash of the process
    // that wrote them leaves them in the page cache only).
    file.sync_data().map_err(w)?;
    let h = hints::header_for(
        &header,
        s.valid_end,
        s.max_seq,
        s.records,
        config.index_hash,
    );
    // Best effort: without a hint the next open scans again.
    if hints::write(storage, &name, &h, &s.entries).is_ok() {
        g.report.hints_written += 1;
    }
    g.segments.insert(Arc::new(Segment::new(
        header,
        file,
        s.valid_end,
        s.valid_end,
    )));
    Ok(())
}

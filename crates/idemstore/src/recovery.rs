//! Opening a store: rebuilding the index from the segments.
//!
//! For every (tenant, key) the record with the highest sequence number wins.
//! That is sound because a newer record never lands in a bucket that ends
//! before the bucket of a record it supersedes while that record still
//! matters: completions expire after their reservation's bucket, and the only
//! records a newer one supersedes early (reservations) are meaningless once
//! their lease has ended.
//!
//! Nothing on disk can make this panic: every file is read through the
//! checked frame scanner; damage is truncated (torn tails), skipped and
//! counted (corruption), or left in place and listed (unreadable headers).

use crate::clock::Timestamp;
use crate::config::Config;
use crate::error::{Error, Result, advice};
use crate::format::frame::{Scanned, Scanner};
use crate::format::record::{self, Body, Kind, Record};
use crate::format::segment_header::{self, SegmentHeader};
use crate::index::{Holder, Index, PendingEntry, Slot};
use crate::scope::IndexKey;
use crate::segment::{Segment, Segments};
use crate::storage::{Storage, read_all};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `open` found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Segment files scanned.
    pub segments_read: u64,
    /// Valid records found.
    pub records_read: u64,
    /// Completed keys that are live (served from now on).
    pub completed_live: u64,
    /// Reservations whose lease had not ended: a retry sees them in flight
    /// until the lease ends, then takes over.
    pub pending_live: u64,
    /// Files whose last write was cut short and that were truncated.
    pub torn_tails: u64,
    /// Bytes removed by those truncations.
    pub bytes_truncated: u64,
    /// Damaged regions skipped (each followed by a valid record).
    pub corrupt_regions: u64,
    /// Bytes in those regions.
    pub corrupt_bytes: u64,
    /// Records whose checksum held but whose content did not decode.
    pub undecodable_records: u64,
    /// Segments whose bucket had ended, removed unread.
    pub expired_segments_removed: u64,
    /// Segment files cut short before their header was complete (a crash
    /// during creation: they never held a record), removed.
    pub empty_segments_removed: u64,
    /// Segment files left untouched because their header is unreadable:
    /// `(file name, reason)`. Move them away or restore them from a backup.
    pub unreadable_segments: Vec<(String, String)>,
    /// How long recovery took.
    pub duration: Duration,
}

pub(crate) struct Recovered {
    pub(crate) index: Index,
    pub(crate) segments: Segments,
    pub(crate) next_seq: u64,
    pub(crate) next_segment_id: u32,
    pub(crate) report: RecoveryReport,
}

/// No segment this format writes is larger (`max_segment_bytes` is at most
/// 1 GiB, plus one record); anything larger is not read into memory.
const MAX_SEGMENT_FILE: u64 = (1 << 30) + crate::format::frame::MAX_PAYLOAD as u64 * 2;

#[derive(Clone, Copy)]
struct Candidate {
    seq: u64,
    slot: Slot,
    kind: Kind,
    live_until: Timestamp,
}

pub(crate) fn recover(storage: &dyn Storage, config: &Config, now: Timestamp) -> Result<Recovered> {
    let started = Instant::now();
    let dir = storage.location();
    let mut report = RecoveryReport::default();
    let io = |op, e| Error::io(op, dir.clone(), e, advice::OPEN);

    let mut names: Vec<(u32, String)> = storage
        .list()
        .map_err(|e| io("listing", e))?
        .into_iter()
        .filter_map(|n| segment_header::parse_file_name(&n).map(|(_, id)| (id, n)))
        .collect();
    names.sort();
    let next_segment_id = names.last().map_or(1, |(id, _)| id.wrapping_add(1)).max(1);

    let segments = Segments::default();
    let mut best: HashMap<IndexKey, Candidate> = HashMap::new();
    let mut max_seq = 0u64;
    let mut removed_any = false;

    for (id, name) in names {
        let path = dir.join(&name);
        let file = storage
            .open(&name)
            .map_err(|e| Error::io("opening", path.clone(), e, advice::OPEN))?;
        let len = file
            .len()
            .map_err(|e| Error::io("reading", path.clone(), e, advice::OPEN))?;
        if len > MAX_SEGMENT_FILE {
            report.unreadable_segments.push((
                name,
                format!("{len} bytes: larger than any segment this format writes"),
            ));
            continue;
        }
        let bytes = read_all(file.as_ref())
            .map_err(|e| Error::io("reading", path.clone(), e, advice::OPEN))?;
        let header = match SegmentHeader::decode(&bytes) {
            Ok(h) if h.id == id => h,
            Ok(h) => {
                report.unreadable_segments.push((
                    name,
                    format!("header says segment {} but the name says {id}", h.id),
                ));
                continue;
            }
            Err(_)
                if segment_header::claimed_version(&bytes)
                    .is_some_and(|v| v > segment_header::FORMAT_VERSION) =>
            {
                return Err(Error::UnsupportedVersion {
                    path,
                    what: "segment format",
                    found: segment_header::claimed_version(&bytes).unwrap_or_default(),
                    supported: segment_header::FORMAT_VERSION,
                });
            }
            Err(_) if bytes.len() < segment_header::LEN || bytes.iter().all(|&b| b == 0) => {
                storage.remove(&name).map_err(|e| {
                    Error::io("removing empty segment", path.clone(), e, advice::OPEN)
                })?;
                report.empty_segments_removed += 1;
                removed_any = true;
                continue;
            }
            Err(e) => {
                // Not indexed, but its sequence numbers still count: if the
                // file is repaired later, its records must not outrank newer ones.
                for item in Scanner::new(
                    &bytes[segment_header::LEN..],
                    id,
                    segment_header::LEN as u64,
                ) {
                    if let Scanned::Record { payload, .. } = item
                        && let Ok(head) = record::decode_head(payload)
                    {
                        max_seq = max_seq.max(head.seq);
                    }
                }
                report.unreadable_segments.push((name, e.to_string()));
                continue;
            }
        };
        if header.bucket_end <= now {
            storage.remove(&name).map_err(|e| {
                Error::io("removing expired segment", path.clone(), e, advice::OPEN)
            })?;
            report.expired_segments_removed += 1;
            removed_any = true;
            continue;
        }
        report.segments_read += 1;
        let body = &bytes[segment_header::LEN..];
        let mut valid_len = bytes.len();
        for item in Scanner::new(body, id, segment_header::LEN as u64) {
            match item {
                Scanned::Record { offset, payload } => {
                    let Ok(head) = record::decode_head(payload) else {
                        if payload.len() > 1 && payload[1] > record::VERSION {
                            return Err(Error::UnsupportedVersion {
                                path,
                                what: "record",
                                found: u16::from(payload[1]),
                                supported: u16::from(record::VERSION),
                            });
                        }
                        report.undecodable_records += 1;
                        continue;
                    };
                    report.records_read += 1;
                    max_seq = max_seq.max(head.seq);
                    let key = (config.index_hash)(&head.tenant, head.key);
                    let cand = Candidate {
                        seq: head.seq,
                        slot: Slot {
                            seg: id,
                            // The file is under 4 GiB (checked above).
                            off: u32::try_from(segment_header::LEN + offset).unwrap_or(u32::MAX),
                        },
                        kind: head.kind,
                        live_until: head.live_until,
                    };
                    best.entry(key)
                        .and_modify(|c| {
                            if cand.seq > c.seq {
                                *c = cand;
                            }
                        })
                        .or_insert(cand);
                }
                Scanned::Corrupt { len, .. } => {
                    report.corrupt_regions += 1;
                    report.corrupt_bytes += len as u64;
                }
                Scanned::TornTail { offset } => {
                    valid_len = segment_header::LEN + offset;
                }
            }
        }
        if valid_len < bytes.len() {
            let w = |e| Error::io("truncating torn tail of", path.clone(), e, advice::OPEN);
            file.set_len(valid_len as u64).map_err(w)?;
            file.sync_data().map_err(w)?;
            report.torn_tails += 1;
            report.bytes_truncated += (bytes.len() - valid_len) as u64;
        }
        segments.insert(Arc::new(Segment::new(header, file, valid_len as u64)));
    }
    if removed_any {
        storage.sync_dir().map_err(|e| io("syncing", e))?;
    }

    let mut completed = Vec::new();
    let mut pending = Vec::new();
    for (key, c) in best {
        if c.live_until <= now {
            continue;
        }
        match c.kind {
            Kind::Completed => completed.push((key, c.slot)),
            Kind::Pending => {
                let Some(entry) = read_pending(&segments, c.slot, &dir) else {
                    report.undecodable_records += 1;
                    continue;
                };
                pending.push((key, entry));
            }
            Kind::Aborted => {}
        }
    }
    report.completed_live = completed.len() as u64;
    report.pending_live = pending.len() as u64;
    report.duration = started.elapsed();
    Ok(Recovered {
        index: Index::from_parts(completed, pending),
        segments,
        next_seq: max_seq.saturating_add(1),
        next_segment_id,
        report,
    })
}

fn read_pending(segments: &Segments, slot: Slot, dir: &std::path::Path) -> Option<PendingEntry> {
    let payload = segments.get(slot.seg)?.read_payload(slot.off, dir).ok()?;
    let rec = Record::decode(&payload).ok()?;
    let Body::Pending(p) = rec.body else {
        return None;
    };
    Some(PendingEntry {
        token: rec.token,
        tenant: rec.tenant,
        key: rec.key.into_boxed_slice(),
        fingerprint: p.fingerprint,
        started_at: p.started_at,
        lease_end: p.lease_end,
        holder: Holder::Orphan,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::frame;
    use crate::storage::MemStorage;
    use crate::{Begin, Fingerprint, Response, Store};

    fn store_with_one_record() -> (MemStorage, String) {
        let st = MemStorage::new();
        let s = Store::open_with_storage(Arc::new(st.clone()), Config::default()).unwrap();
        let Begin::Reserved(r) = s.begin("t", "k", Fingerprint::of(b"x")).unwrap() else {
            panic!("fresh key")
        };
        r.complete(Response::new(200, "v")).unwrap();
        s.close().unwrap();
        let name = st
            .list()
            .unwrap()
            .into_iter()
            .find(|n| n.ends_with(".seg"))
            .unwrap();
        (st, name)
    }

    #[test]
    fn a_newer_record_version_refuses_to_open_instead_of_skipping() {
        let (st, name) = store_with_one_record();
        let bytes = st.file_bytes(&name).unwrap();
        let id = segment_header::parse_file_name(&name).unwrap().1;
        let base = segment_header::LEN as u64;
        let frame::Frame::Valid { payload, total } =
            frame::read(&bytes[segment_header::LEN..], id, base)
        else {
            panic!("first frame")
        };
        let mut p = payload.to_vec();
        p[1] = record::VERSION + 1;
        let mut out = bytes[..segment_header::LEN].to_vec();
        let s = frame::begin(&mut out);
        out.extend_from_slice(&p);
        frame::finish(&mut out, s);
        frame::seal(&mut out[s..], id, base);
        out.extend_from_slice(&bytes[segment_header::LEN + total..]);
        st.put_file(&name, out);
        let e = Store::open_with_storage(Arc::new(st), Config::default()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::UnsupportedVersion {
                    what: "record",
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_newer_segment_version_refuses_to_open() {
        let (st, name) = store_with_one_record();
        let mut bytes = st.file_bytes(&name).unwrap();
        bytes[8] = 2;
        let crc = crc32fast::hash(&bytes[..36]).to_le_bytes();
        bytes[36..40].copy_from_slice(&crc);
        st.put_file(&name, bytes);
        let e = Store::open_with_storage(Arc::new(st), Config::default()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::UnsupportedVersion {
                    what: "segment format",
                    found: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("supports up to 1"), "{e}");
    }

    #[test]
    fn a_damaged_header_is_listed_and_left_in_place() {
        let (st, name) = store_with_one_record();
        let mut bytes = st.file_bytes(&name).unwrap();
        bytes[20] ^= 0xff;
        st.put_file(&name, bytes.clone());
        let s = Store::open_with_storage(Arc::new(st.clone()), Config::default()).unwrap();
        let rep = s.recovery_report();
        assert_eq!(rep.unreadable_segments.len(), 1);
        assert_eq!(rep.unreadable_segments[0].0, name);
        drop(s);
        assert_eq!(
            st.file_bytes(&name).unwrap(),
            bytes,
            "never deleted or rewritten"
        );
    }
}

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
use crate::floor::Floor;
use crate::format::hint;
use crate::format::record::{self, Body, Kind, Record};
use crate::format::segment_header::{self, SegmentHeader};
use crate::hints;
use crate::index::{self, Holder, Index, PendingEntry, Shard, Slot, SlotKey};
use crate::scope::IndexKey;
use crate::segment::{Segment, Segments};
use crate::storage::{Storage, read_all};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Segments whose index entries came from their hint file (the segment
    /// itself was not read).
    pub segments_from_hints: u64,
    /// Hint files written for segments that had to be scanned, so that the
    /// next open need not scan them.
    pub hints_written: u64,
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
    /// Above every sequence number on disk and at least the durable floor.
    pub(crate) next_seq: u64,
    pub(crate) floor: Floor,
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

/// Every record's candidacy, by index shard.
type Candidates = Vec<Vec<(IndexKey, Candidate)>>;

fn push(cands: &mut Candidates, seg: u32, e: &hint::Entry) {
    cands[index::shard_of(&e.key)].push((
        e.key,
        Candidate {
            seq: e.seq,
            slot: Slot { seg, off: e.offset },
            kind: e.kind,
            live_until: e.live_until,
        },
    ));
}

pub(crate) fn recover(storage: &dyn Storage, config: &Config, now: Timestamp) -> Result<Recovered> {
    let started = Instant::now();
    let dir = storage.location();
    let mut report = RecoveryReport::default();
    let io = |op, e| Error::io(op, dir.clone(), e, advice::OPEN);

    let listing = storage.list().map_err(|e| io("listing", e))?;
    let mut names: Vec<(u32, String)> = listing
        .iter()
        .filter_map(|n| segment_header::parse_file_name(n).map(|(_, id)| (id, n.clone())))
        .collect();
    names.sort();
    let hint_files: Vec<(u32, &String)> = listing
        .iter()
        .filter_map(|n| {
            let seg = hint::segment_name_for(n)?;
            segment_header::parse_file_name(&seg).map(|(_, id)| (id, n))
        })
        .collect();
    // No id of any file seen is reused, hint files included.
    let next_segment_id = names
        .iter()
        .map(|(id, _)| *id)
        .chain(hint_files.iter().map(|(id, _)| *id))
        .max()
        .map_or(1, |id| id.wrapping_add(1))
        .max(1);
    let mut floor = Floor::load(storage)?;
    // Created now, while there is room, so that raising it later never
    // needs any; if that fails, the first raise creates it.
    let _ = floor.create(storage);
    let mut removed_any = false;
    for (_, h) in &hint_files {
        let has_segment =
            hint::segment_name_for(h).is_some_and(|s| names.iter().any(|(_, n)| *n == s));
        if !has_segment {
            // Its segment is gone: it must not outlive it (see hints.rs).
            remove_if_present(storage, h)
                .map_err(|e| Error::io("removing orphaned hint", dir.join(h), e, advice::OPEN))?;
            removed_any = true;
        }
    }

    let segments = Segments::default();
    // Room for the entries the hint files claim, spread evenly over the
    // shards (the index key is a uniform digest) with a margin: the
    // candidate lists then hardly ever grow, which would copy them and,
    // while they are the largest thing open allocates, leave up to half of
    // each unused. A claim is bounded by the length of the hint and of its
    // segment (`load` refuses a hint longer than its segment, and no segment
    // is read past `MAX_SEGMENT_FILE`), so garbage on disk reserves at most
    // ~1.4 bytes per byte of segment; and room that cannot be had is
    // skipped, not fatal (the lists then grow as they fill).
    let claimed: u64 = names
        .iter()
        .filter_map(|(_, name)| {
            let seg_len = storage.open(name).ok()?.len().ok()?.min(MAX_SEGMENT_FILE);
            let file = storage.open(&hint::name_for(name)?).ok()?;
            let mut head = [0u8; hint::HEADER_LEN];
            file.read_exact_at(&mut head, 0).ok()?;
            hint::claimed_entries(&head, file.len().ok()?.min(seg_len))
        })
        .sum();
    let per_shard = usize::try_from(claimed / index::SHARDS as u64)
        .unwrap_or(0)
        .saturating_mul(21)
        / 20;
    let mut cands: Candidates = (0..index::SHARDS)
        .map(|_| {
            let mut list = Vec::new();
            let _ = list.try_reserve_exact(per_shard);
            list
        })
        .collect();
    let mut max_seq = 0u64;
    // Segments whose bucket ended: removed once the floor is above their
    // sequence numbers.
    let mut expired: Vec<String> = Vec::new();
    let mut hint_buf = Vec::new();
    // The hints are read in the loop below, one at a time, each decoded
    // before the next is read: reading them ahead overlaps the disk with
    // the decoding when they are not cached. Stopped and joined once the
    // loop is done, or recovery fails.
    let ahead = ReadAhead::start(
        storage,
        names
            .iter()
            .filter_map(|(_, n)| hint::name_for(n))
            .collect(),
    );

    for (id, name) in names {
        let path = dir.join(&name);
        let file = storage
            .open(&name)
            .map_err(|e| Error::io("opening", path.clone(), e, advice::OPEN))?;
        let read_err = |e| Error::io("reading", path.clone(), e, advice::OPEN);
        let len = file.len().map_err(read_err)?;
        if len > MAX_SEGMENT_FILE {
            report.unreadable_segments.push((
                name,
                format!("{len} bytes: larger than any segment this format writes"),
            ));
            continue;
        }
        let mut head = vec![0u8; usize::try_from(len).unwrap_or(0).min(segment_header::LEN)];
        file.read_exact_at(&mut head, 0).map_err(read_err)?;
        let header = match SegmentHeader::decode(&head) {
            Ok(h) if h.id == id => h,
            Ok(h) => {
                report.unreadable_segments.push((
                    name,
                    format!("header says segment {} but the name says {id}", h.id),
                ));
                continue;
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
                let bytes = read_all(file.as_ref()).map_err(read_err)?;
                if bytes.len() < segment_header::LEN || bytes.iter().all(|&b| b == 0) {
                    remove_if_present(storage, &name).map_err(|e| {
                        Error::io("removing empty segment", path.clone(), e, advice::OPEN)
                    })?;
                    report.empty_segments_removed += 1;
                    removed_any = true;
                    continue;
                }
                // Not indexed, but its sequence numbers still count: if the
                // file is repaired later, its records must not outrank newer ones.
                let base = segment_header::LEN as u64;
                let s = hints::scan(&bytes[segment_header::LEN..], id, base, config.index_hash);
                max_seq = max_seq.max(s.max_seq);
                report.unreadable_segments.push((name, e.to_string()));
                continue;
            }
        };
        if header.bucket_end <= now {
            // Unread but for its highest sequence number: from its hint, or
            // a scan when it has none.
            let seg_max = match hints::max_seq_from_hint(storage, &name, &header, len) {
                Some(m) => m,
                None => {
                    let bytes = read_all(file.as_ref()).map_err(read_err)?;
                    let base = segment_header::LEN as u64;
                    hints::scan(&bytes[segment_header::LEN..], id, base, config.index_hash).max_seq
                }
            };
            max_seq = max_seq.max(seg_max);
            expired.push(name);
            continue;
        }
        report.segments_read += 1;
        if let Some(h) = hints::load(
            storage,
            &name,
            &header,
            len,
            config.index_hash,
            &mut hint_buf,
        ) {
            let mut bad = false;
            for e in h.entries() {
                match e {
                    Ok(e) => push(&mut cands, id, &e),
                    Err(_) => bad = true,
                }
            }
            if !bad {
                report.segments_from_hints += 1;
                report.records_read += h.header.records;
                max_seq = max_seq.max(h.header.max_seq);
                segments.insert(Arc::new(Segment::new(header, file, len, len)));
                continue;
            }
            // Unreachable for a hint whose checksum held; scan to be sure.
            for c in &mut cands {
                c.retain(|(_, c)| c.slot.seg != id);
            }
        }
        let bytes = read_all(file.as_ref()).map_err(read_err)?;
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
        report.records_read += s.records;
        report.corrupt_regions += s.corrupt_regions;
        report.corrupt_bytes += s.corrupt_bytes;
        report.undecodable_records += s.undecodable;
        max_seq = max_seq.max(s.max_seq);
        for e in &s.entries {
            push(&mut cands, id, e);
        }
        let w = |e| Error::io("truncating torn tail of", path.clone(), e, advice::OPEN);
        if s.valid_end < len {
            file.set_len(s.valid_end).map_err(w)?;
            report.torn_tails += 1;
            report.bytes_truncated += len - s.valid_end;
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
            report.hints_written += 1;
        }
        segments.insert(Arc::new(Segment::new(
            header,
            file,
            s.valid_end,
            s.valid_end,
        )));
    }
    drop(ahead);
    if !expired.is_empty() {
        // Their records may hold the highest sequence numbers the store
        // used: the floor must remember them before they go.
        floor
            .raise(storage, max_seq.saturating_add(1))
            .map_err(|e| io("writing the sequence floor in", e))?;
        for name in expired {
            if let Some(h) = hint::name_for(&name) {
                remove_if_present(storage, &h).map_err(|e| {
                    Error::io("removing expired hint", dir.join(&h), e, advice::OPEN)
                })?;
            }
            remove_if_present(storage, &name).map_err(|e| {
                Error::io("removing expired segment", dir.join(&name), e, advice::OPEN)
            })?;
            report.expired_segments_removed += 1;
            removed_any = true;
        }
    }
    if removed_any {
        storage.sync_dir().map_err(|e| io("syncing", e))?;
    }

    let shards = build_shards(cands, now, &segments, &dir);
    let mut index_shards = Vec::with_capacity(shards.len());
    for b in shards {
        report.completed_live += b.completed_live;
        report.pending_live += b.pending_live;
        report.undecodable_records += b.undecodable;
        index_shards.push(b.shard);
    }
    report.duration = started.elapsed();
    Ok(Recovered {
        index: Index::from_shards(index_shards),
        segments,
        next_seq: max_seq.saturating_add(1).max(floor.value()),
        floor,
        next_segment_id,
        report,
    })
}

/// A [`Storage::read_ahead`] thread, stopped and joined when dropped.
struct ReadAhead(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl ReadAhead {
    fn start(storage: &dyn Storage, names: Vec<String>) -> ReadAhead {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = storage.read_ahead(names, stop.clone());
        ReadAhead(stop, thread)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

fn remove_if_present(storage: &dyn Storage, name: &str) -> std::io::Result<()> {
    match storage.remove(name) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

struct BuiltShard {
    number: usize,
    shard: Shard,
    completed_live: u64,
    pending_live: u64,
    undecodable: u64,
}

/// One thread's share of the shards: `(shard number, candidates)`.
type Chunk = Vec<(usize, Vec<(IndexKey, Candidate)>)>;

/// Picks each key's winner (highest seq) and builds the index shards, on
/// up to four threads (shards are independent). Returns them in order.
fn build_shards(
    cands: Candidates,
    now: Timestamp,
    segments: &Segments,
    dir: &std::path::Path,
) -> Vec<BuiltShard> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, 4);
    let mut chunks: Vec<Chunk> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in cands.into_iter().enumerate() {
        chunks[i % threads].push((i, c));
    }
    let slots: Vec<Mutex<Option<Chunk>>> =
        chunks.into_iter().map(|c| Mutex::new(Some(c))).collect();
    // Whoever takes a chunk first builds it: a thread that could not be
    // started leaves its chunk to this one.
    let run = |slot: &Mutex<Option<Chunk>>| -> Vec<BuiltShard> {
        let chunk = slot.lock().take().unwrap_or_default();
        chunk
            .into_iter()
            .map(|(number, c)| build_shard(number, c, now, segments, dir))
            .collect()
    };
    let mut out = std::thread::scope(|sc| {
        let handles: Vec<_> = slots[1..]
            .iter()
            .filter_map(|slot| {
                std::thread::Builder::new()
                    .name("idemstore-open".into())
                    .spawn_scoped(sc, || run(slot))
                    .ok()
            })
            .collect();
        let mut out = Vec::new();
        for slot in &slots {
            out.extend(run(slot));
        }
        for h in handles {
            match h.join() {
                Ok(v) => out.extend(v),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        out
    });
    out.sort_unstable_by_key(|b| b.number);
    out
}

/// The winners of one shard: per key the highest seq; a completed winner
/// still live becomes a slot, a pending one still leased an abandoned
/// reservation, anything else leaves the key free.
///
/// Keyed like the index (by slot key): one winner per slot, as at run time.
/// Nearly every key has one record (a reservation completed soon enough is
/// never written), so the first pass puts every live completion straight
/// into the index and sets aside only the keys that need a choice: seen
/// twice, or with a record of another kind or expired. The second pass
/// picks those keys' winners by seq and mends their slots.
fn build_shard(
    number: usize,
    cands: Vec<(IndexKey, Candidate)>,
    now: Timestamp,
    segments: &Segments,
    dir: &std::path::Path,
) -> BuiltShard {
    let live = |c: &Candidate| c.live_until > now;
    let mut b = BuiltShard {
        number,
        shard: Shard::default(),
        completed_live: 0,
        pending_live: 0,
        undecodable: 0,
    };
    b.shard.reserve_completed(cands.len());
    let mut contested: HashSet<SlotKey, index::Build> = HashSet::default();
    for (key, c) in &cands {
        let k = SlotKey::from(key);
        if c.kind != Kind::Completed || !live(c) || b.shard.insert_completed(k, c.slot).is_some() {
            contested.insert(k);
        }
    }
    if !contested.is_empty() {
        let mut best: HashMap<SlotKey, Candidate, index::Build> =
            HashMap::with_capacity_and_hasher(contested.len(), index::Build::default());
        for (key, c) in &cands {
            let k = SlotKey::from(key);
            if contested.contains(&k) {
                best.entry(k)
                    .and_modify(|w| {
                        if c.seq > w.seq {
                            *w = *c;
                        }
                    })
                    .or_insert(*c);
            }
        }
        for (k, c) in best {
            b.shard.take_completed(&k);
            if !live(&c) {
                continue;
            }
            match c.kind {
                Kind::Completed => {
                    b.shard.insert_completed(k, c.slot);
                }
                Kind::Pending => match read_pending(segments, c.slot, dir) {
                    Some(entry) => {
                        b.shard.pending.insert(k, entry);
                        b.pending_live += 1;
                    }
                    None => b.undecodable += 1,
                },
                Kind::Aborted => {}
            }
        }
    }
    drop(cands);
    // Room was made for every candidate; superseded ones leave it unused.
    b.shard.shrink_completed();
    b.completed_live = b.shard.completed_len() as u64;
    b
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

    fn cand(seq: u64, off: u32, kind: Kind, live_until: u64) -> Candidate {
        Candidate {
            seq,
            slot: Slot { seg: 1, off },
            kind,
            live_until: Timestamp(live_until),
        }
    }

    /// The completed slot of `key` after building a shard from `cands`.
    fn winner(cands: &[Candidate]) -> Option<Slot> {
        let key = IndexKey { hi: 1, lo: 2 };
        let other = IndexKey { hi: 1, lo: 3 };
        let mut all: Vec<(IndexKey, Candidate)> = cands.iter().map(|c| (key, *c)).collect();
        all.push((other, cand(1, 8, Kind::Completed, 1_000)));
        let b = build_shard(
            0,
            all,
            Timestamp(500),
            &Segments::default(),
            std::path::Path::new("."),
        );
        assert_eq!(b.shard.completed(&other), Some(Slot { seg: 1, off: 8 }));
        b.shard.completed(&key)
    }

    #[test]
    fn the_newest_record_of_a_key_wins_in_any_order() {
        let slot = |off| Some(Slot { seg: 1, off });
        let (old, new) = (
            cand(5, 100, Kind::Completed, 1_000),
            cand(9, 200, Kind::Completed, 1_000),
        );
        // Two live completions of one slot key (a digest collision).
        assert_eq!(winner(&[old, new]), slot(200));
        assert_eq!(winner(&[new, old]), slot(200));
        // A newer abort or an expired newer completion leaves the key free;
        // an older one of either changes nothing.
        let abort = cand(7, 300, Kind::Aborted, 1_000);
        assert_eq!(winner(&[old, abort]), None);
        assert_eq!(winner(&[new, abort]), slot(200));
        let expired = cand(8, 400, Kind::Completed, 400);
        assert_eq!(winner(&[old, expired]), None);
        assert_eq!(winner(&[expired, new]), slot(200));
        assert_eq!(winner(&[expired]), None);
    }

    fn store_with_one_record() -> (MemStorage, String) {
        let st = MemStorage::new();
        let s = Store::open_with_storage(Arc::new(st.clone()), Config::default()).unwrap();
        let Begin::Reserved(r) = s.begin("t", "k", Fingerprint::of(b"x")).unwrap() else {
            panic!("fresh key")
        };
        r.complete(Response::new(200, "v")).unwrap();
        s.close().unwrap();
        // These tests damage the segment behind the store's back: drop the
        // hint written at close so that open reads the segment.
        for n in st.list().unwrap() {
            if n.ends_with(hint::SUFFIX) {
                st.remove(&n).unwrap();
            }
        }
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

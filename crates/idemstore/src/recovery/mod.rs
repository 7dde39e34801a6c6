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

pub(crate) mod last_open;
mod listing;
mod read;
mod report;
mod shards;

pub use last_open::LastOpen;
pub use report::{Abandoned, RecoveryReport};

use crate::clock::Timestamp;
use crate::config::Config;
use crate::error::{Error, Result, advice};
use crate::floor::Floor;
use crate::format::hint;
use crate::index::{self, Index};
use crate::segment::Segments;
use crate::storage::{Storage, remove_if_present};
use read::Gathered;
pub(crate) use read::{MAX_SEGMENT_FILE, Mode};
use shards::{Candidates, Judge, build_shards};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct Recovered {
    pub(crate) index: Index,
    pub(crate) segments: Segments,
    /// Above every sequence number on disk and at least the durable floor.
    pub(crate) next_seq: u64,
    pub(crate) floor: Floor,
    /// The grace for expired keys in effect (see [`effective_grace`]).
    pub(crate) grace: std::time::Duration,
    pub(crate) next_segment_id: u32,
    pub(crate) report: RecoveryReport,
}

/// Rebuilds the index from the files in `storage`, repairing what a crash
/// can leave (see the module docs) in [`Mode::Repair`].
pub(crate) fn recover(
    storage: &dyn Storage,
    config: &Config,
    now: Timestamp,
    mode: Mode,
) -> Result<Recovered> {
    let started = Instant::now();
    let dir = storage.location();
    let io = |op, e| Error::io(op, dir.clone(), e, advice::OPEN);

    let listing = listing::list(storage, &dir)?;
    let mut floor = Floor::load(storage)?;
    let grace = effective_grace(config.refuse_expired_keys_for, floor.grace_ms());
    let removed_any = match mode {
        Mode::Repair => {
            // Created now, while there is room, so that raising it later
            // never needs any; if that fails, the first raise creates it.
            let _ = floor.create(storage);
            // Durable before anything is deleted on the strength of it.
            floor
                .set_grace(storage, grace_ms(grace))
                .map_err(|e| io("writing the grace for expired keys (SEQFLOOR) in", e))?;
            listing::remove_orphaned_hints(storage, &dir, &listing)?
        }
        Mode::ReadOnly => false,
    };
    let config = &Config {
        refuse_expired_keys_for: Some(grace),
        ..config.clone()
    };
    let listing::Listing {
        names,
        next_segment_id,
        ..
    } = listing;

    let per_shard = listing::claimed_per_shard(storage, &names);
    let cands: Candidates = (0..index::SHARDS)
        .map(|_| {
            let mut list = Vec::new();
            let _ = list.try_reserve_exact(per_shard);
            list
        })
        .collect();
    let mut g = Gathered {
        report: RecoveryReport::default(),
        cands,
        max_seq: 0,
        expired: Vec::new(),
        removed_any,
        segments: Segments::default(),
        hint_buf: Vec::new(),
        mode,
    };
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
        read::read_segment(storage, config, now, &dir, id, name, &mut g)?;
    }
    drop(ahead);
    let Gathered {
        mut report,
        cands,
        max_seq,
        expired,
        mut removed_any,
        segments,
        ..
    } = g;
    report.read_only = mode == Mode::ReadOnly;
    if mode == Mode::ReadOnly {
        report.expired_segments_removed += expired.len() as u64;
    } else if !expired.is_empty() {
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

    let judge = Judge {
        now,
        grace: config.grace(),
    };
    let shards = build_shards(cands, judge, &segments, &dir);
    let mut index_shards = Vec::with_capacity(shards.len());
    for b in shards {
        report.completed_live += b.completed_live;
        report.pending_live += b.pending_live;
        report.undecodable_records += b.undecodable;
        report.abandoned.extend(b.abandoned);
        index_shards.push(b.shard);
    }
    report
        .abandoned
        .sort_unstable_by_key(|a| (a.started_at, a.token));
    report.duration = started.elapsed();
    Ok(Recovered {
        index: Index::from_shards(index_shards),
        segments,
        next_seq: max_seq.saturating_add(1).max(floor.value()),
        floor,
        grace,
        next_segment_id,
        report,
    })
}

/// The grace for expired keys an open works with: the configured one if
/// set (zero: none), else the one the directory keeps. Recovery and the
/// compactor keep every ended bucket within it, so an open that did not say
/// (idemctl, a restart without the option) never frees refused keys.
fn effective_grace(configured: Option<Duration>, kept_ms: u64) -> Duration {
    configured.unwrap_or(Duration::from_millis(kept_ms))
}

/// A grace in whole milliseconds, rounded up.
fn grace_ms(grace: Duration) -> u64 {
    u64::try_from(grace.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::frame;
    use crate::format::record;
    use crate::format::segment_header;
    use crate::storage::MemStorage;
    use crate::{Begin, Fingerprint, Response, Store};

    fn store_with_one_record() -> (MemStorage, String) {
        let st = MemStorage::new();
        let s = Store::open_with_storage(Arc::new(st.clone()), Config::default()).unwrap();
        let Begin::Reserved(r) = s
            .begin(
                crate::Tenant::new("t"),
                crate::Key::new("k"),
                Fingerprint::of(b"x"),
            )
            .unwrap()
        else {
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
                    found: 4,
                    supported: 3,
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

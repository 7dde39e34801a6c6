//! Building the index from the records' candidacies: per key the record
//! with the highest sequence number wins (see the module docs of
//! `recovery`), shard by shard, on up to four threads.

use super::report::Abandoned;
use crate::clock::Timestamp;
use crate::format::hint;
use crate::format::record::{Body, Kind, Record};
use crate::index::{self, Holder, PendingEntry, Shard, Slot, SlotKey};
use crate::scope::IndexKey;
use crate::segment::Segments;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// One record's claim to be its key's entry in the index.
#[derive(Clone, Copy)]
pub(super) struct Candidate {
    pub(super) seq: u64,
    pub(super) slot: Slot,
    pub(super) kind: Kind,
    pub(super) live_until: Timestamp,
}

/// When recovery judges the records, and for how long after its expiry a
/// completion still refuses its key (`Config::refuse_expired_keys_for`,
/// zero when off).
#[derive(Clone, Copy)]
pub(super) struct Judge {
    pub(super) now: Timestamp,
    pub(super) grace: Duration,
}

impl Judge {
    /// Whether a record still means something (`Kind::meaningful_until`).
    fn live(&self, c: &Candidate) -> bool {
        c.kind.meaningful_until(c.live_until, self.grace) > self.now
    }
}

/// Every record's candidacy, by index shard.
pub(super) type Candidates = Vec<Vec<(IndexKey, Candidate)>>;

pub(super) fn push(cands: &mut Candidates, seg: u32, e: &hint::Entry) {
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

/// One index shard, built, with what building it counted.
pub(super) struct BuiltShard {
    pub(super) number: usize,
    pub(super) shard: Shard,
    pub(super) completed_live: u64,
    pub(super) pending_live: u64,
    pub(super) undecodable: u64,
    /// Keys whose winner is a pending record, lease running or not.
    pub(super) abandoned: Vec<Abandoned>,
}

/// One thread's share of the shards: `(shard number, candidates)`.
type Chunk = Vec<(usize, Vec<(IndexKey, Candidate)>)>;

/// Picks each key's winner (highest seq) and builds the index shards, on
/// up to four threads (shards are independent). Returns them in order.
pub(super) fn build_shards(
    cands: Candidates,
    judge: Judge,
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
            .map(|(number, c)| build_shard(number, c, judge, segments, dir))
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
pub(super) fn build_shard(
    number: usize,
    cands: Vec<(IndexKey, Candidate)>,
    judge: Judge,
    segments: &Segments,
    dir: &std::path::Path,
) -> BuiltShard {
    let live = |c: &Candidate| judge.live(c);
    let mut b = BuiltShard {
        number,
        shard: Shard::default(),
        completed_live: 0,
        pending_live: 0,
        undecodable: 0,
        abandoned: Vec::new(),
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
            match c.kind {
                Kind::Completed | Kind::Expired if live(&c) => {
                    b.shard.insert_completed(k, c.slot);
                }
                // Listed whether or not the lease still runs: the handler
                // may have run either way.
                Kind::Pending => match read_pending(segments, c.slot, dir) {
                    Some(entry) => {
                        b.abandoned.push(Abandoned {
                            tenant: entry.tenant,
                            key: entry.key.to_vec(),
                            token: entry.token,
                            fingerprint: entry.fingerprint,
                            started_at: entry.started_at,
                            lease_end: entry.lease_end,
                            kept_until: entry.kept_until,
                        });
                        if live(&c) {
                            b.shard.pending.insert(k, entry);
                            b.pending_live += 1;
                        }
                    }
                    None => b.undecodable += 1,
                },
                Kind::Completed | Kind::Expired | Kind::Aborted | Kind::Purged => {}
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
    let seg = segments.get(slot.seg)?;
    let payload = seg.read_payload(slot.off, dir).ok()?;
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
        // The last instant of its segment's bucket.
        kept_until: Timestamp(seg.header.bucket_end.0.saturating_sub(1)),
        holder: Holder::Orphan,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Judge {
                now: Timestamp(500),
                grace: Duration::ZERO,
            },
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
        // So does a newer purge; a completion after the purge wins again.
        let purge = cand(8, 350, Kind::Purged, 1_000);
        assert_eq!(winner(&[old, purge]), None);
        assert_eq!(winner(&[purge, new]), slot(200));
        let expired = cand(8, 400, Kind::Completed, 400);
        assert_eq!(winner(&[old, expired]), None);
        assert_eq!(winner(&[expired, new]), slot(200));
        assert_eq!(winner(&[expired]), None);
    }
}

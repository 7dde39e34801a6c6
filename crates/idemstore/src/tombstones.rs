//! Tombstones (`Config::refuse_expired_keys_for`): before the compactor
//! deletes the segments of ended buckets, it writes a compact record for
//! each completion still indexed in them whose key is refused for a while
//! yet (tenant digest, key, expiry and the grace's end: no response), into
//! the bucket of that end, and makes them durable first.
//!
//! Invariants:
//! - a tombstone is numbered under its key's shard lock while the key's
//!   slot still points at the completion it replaces, so it outranks that
//!   completion at every open, and anything written for the key later
//!   outranks it;
//! - the segments go only after every tombstone of theirs is durable: a
//!   failed or torn write leaves the files (and the completions, which
//!   refuse their keys by themselves) for the next pass;
//! - a completion that cannot be read (damage, an I/O error) keeps its
//!   segment, not the whole pass: the other segments go, and the kept one
//!   goes once its bucket ended longer than the grace ago, when no key in
//!   it can be refused any more.

use crate::clock::Timestamp;
use crate::commit::{Commit, Completer};
use crate::error::{Error, Result};
use crate::format::record::{Body, Record};
use crate::index::Slot;
use crate::pipeline::{Append, Install, Msg, entry_of, frame_record};
use crate::shared::Shared;
use crossbeam_channel::Sender;
use std::collections::HashSet;
use std::sync::atomic::Ordering;

/// Tombstones submitted before their commits are awaited: bounds the
/// memory of a pass over a bucket of millions of keys.
const CHUNK: usize = 4096;

/// What [`write`] did.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Tombstones written, all durable.
    pub(crate) tombstones: u64,
    /// Segments to keep this pass: a completion in them could not be read.
    pub(crate) kept: HashSet<u32>,
    /// The first read error behind `kept`.
    pub(crate) first_error: Option<Error>,
}

/// Writes the tombstones of the completions indexed in segments `ids`
/// (whose buckets ended at or before `now`) once all are durable. Nothing
/// to do without a grace, nor for a segment whose bucket ended longer than
/// the grace ago. An error reading a completion keeps its segment (see
/// [`Written::kept`]); any other error fails the pass.
pub(crate) fn write(
    shared: &Shared,
    writer: &Sender<Msg>,
    ids: &[u32],
    now: Timestamp,
) -> Result<Written> {
    let grace = shared.config.grace();
    let mut out = Written::default();
    if grace.is_zero() {
        return Ok(out);
    }
    let ending: HashSet<u32> = ids
        .iter()
        .copied()
        .filter(|&id| {
            shared
                .segments
                .get(id)
                .is_some_and(|seg| seg.header.bucket_end.saturating_add(grace) > now)
        })
        .collect();
    let mut slots = Vec::new();
    shared.index.for_each_shard(|s| {
        slots.extend(s.completed_slots_where(|slot| ending.contains(&slot.seg)));
    });
    for chunk in slots.chunks(CHUNK) {
        let mut commits = Vec::with_capacity(chunk.len());
        for &slot in chunk {
            if out.kept.contains(&slot.seg) {
                continue;
            }
            match submit(shared, writer, slot, now) {
                Ok(Some(c)) => commits.push(c),
                Ok(None) => {}
                Err(Unreadable(e)) => {
                    out.kept.insert(slot.seg);
                    out.first_error.get_or_insert(e);
                }
                Err(Failed(e)) => return Err(e),
            }
        }
        let n = commits.len() as u64;
        for c in commits {
            c.wait()?;
        }
        out.tombstones += n;
    }
    if out.tombstones > 0 {
        // Durable in every mode before a file goes.
        let (c, commit) = Completer::new();
        shared.submit(writer, Msg::Flush(c))?;
        commit.wait()?;
        shared
            .counters
            .tombstones_written
            .fetch_add(out.tombstones, Ordering::Relaxed);
    }
    Ok(out)
}

/// Why a tombstone was not submitted.
enum NotSubmitted {
    /// The completion could not be read: keep its segment.
    Unreadable(Error),
    /// The writer failed: fail the pass.
    Failed(Error),
}
use NotSubmitted::{Failed, Unreadable};

/// Submits the tombstone of the completion at `slot`, if its key is still
/// refused after `now` and the slot still holds it.
fn submit(
    shared: &Shared,
    writer: &Sender<Msg>,
    slot: Slot,
    now: Timestamp,
) -> std::result::Result<Option<Commit>, NotSubmitted> {
    let Some(seg) = shared.segments.get(slot.seg) else {
        return Ok(None);
    };
    let payload = seg
        .read_payload(slot.off, &shared.dir)
        .map_err(Unreadable)?;
    let rec = Record::decode(&payload).map_err(|e| {
        Unreadable(Error::Corrupt {
            path: shared.dir.join(&seg.name),
            offset: u64::from(slot.off),
            reason: e.to_string(),
        })
    })?;
    // A tombstone in an ended bucket has ended too (it lives in the bucket
    // of its end).
    let Body::Completed(c) = rec.body else {
        return Ok(None);
    };
    let until = c.expires_at.saturating_add(shared.config.grace());
    if until <= now {
        return Ok(None);
    }
    let ik = (shared.config.index_hash)(&rec.tenant, &rec.key);
    let seq = {
        let shard = shared.index.lock(&ik);
        if shard.completed(&ik) != Some(slot) {
            return Ok(None);
        }
        shared.next_seq()
    };
    let body = Body::Expired {
        expired_at: c.expires_at,
        until,
    };
    let (done, commit) = Completer::new();
    shared
        .submit(
            writer,
            Msg::Append(Append {
                bucket: shared.bucket(until),
                frame: frame_record(seq, &rec.tenant, &rec.key, rec.token, &body),
                entry: entry_of(ik, seq, &body),
                install: Some(Install::Tombstone {
                    key: ik,
                    replaces: slot,
                }),
                done: Some(done),
            }),
        )
        .map_err(Failed)?;
    Ok(Some(commit))
}

//! The messages between threads: what callers hand the writer (over its
//! channel, or through the side queue), and what the writer hands the
//! compactor (sealed segments, for their hint files); and how a record is
//! framed for the writer.

use crate::clock::Timestamp;
use crate::commit::Completer;
use crate::format::record::{self, Body};
use crate::format::{frame, hint};
use crate::index::Slot;
use crate::scope::{IndexKey, TenantDigest};
use crate::segment::Segment;
use crossbeam_channel::Sender;
use std::sync::Arc;
use std::time::Instant;

/// A message to the writer.
pub(crate) enum Msg {
    Append(Append),
    /// Stop appending to buckets that end at or before `upto`; reply when done.
    Retire {
        upto: Timestamp,
        done: Sender<()>,
    },
    /// Make everything written so far durable, then settle.
    Flush(Completer),
    /// Sync everything and exit.
    Shutdown,
}

/// One framed record to append.
pub(crate) struct Append {
    /// The bucket `[start, end)` its expiry falls in.
    pub(crate) bucket: (Timestamp, Timestamp),
    pub(crate) frame: Vec<u8>,
    /// Its index entry, for the segment's hint file (the writer sets the
    /// offset).
    pub(crate) entry: hint::Entry,
    /// For a completion: publish it in the index once durable.
    pub(crate) install: Option<Install>,
    pub(crate) done: Option<Completer>,
}

/// Reservation records waiting for the writer, which writes them with its
/// next batch, and at the latest `pending_write_delay` after `since`.
#[derive(Default)]
pub(crate) struct SideQueue {
    pub(crate) items: Vec<Queued>,
    /// When the queue last went from empty to non-empty.
    pub(crate) since: Option<Instant>,
}

/// A reservation record waiting in the side queue.
pub(crate) struct Queued {
    /// The reservation's fencing token.
    pub(crate) token: u64,
    pub(crate) append: Append,
}

/// What a durable record changes in the index.
pub(crate) enum Install {
    /// A completion of `key`: it replaces reservation `token`.
    Completion { key: IndexKey, token: u64 },
    /// A tombstone of `key`: it replaces the completion at `replaces`, if
    /// the key's slot still points there.
    Tombstone { key: IndexKey, replaces: Slot },
}

impl Append {
    /// The reservation this record completes, if it is a completion (a
    /// caller waits for it; group commit counts these).
    pub(crate) fn completes(&self) -> Option<u64> {
        match self.install {
            Some(Install::Completion { token, .. }) => Some(token),
            _ => None,
        }
    }
}
/// What the hint file of a segment lists: every record in `[40, len)`.
#[derive(Default)]
pub(crate) struct SegmentEntries {
    pub(crate) entries: Vec<hint::Entry>,
    pub(crate) max_seq: u64,
}

/// A segment the writer will not append to again, with its entries.
pub(crate) struct Sealed {
    pub(crate) segment: Arc<Segment>,
    pub(crate) entries: SegmentEntries,
}

/// The index entry of record `body` of index key `key` (the writer fills in
/// its offset).
pub(crate) fn entry_of(key: IndexKey, seq: u64, body: &Body) -> hint::Entry {
    let (kind, live_until) = body.kind_and_live_until();
    hint::Entry {
        key,
        seq,
        live_until,
        offset: 0,
        kind,
    }
}

/// Frames record `body` of (`tenant`, `key`) with sequence number `seq` and
/// fencing token `token` (the writer seals it where it places it).
pub(crate) fn frame_record(
    seq: u64,
    tenant: &TenantDigest,
    key: &[u8],
    token: u64,
    body: &Body,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + key.len());
    let start = frame::begin(&mut out);
    record::encode_parts(&mut out, seq, tenant, key, token, body);
    frame::finish(&mut out, start);
    out
}

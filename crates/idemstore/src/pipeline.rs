//! The messages between threads: what callers hand the writer (over its
//! channel, or through the side queue), and what the writer hands the
//! compactor (sealed segments, for their hint files).

use crate::clock::Timestamp;
use crate::commit::Completer;
use crate::format::hint;
use crate::scope::IndexKey;
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

/// Publish a completed record for `key`, replacing reservation `token`.
pub(crate) struct Install {
    pub(crate) key: IndexKey,
    pub(crate) token: u64,
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

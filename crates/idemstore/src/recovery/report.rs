//! What `open` found on disk, for [`Store::recovery_report`](crate::Store::recovery_report).

use crate::clock::Timestamp;
use crate::scope::{Fingerprint, TenantDigest};
use std::time::Duration;

/// A reservation whose holder never finished it: the newest record of its
/// key on disk is this reservation's pending record. Its handler may have
/// run, side effects and all, without a response being stored; a retry
/// after `lease_end` runs it again (unless an operator releases it, or
/// deals with it otherwise). After a crash: the requests to audit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Abandoned {
    /// The digest of the tenant that reserved the key.
    pub tenant: TenantDigest,
    /// The idempotency key, as sent.
    pub key: Vec<u8>,
    /// The reservation's fencing token.
    pub token: u64,
    /// The fingerprint of the request that reserved it.
    pub fingerprint: Fingerprint,
    /// When it was reserved.
    pub started_at: Timestamp,
    /// When its lease ends or ended (its newest renewal's).
    pub lease_end: Timestamp,
    /// Until when its record is kept on disk (the end of its bucket): a
    /// release is kept as long.
    pub kept_until: Timestamp,
}

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
    /// Every reservation whose key's newest record is its pending record,
    /// lease running or ended, oldest first (see [`Abandoned`]). Those of
    /// `pending_live` are among them.
    pub abandoned: Vec<Abandoned>,
    /// True for a [read-only](crate::Store::open_read_only) open: what
    /// the fields below say was found was left as it was (no torn tail
    /// truncated, no file removed, no hint written).
    pub read_only: bool,
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

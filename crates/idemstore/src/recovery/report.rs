//! What `open` found on disk, for [`Store::recovery_report`](crate::Store::recovery_report).

use std::time::Duration;

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

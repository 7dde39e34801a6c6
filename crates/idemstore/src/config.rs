//! How a store behaves: retention, buckets, leases, durability, limits, clock.

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::scope::{IndexHashFn, default_index_hash};
use std::sync::Arc;
use std::time::Duration;

/// When `complete` returns, relative to the disk.
///
/// | mode | `complete` returns after | survives a process crash | survives power loss |
/// | --- | --- | --- | --- |
/// | `Sync` | write + fdatasync (group commit) | yes | yes |
/// | `Periodic(d)` | write to the OS | yes | all but the last `d` |
/// | `None` | write to the OS | yes | only what `close`/`flush` synced |
///
/// "Process crash" means the process dies (kill -9, panic=abort) while the
/// machine stays up: the OS still holds what was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync before acknowledging; many callers share one fsync.
    Sync,
    /// fsync every interval in the background.
    Periodic(Duration),
    /// Never fsync except on `flush` and `close`.
    None,
}

/// Store configuration. Start from [`Config::default`] and change what you
/// need; [`Store::open`](crate::Store::open) validates it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// How long a completed response is replayed (default 24 h), counted from
    /// completion.
    pub retention: Duration,
    /// Width of a TTL bucket (default 1 h). Records whose expiry falls in the
    /// same bucket share segment files, deleted whole when the bucket ends.
    /// Disk space lingers at most one bucket width past expiry.
    pub bucket_width: Duration,
    /// How long a reservation holds its key before a later request may take
    /// it over (default 60 s). Renew it for longer handlers.
    pub lease: Duration,
    /// Durability of completions (default [`Durability::Sync`]).
    pub durability: Durability,
    /// Shortest accepted idempotency key in bytes (default 1).
    pub min_key_len: usize,
    /// Longest accepted idempotency key in bytes (default 255, at most 65535).
    pub max_key_len: usize,
    /// Largest encoded completed record (default 4 MiB, at most 64 MiB).
    pub max_record_bytes: usize,
    /// A segment file is rolled over past this size (default 64 MiB, at most
    /// 1 GiB).
    pub max_segment_bytes: u64,
    /// How long a reservation record (from `begin`, `renew` or `abort`) may
    /// wait for a group commit to ride along with (default 2 ms). Most
    /// handlers finish sooner, and then the reservation record is never
    /// written: its completion supersedes it in the same batch. A crash within
    /// this delay (plus one fsync) after `begin` can lose the reservation, so
    /// a retry runs at once instead of waiting for the lease; wait on
    /// [`Reservation::persisted`](crate::Reservation::persisted) before
    /// side effects to rule that out. Zero writes them at once.
    pub pending_write_delay: Duration,
    /// The longest a `Sync`-mode batch may stay open for more completions
    /// while they keep arriving (default 2 ms). The writer never waits longer
    /// than its last fsync took, nor at all when only one caller is
    /// completing. Zero turns the window off.
    pub group_commit_window: Duration,
    /// After a failed write (a full disk), the writer writes the records that
    /// failed again this often until a write succeeds (default 1 s).
    /// Meanwhile `begin` refuses new reservations with the write's error and
    /// still serves replays; completions wait in memory with their keys
    /// reserved ([`Error::Deferred`](crate::Error::Deferred)).
    pub write_retry_interval: Duration,
    /// Most records written in one group commit (default 4096).
    pub max_batch: usize,
    /// How often the compactor looks for expired buckets (default 30 s).
    pub compaction_interval: Duration,
    /// For this long after a completed record expires, a request with its
    /// key is refused ([`Begin::Expired`](crate::Begin::Expired): "this key
    /// expired; use a new one") instead of running again (default `None`:
    /// an expired key is free, as the public APIs this store serves
    /// document). When the compactor deletes an ended bucket it first writes
    /// a compact tombstone (tenant digest, key, expiry: no response) for
    /// each completion in it, fsynced before the file goes; the tombstone
    /// lives in the bucket of its own end. The index keeps one slot per
    /// such key until then.
    ///
    /// The directory keeps the grace (in `SEQFLOOR`, FORMAT.md), since it
    /// decides what may be deleted: `None` works with the kept one (none
    /// for a new directory), so a restart without the option or `idemctl`
    /// never frees refused keys early. `Some(grace)` replaces it on a
    /// writable open, durably before anything is deleted;
    /// [`Config::free_expired_keys`] (`Some(Duration::ZERO)`) turns it off.
    pub refuse_expired_keys_for: Option<Duration>,
    /// The clock every expiry and lease decision reads.
    pub clock: Arc<dyn Clock>,
    /// Derives index keys. Only tests replace it (to force collisions).
    #[doc(hidden)]
    pub index_hash: IndexHashFn,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            retention: Duration::from_secs(24 * 3600),
            bucket_width: Duration::from_secs(3600),
            lease: Duration::from_secs(60),
            durability: Durability::Sync,
            min_key_len: 1,
            max_key_len: 255,
            max_record_bytes: 4 << 20,
            max_segment_bytes: 64 << 20,
            pending_write_delay: Duration::from_millis(2),
            group_commit_window: Duration::from_millis(2),
            write_retry_interval: Duration::from_secs(1),
            max_batch: 4096,
            compaction_interval: Duration::from_secs(30),
            refuse_expired_keys_for: None,
            clock: Arc::new(SystemClock),
            index_hash: default_index_hash,
        }
    }
}

impl Config {
    /// Sets [`Config::retention`].
    pub fn retention(mut self, d: Duration) -> Self {
        self.retention = d;
        self
    }
    /// Sets [`Config::bucket_width`].
    pub fn bucket_width(mut self, d: Duration) -> Self {
        self.bucket_width = d;
        self
    }
    /// Sets [`Config::lease`].
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }
    /// Sets [`Config::durability`].
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }
    /// Sets the accepted key length bounds, in bytes.
    pub fn key_len(mut self, bounds: std::ops::RangeInclusive<usize>) -> Self {
        self.min_key_len = *bounds.start();
        self.max_key_len = *bounds.end();
        self
    }
    /// Sets [`Config::refuse_expired_keys_for`].
    pub fn refuse_expired_keys_for(mut self, grace: Duration) -> Self {
        self.refuse_expired_keys_for = Some(grace);
        self
    }
    /// Frees expired keys at once, and makes a writable open forget the
    /// grace a directory kept (see [`Config::refuse_expired_keys_for`]).
    pub fn free_expired_keys(mut self) -> Self {
        self.refuse_expired_keys_for = Some(Duration::ZERO);
        self
    }
    /// The grace of [`Config::refuse_expired_keys_for`], zero when off.
    pub(crate) fn grace(&self) -> Duration {
        self.refuse_expired_keys_for.unwrap_or(Duration::ZERO)
    }
    /// Sets [`Config::max_record_bytes`].
    pub fn max_record_bytes(mut self, n: usize) -> Self {
        self.max_record_bytes = n;
        self
    }
    /// Sets [`Config::max_segment_bytes`].
    pub fn max_segment_bytes(mut self, n: u64) -> Self {
        self.max_segment_bytes = n;
        self
    }
    /// Sets [`Config::pending_write_delay`].
    pub fn pending_write_delay(mut self, d: Duration) -> Self {
        self.pending_write_delay = d;
        self
    }
    /// Sets [`Config::group_commit_window`].
    pub fn group_commit_window(mut self, d: Duration) -> Self {
        self.group_commit_window = d;
        self
    }
    /// Sets [`Config::write_retry_interval`].
    pub fn write_retry_interval(mut self, d: Duration) -> Self {
        self.write_retry_interval = d;
        self
    }
    /// Sets [`Config::compaction_interval`].
    pub fn compaction_interval(mut self, d: Duration) -> Self {
        self.compaction_interval = d;
        self
    }
    /// Sets [`Config::clock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.bucket_width < Duration::from_secs(1) {
            return bad("bucket_width must be at least 1 s".into());
        }
        if self.retention < self.bucket_width {
            return bad(format!(
                "retention ({:?}) must be at least bucket_width ({:?})",
                self.retention, self.bucket_width
            ));
        }
        if self.lease.is_zero() || self.lease >= self.retention {
            return bad(format!(
                "lease ({:?}) must be longer than zero and shorter than retention ({:?})",
                self.lease, self.retention
            ));
        }
        if let Durability::Periodic(d) = self.durability
            && d.is_zero()
        {
            return bad("Durability::Periodic needs an interval above zero".into());
        }
        if self.min_key_len > self.max_key_len || self.max_key_len > usize::from(u16::MAX) {
            return bad(format!(
                "key length bounds {}..={} must be ordered and at most 65535",
                self.min_key_len, self.max_key_len
            ));
        }
        if self.max_record_bytes < 256 || self.max_record_bytes > crate::format::frame::MAX_PAYLOAD
        {
            return bad(format!(
                "max_record_bytes {} must be within 256..={}",
                self.max_record_bytes,
                crate::format::frame::MAX_PAYLOAD
            ));
        }
        if self.max_segment_bytes < (self.max_record_bytes as u64) * 2
            || self.max_segment_bytes > (1 << 30)
        {
            return bad(format!(
                "max_segment_bytes {} must be at least twice max_record_bytes and at most 1 GiB",
                self.max_segment_bytes
            ));
        }
        if self.max_batch == 0 {
            return bad("max_batch must be at least 1".into());
        }
        if self.compaction_interval.is_zero() {
            return bad("compaction_interval must be longer than zero".into());
        }
        if self
            .refuse_expired_keys_for
            .is_some_and(|g| !g.is_zero() && g < Duration::from_secs(1))
        {
            return bad(
                "refuse_expired_keys_for must be at least 1 s (zero, free_expired_keys, frees \
                 expired keys)"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_refused_with_reasons() {
        Config::default().validate().unwrap();
        let cases = [
            Config::default().bucket_width(Duration::from_millis(10)),
            Config::default().retention(Duration::from_secs(60)),
            Config::default().lease(Duration::ZERO),
            Config::default().durability(Durability::Periodic(Duration::ZERO)),
            Config::default().key_len(std::ops::RangeInclusive::new(10, 5)),
            Config::default().key_len(1..=70_000),
            Config::default().max_record_bytes(10),
            Config::default().max_segment_bytes(1 << 31),
        ];
        for c in cases {
            let e = c.validate().unwrap_err();
            assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
        }
    }
}

//! The metrics the engine records, through the [`metrics`] facade: nothing is
//! recorded until the application installs a recorder (e.g.
//! `metrics-exporter-prometheus`), and then at the cost of a lookup per
//! batch, not per request.
//!
//! | name | kind | what |
//! | --- | --- | --- |
//! | [`COMMIT_SECONDS`] | histogram | time to write one batch and make it durable (the fsync, in `Sync`) |
//! | [`BATCH_RECORDS`] | histogram | records written by one batch (group commit at work) |
//! | [`WRITE_FAILURES`] | counter | failed writes or fsyncs (a full disk, EIO) |
//! | [`LIVE_KEYS`] | gauge | keys in the index, pending and completed |
//! | [`PENDING_KEYS`] | gauge | reservations in flight |
//! | [`DISK_BYTES`] | gauge | bytes in segment files |
//!
//! The gauges are set after a batch at most once a second, and on every
//! [`Store::stats`](crate::Store::stats) call, so a `/metrics` handler that
//! calls `stats()` before rendering serves current values.

use std::time::Duration;

/// Histogram: seconds one batch took to be written and made durable.
pub const COMMIT_SECONDS: &str = "idempotency_store_commit_seconds";
/// Histogram: records one batch wrote.
pub const BATCH_RECORDS: &str = "idempotency_store_batch_records";
/// Counter: writes or fsyncs that failed.
pub const WRITE_FAILURES: &str = "idempotency_store_write_failures_total";
/// Gauge: keys in the index (pending and completed).
pub const LIVE_KEYS: &str = "idempotency_store_live_keys";
/// Gauge: reservations in flight.
pub const PENDING_KEYS: &str = "idempotency_store_pending_keys";
/// Gauge: bytes in segment files.
pub const DISK_BYTES: &str = "idempotency_store_disk_bytes";

/// One batch written: how long it took and how many records it carried.
pub(crate) fn batch(took: Duration, records: u64) {
    ::metrics::histogram!(COMMIT_SECONDS).record(took.as_secs_f64());
    #[allow(clippy::cast_precision_loss)]
    ::metrics::histogram!(BATCH_RECORDS).record(records as f64);
}

/// A write or fsync failed.
pub(crate) fn write_failure() {
    ::metrics::counter!(WRITE_FAILURES).increment(1);
}

/// The store's size now.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn gauges(live: u64, pending: u64, disk_bytes: u64) {
    ::metrics::gauge!(LIVE_KEYS).set(live as f64);
    ::metrics::gauge!(PENDING_KEYS).set(pending as f64);
    ::metrics::gauge!(DISK_BYTES).set(disk_bytes as f64);
}

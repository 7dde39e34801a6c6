//! sled 0.34: compare-and-swap to reserve, insert on completion, `flush`
//! after the completion (idemstore's guarantee), and a variant that also
//! flushes the reservation.

use super::{BODY, threads};

/// sled 0.34: compare-and-swap to reserve, insert to complete, `flush` after
/// the completion; with `flush_reservation`, after the reservation too.
///
/// One flush per cycle is the peer that matches idemstore's `Sync`, which
/// does not fsync a reservation before `begin` returns (a reservation lost
/// in a crash is no worse than one that survives it: its lease runs out
/// and a retry runs the request again either way). Note that sled's
/// `flush` on Linux is `sync_file_range`, which neither flushes the
/// disk's write cache nor syncs metadata: it costs less than the
/// `fdatasync` idemstore and the raw limit pay, and promises less.
pub fn run(callers: usize, secs: f64, flush_reservation: bool) -> f64 {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let db = ::sled::open(dir.path()).expect("sled");
    let body = vec![b'x'; BODY];
    threads(callers, secs, move |t, i| {
        let key = format!("t{t}-{i}");
        let reserved = db
            .compare_and_swap(&key, None as Option<&[u8]>, Some(&b"pending"[..]))
            .expect("cas");
        assert!(reserved.is_ok(), "fresh key");
        if flush_reservation {
            db.flush().expect("flush");
        }
        db.insert(&key, &body[..]).expect("insert");
        db.flush().expect("flush");
    })
}

//! Fencing tokens only ever increase: after a compaction pass or an open
//! removes every segment, and past a token whose record the disk refused.

#![allow(clippy::unwrap_used)]

mod common;

use common::{clock, config, fp, reserve, response};
use idemstore::Store;
use idemstore::storage::{MemStorage, Storage};
use std::sync::Arc;
use std::time::Duration;

/// Reserves `n` keys (completing, aborting or leaving each) and returns the
/// highest fencing token handed out; every record is durable when it returns.
fn tokens_used(store: &Store, n: usize) -> u64 {
    let mut highest = 0;
    for i in 0..n {
        let r = reserve(store, "t", &format!("token-{i}"), fp("a"));
        highest = highest.max(r.token());
        r.persisted().wait().unwrap();
        match i % 3 {
            0 => r.complete(response("done")).unwrap(),
            1 => r.abort().unwrap(),
            _ => std::mem::forget(r),
        }
    }
    store.flush().unwrap();
    highest
}

/// Long enough for every bucket the test wrote to end.
const ALL_EXPIRED: Duration = Duration::from_secs(3 * 24 * 3600);

#[test]
fn fencing_tokens_keep_increasing_after_a_compaction_pass_deletes_every_segment() {
    let st = MemStorage::new();
    let c = clock();
    let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
    let highest = tokens_used(&store, 9);
    c.advance(ALL_EXPIRED);
    assert!(store.compact_now().unwrap().segments_dropped > 0);
    assert_eq!(store.stats().segments, 0);
    // A power cut, not a close: only what the pass left on disk counts.
    let after = st.crash(0);
    drop(store);
    assert!(!after.list().unwrap().iter().any(|n| n.ends_with(".seg")));
    let store = Store::open_with_storage(Arc::new(after), config(&c)).unwrap();
    let r = reserve(&store, "t", "later", fp("a"));
    assert!(r.token() > highest, "{} after {highest}", r.token());
}

#[test]
fn fencing_tokens_keep_increasing_after_open_removes_every_segment_as_expired() {
    // Left by a power cut (the open scans the segments it removes), or by a
    // clean close of a store from before floor files (it reads their hints).
    for clean_close_without_floor in [false, true] {
        let st = MemStorage::new();
        let c = clock();
        let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
        let highest = tokens_used(&store, 9);
        let after = if clean_close_without_floor {
            store.close().unwrap();
            for n in st.list().unwrap() {
                if n == "SEQFLOOR" {
                    st.remove(&n).unwrap();
                }
            }
            assert!(st.list().unwrap().iter().any(|n| n.ends_with(".hint")));
            st.clone()
        } else {
            st.crash(0)
        };
        drop(store);
        // Down until every bucket ended: the next open removes every
        // segment; another power cut right after it, and only the disk
        // remembers.
        c.advance(ALL_EXPIRED);
        let store = Store::open_with_storage(Arc::new(after.clone()), config(&c)).unwrap();
        assert!(store.recovery_report().expired_segments_removed > 0);
        assert!(!after.list().unwrap().iter().any(|n| n.ends_with(".seg")));
        let again = after.crash(0);
        drop(store);
        let store = Store::open_with_storage(Arc::new(again), config(&c)).unwrap();
        let r = reserve(&store, "t", "later", fp("a"));
        assert!(
            r.token() > highest,
            "{} after {highest} (clean close: {clean_close_without_floor})",
            r.token()
        );
    }
}

#[test]
fn a_clean_close_puts_every_token_handed_out_below_the_next_open() {
    // A token whose reservation record could not be written (the disk
    // refused it) is in no record on disk: the close must remember it.
    use idemstore::storage::{Fault, FaultOn, FaultyStorage};
    let st = MemStorage::new();
    let disk = FaultyStorage::new(Arc::new(st.clone()));
    let c = clock();
    let store = Store::open_with_storage(Arc::new(disk.clone()), config(&c)).unwrap();
    disk.faults().inject(Fault {
        on: FaultOn::Write,
        after: 0,
        errno: idemstore::storage::ENOSPC,
    });
    let r = reserve(&store, "t", "k", fp("a"));
    assert!(r.persisted().wait().is_err(), "the write was refused");
    disk.faults().heal();
    store.close().unwrap();
    let token = r.token();
    drop(r);
    let store = Store::open_with_storage(Arc::new(st), config(&c)).unwrap();
    let later = reserve(&store, "t", "k2", fp("a"));
    assert!(later.token() > token, "{} after {token}", later.token());
}

//! A wall clock stepped forward and back: no completion is acknowledged that
//! was not written, and expiry is judged by the clock as read.

#![allow(clippy::unwrap_used)]

mod common;

use common::{T0, clock, config, fp, replay, reserve, response};
use idemstore::storage::MemStorage;
use idemstore::{Begin, Store, Timestamp};
use idemstore::{Key, Tenant};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn a_clock_stepped_forward_then_back_never_acknowledges_a_completion_it_did_not_write() {
    let st = MemStorage::new();
    let c = clock();
    let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
    reserve(&store, "t", "first", fp("a"))
        .complete(response("v1"))
        .unwrap();
    // A forward step past the retention: the compactor retires and drops
    // the buckets up to then.
    c.advance(Duration::from_secs(48 * 3600));
    let report = store.compact_now().unwrap();
    assert!(report.segments_dropped >= 1, "{report:?}");
    // The step is corrected: records now expire inside the retired buckets.
    c.set(T0);
    for i in 0..5 {
        reserve(&store, "t", &format!("after-{i}"), fp("a"))
            .complete(response(&format!("w{i}")))
            .unwrap();
    }
    for i in 0..5 {
        assert_eq!(
            replay(&store, "t", &format!("after-{i}"), fp("a")).body,
            format!("w{i}").into_bytes(),
            "acknowledged and served"
        );
    }
    drop(store);
    // Acknowledged in Sync mode: each must survive a power cut.
    let store = Store::open_with_storage(Arc::new(st.crash(7)), config(&c)).unwrap();
    for i in 0..5 {
        assert_eq!(
            replay(&store, "t", &format!("after-{i}"), fp("a")).body,
            format!("w{i}").into_bytes(),
            "after-{i} was acknowledged but not written"
        );
    }
}

#[test]
fn a_clock_stepped_back_and_forward_expires_exactly_by_the_clock_read() {
    let c = clock();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    reserve(&store, "t", "k", fp("a"))
        .complete(response("v"))
        .unwrap();
    // Back by a day: still live (expiry is judged by the clock as read).
    c.set(Timestamp(T0.0 - 24 * 3600 * 1000));
    assert_eq!(replay(&store, "t", "k", fp("a")).body, b"v");
    // Forward past the retention: never served, whether or not the file
    // is gone yet, and the key is free again.
    c.set(T0.saturating_add(Duration::from_secs(24 * 3600)));
    assert!(matches!(
        store
            .begin(Tenant::new("t"), Key::new("k"), fp("a"))
            .unwrap(),
        Begin::Reserved(_)
    ));
}

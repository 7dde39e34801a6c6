//! No background thread outlives its store. Alone in its own test binary so
//! that no other test's store threads are counted.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use idemstore::{Begin, Config, Fingerprint, Response, Store};
use idemstore::{Key, Tenant};

fn store_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .filter(|n| n.starts_with("idemstore-"))
        .count()
}

/// Threads name themselves once running: wait (bounded) for them to show up.
/// A joined thread can also stay listed in `/proc` for a moment after
/// `join` returns (the kernel wakes the joiner before it removes the task).
fn eventually_store_threads(n: usize) -> usize {
    for _ in 0..1000 {
        if store_threads() == n {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    store_threads()
}

#[test]
fn writer_and_compactor_stop_on_close_and_on_drop() {
    assert_eq!(store_threads(), 0);
    let dir = tempfile::tempdir().unwrap();

    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert_eq!(
        eventually_store_threads(3),
        3,
        "a writer, its settler and a compactor"
    );
    store.close().unwrap();
    assert_eq!(eventually_store_threads(0), 0, "close joins every thread");

    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert_eq!(eventually_store_threads(3), 3);
    let Begin::Reserved(r) = store
        .begin(Tenant::new("t"), Key::new("k"), Fingerprint::of(b"x"))
        .unwrap()
    else {
        panic!("fresh key")
    };
    let clone = store.clone();
    drop(store);
    assert_eq!(store_threads(), 3, "a clone keeps the store open");
    drop(clone);
    assert_eq!(
        store_threads(),
        3,
        "a live reservation keeps the store open"
    );
    r.complete(Response::new(200, "ok")).unwrap();
    assert_eq!(
        eventually_store_threads(0),
        0,
        "the last handle's drop joins every thread"
    );

    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert!(matches!(
        store
            .begin(Tenant::new("t"), Key::new("k"), Fingerprint::of(b"x"))
            .unwrap(),
        Begin::Replay(_)
    ));
}

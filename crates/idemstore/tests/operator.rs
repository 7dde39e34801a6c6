//! An operator's calls: a read-only open beside a running store (it sees
//! what was written, refuses every write, and changes no byte even of a
//! crashed store), the abandoned reservations a crash leaves, release and
//! purge.

#![allow(clippy::unwrap_used)]

mod common;

use common::{clock, config, fp, reserve, response};
use idemstore::storage::{MemStorage, Storage};
use idemstore::{Begin, Error, Key, KeyState, Store, Tenant};
use std::collections::BTreeMap;
use std::sync::Arc;

fn files(st: &MemStorage) -> BTreeMap<String, Vec<u8>> {
    st.list()
        .unwrap()
        .into_iter()
        .map(|n| {
            let b = st.file_bytes(&n).unwrap();
            (n, b)
        })
        .collect()
}

#[test]
fn a_read_only_open_beside_a_running_store_sees_it_and_refuses_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    reserve(&store, "t", "done", fp("a"))
        .complete(response("paid"))
        .unwrap();
    let running = reserve(&store, "t", "running", fp("b"));
    running.persisted().wait().unwrap();

    let reader = Store::open_read_only(dir.path(), config(&c)).unwrap();
    assert!(reader.is_read_only() && reader.recovery_report().read_only);
    match reader.get(Tenant::new("t"), Key::new("done")).unwrap() {
        Some(KeyState::Completed(s)) => assert_eq!(s.response.body, b"paid"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        reader.get(Tenant::new("t"), Key::new("running")).unwrap(),
        Some(KeyState::Pending { .. })
    ));
    assert_eq!(reader.records().count(), 2);
    let ro = |r: Result<_, Error>| matches!(r, Err(Error::ReadOnly { .. }));
    assert!(ro(reader
        .begin(Tenant::new("t"), Key::new("new"), fp("c"))
        .map(|_| ())));
    assert!(ro(reader
        .purge(Tenant::new("t"), Key::new("done"))
        .map(|_| ())));
    assert!(ro(reader
        .release(Tenant::new("t"), Key::new("running"))
        .map(|_| ())));
    assert!(ro(reader.flush()));
    assert!(ro(reader.compact_now().map(|_| ())));

    // The running store goes on as if nothing had looked.
    running.complete(response("second")).unwrap();
    assert!(matches!(
        store
            .begin(Tenant::new("t"), Key::new("running"), fp("b"))
            .unwrap(),
        Begin::Replay(_)
    ));
    reader.close().unwrap();
    assert!(matches!(
        reader.get(Tenant::new("t"), Key::new("done")),
        Err(Error::Closed)
    ));
    store.close().unwrap();
}

#[test]
fn a_read_only_open_of_a_crashed_store_changes_no_byte_and_finds_what_open_would() {
    let c = clock();
    for seed in 0..20 {
        let st = MemStorage::new();
        let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
        for i in 0..30 {
            let r = reserve(&store, "t", &format!("k{i}"), fp("a"));
            if i % 3 == 0 {
                r.persisted().wait().unwrap();
                r.abandon();
            } else {
                r.complete(response("ok")).unwrap();
            }
        }
        let after = st.crash(seed);
        drop(store);
        let before = files(&after);
        let reader =
            Store::open_read_only_with_storage(Arc::new(after.clone()), config(&c)).unwrap();
        let seen = reader.recovery_report().clone();
        let mut listed: Vec<Vec<u8>> = reader.records().map(|r| r.unwrap().key).collect();
        drop(reader);
        assert_eq!(files(&after), before, "seed {seed}: a read-only open wrote");

        let store = Store::open_with_storage(Arc::new(after), config(&c)).unwrap();
        let repaired = store.recovery_report();
        assert_eq!(
            (seen.completed_live, seen.pending_live, &seen.abandoned),
            (
                repaired.completed_live,
                repaired.pending_live,
                &repaired.abandoned
            ),
            "seed {seed}"
        );
        // Every acknowledged completion and every reservation that was
        // fsynced: 20 and 10.
        assert_eq!((seen.completed_live, seen.abandoned.len()), (20, 10));
        let mut keys: Vec<Vec<u8>> = store.records().map(|r| r.unwrap().key).collect();
        listed.sort();
        keys.sort();
        assert_eq!(listed, keys);
    }
}

#[test]
fn abandoned_reservations_stay_listed_after_their_lease_until_released() {
    let c = clock();
    let st = MemStorage::new();
    let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
    for k in ["a", "b"] {
        let r = reserve(&store, "t", k, fp("x"));
        r.persisted().wait().unwrap();
        r.abandon();
    }
    reserve(&store, "t", "c", fp("x"))
        .complete(response("ok"))
        .unwrap();
    let token_a = match store.get(Tenant::new("t"), Key::new("a")).unwrap() {
        Some(KeyState::Pending { .. }) => {
            store
                .records()
                .map(|r| r.unwrap())
                .find(|r| r.key == b"a")
                .unwrap()
                .token
        }
        other => panic!("{other:?}"),
    };
    drop(store);
    let st = st.crash(1);
    // Well past the lease: the keys are free, but still to be audited.
    c.advance(std::time::Duration::from_secs(3600));
    let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
    let listed = &store.recovery_report().abandoned;
    assert_eq!(
        listed.iter().map(|a| &a.key[..]).collect::<Vec<_>>(),
        [&b"a"[..], b"b"]
    );
    assert_eq!(listed[0].token, token_a);
    assert_eq!(listed[0].tenant, idemstore::TenantDigest::of(b"t"));
    assert_eq!(store.recovery_report().pending_live, 0);
    // Released by its tenant digest, as an operator knows it.
    let digest = listed[0].tenant;
    assert!(store.release(digest, Key::new("a")).unwrap());
    assert!(!store.release(digest, Key::new("c")).unwrap(), "completed");
    store.close().unwrap();
    let store = Store::open_with_storage(Arc::new(st), config(&c)).unwrap();
    let listed = &store.recovery_report().abandoned;
    assert_eq!(
        listed.iter().map(|a| &a.key[..]).collect::<Vec<_>>(),
        [&b"b"[..]]
    );
}

#[test]
fn a_purged_key_runs_again_after_a_crash_and_its_purge_is_kept_as_long_as_the_record() {
    let c = clock();
    let st = MemStorage::new();
    let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
    reserve(&store, "t", "k", fp("a"))
        .complete(response("first"))
        .unwrap();
    assert!(store.purge(Tenant::new("t"), Key::new("k")).unwrap());
    assert!(!store.purge(Tenant::new("t"), Key::new("k")).unwrap());
    assert!(matches!(
        store
            .begin(Tenant::new("t"), Key::new("k"), fp("b"))
            .unwrap(),
        Begin::Reserved(_)
    ));
    // Power cuts now, before any close could flush anything.
    let images: Vec<MemStorage> = (0..10).map(|seed| st.crash(seed)).collect();
    drop(store);
    // Almost a day later, the record's bucket (and the purge's, the same)
    // still on disk: durable when it returned, no crash image brings the
    // record back.
    c.advance(std::time::Duration::from_secs(23 * 3600));
    for img in images {
        let store = Store::open_with_storage(Arc::new(img), config(&c)).unwrap();
        assert_eq!(store.get(Tenant::new("t"), Key::new("k")).unwrap(), None);
        // An open store compacts (and rewrites nothing): still gone.
        store.compact_now().unwrap();
        assert!(matches!(
            store
                .begin(Tenant::new("t"), Key::new("k"), fp("a"))
                .unwrap(),
            Begin::Reserved(_)
        ));
    }
}

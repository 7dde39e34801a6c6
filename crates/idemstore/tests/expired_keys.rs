//! `Config::refuse_expired_keys_for`: a key whose record expired is refused
//! for a grace period instead of running again, from its expired completion
//! and then from the tombstone the compactor writes before it deletes the
//! completion's segment; across restarts, a full disk, a purge, a store
//! reopened without naming a grace (the directory keeps it) and one that
//! turns it off.

#![allow(clippy::unwrap_used)]

mod common;

use common::{T0, clock, config, fp, reserve, response};
use idemstore::storage::{ENOSPC, Fault, FaultOn, FaultyStorage, MemStorage, Storage};
use idemstore::{Begin, Config, Expired, Key, KeyState, ManualClock, Store, Tenant};
use std::sync::Arc;
use std::time::Duration;

const DAY: Duration = Duration::from_secs(24 * 3600);
const GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

fn refusing(c: &ManualClock) -> Config {
    config(c).refuse_expired_keys_for(GRACE)
}

fn begin(store: &Store, tenant: &str, key: &str, f: &str) -> Begin {
    store
        .begin(Tenant::new(tenant), Key::new(key), fp(f))
        .unwrap()
}

fn expired(store: &Store, key: &str) -> Expired {
    match begin(store, "t", key, "any request") {
        Begin::Expired(e) => e,
        other => panic!("expected {key} refused, got {other:?}"),
    }
}

#[test]
fn an_expired_key_is_refused_until_the_grace_ends_across_compaction_and_restarts() {
    let c = clock();
    let st = MemStorage::new();
    let open = || Store::open_with_storage(Arc::new(st.clone()), refusing(&c)).unwrap();
    let store = open();
    reserve(&store, "t", "order-1", fp("a"))
        .complete(response("paid"))
        .unwrap();
    let expires_at = T0.saturating_add(DAY);
    let refused = Expired {
        expired_at: expires_at,
        refused_until: expires_at.saturating_add(GRACE),
    };

    // Expired: refused from the completion itself, whatever the request.
    c.set(expires_at);
    assert_eq!(expired(&store, "order-1"), refused);
    assert_eq!(
        store.get(Tenant::new("t"), Key::new("order-1")).unwrap(),
        Some(KeyState::Expired(refused))
    );
    // Another tenant's key of the same name is its own.
    assert!(matches!(
        begin(&store, "u", "order-1", "a"),
        Begin::Reserved(_)
    ));

    // The bucket ends: the compactor writes the tombstone, then deletes the
    // completion's segment; the tombstone refuses the key.
    c.advance(Duration::from_secs(2 * 3600));
    let before = st.list().unwrap();
    let report = store.compact_now().unwrap();
    assert_eq!(report.tombstones_written, 1, "{report:?}");
    assert!(report.segments_dropped >= 1, "{report:?}");
    let after = st.list().unwrap();
    assert!(
        before
            .iter()
            .all(|n| !n.ends_with(".seg") || !after.contains(n)),
        "the response's segment went: {before:?} -> {after:?}"
    );
    assert_eq!(expired(&store, "order-1"), refused);
    assert_eq!(store.stats().tombstones_written, 1);

    // From the tombstone on disk after a restart, and read-only too.
    store.close().unwrap();
    let store = open();
    assert_eq!(expired(&store, "order-1"), refused);
    let reader = Store::open_read_only_with_storage(Arc::new(st.clone()), refusing(&c)).unwrap();
    assert_eq!(
        reader.get(Tenant::new("t"), Key::new("order-1")).unwrap(),
        Some(KeyState::Expired(refused))
    );
    drop(reader);
    let listed: Vec<_> = store.records().map(Result::unwrap).collect();
    assert!(
        listed
            .iter()
            .any(|r| r.key == b"order-1" && r.state == KeyState::Expired(refused)),
        "{listed:?}"
    );

    // The grace ends: the key runs again, now and after a restart.
    c.set(refused.refused_until);
    store.close().unwrap();
    let store = open();
    assert!(matches!(
        begin(&store, "t", "order-1", "b"),
        Begin::Reserved(_)
    ));
    let report = idemstore::verify_storage(&st, &refusing(&c), &mut |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn a_completion_refused_after_its_bucket_ended_survives_a_restart_before_any_compaction() {
    // The bucket ended but no compaction ran: the open must read the ended
    // segment (it holds the only record of the key) instead of removing it.
    let c = clock();
    let st = MemStorage::new();
    let store = Store::open_with_storage(Arc::new(st.clone()), refusing(&c)).unwrap();
    reserve(&store, "t", "k", fp("a"))
        .complete(response("v"))
        .unwrap();
    store.close().unwrap();
    c.advance(DAY + Duration::from_secs(3 * 3600));
    let store = Store::open_with_storage(Arc::new(st.clone()), refusing(&c)).unwrap();
    assert_eq!(store.recovery_report().expired_segments_removed, 0);
    let e = expired(&store, "k");
    assert_eq!(e.expired_at, T0.saturating_add(DAY));
    // Its tombstone is written by the first pass, which then deletes it.
    assert_eq!(store.compact_now().unwrap().tombstones_written, 1);
    assert_eq!(expired(&store, "k"), e);
}

#[test]
fn a_full_disk_during_the_tombstones_keeps_the_segment_and_the_refusal() {
    let c = clock();
    let st = MemStorage::new();
    let disk = FaultyStorage::new(Arc::new(st.clone()));
    let faults = disk.faults();
    let store = Store::open_with_storage(Arc::new(disk), refusing(&c)).unwrap();
    reserve(&store, "t", "k", fp("a"))
        .complete(response("v"))
        .unwrap();
    c.advance(DAY + Duration::from_secs(2 * 3600));
    faults.inject(Fault {
        on: FaultOn::Write,
        after: 0,
        errno: ENOSPC,
    });
    let before = st.list().unwrap();
    assert!(store.compact_now().is_err(), "no tombstone, no deletion");
    for name in before.iter().filter(|n| n.ends_with(".seg")) {
        assert!(st.list().unwrap().contains(name), "{name} deleted");
    }
    let e = expired(&store, "k");
    // Once the disk takes writes, the next pass completes the work.
    faults.heal();
    store.flush().unwrap();
    store.compact_now().unwrap();
    assert_eq!(expired(&store, "k"), e);
    store.close().unwrap();
    let store = Store::open_with_storage(Arc::new(st.clone()), refusing(&c)).unwrap();
    assert_eq!(expired(&store, "k"), e);
}

#[test]
fn a_power_cut_while_the_disk_is_full_keeps_the_refusal() {
    let c = clock();
    let st = MemStorage::new();
    let disk = FaultyStorage::new(Arc::new(st.clone()));
    let faults = disk.faults();
    let store = Store::open_with_storage(Arc::new(disk), refusing(&c)).unwrap();
    reserve(&store, "t", "k", fp("a"))
        .complete(response("v"))
        .unwrap();
    c.advance(DAY + Duration::from_secs(2 * 3600));
    faults.inject(Fault {
        on: FaultOn::Write,
        after: 0,
        errno: ENOSPC,
    });
    assert!(store.compact_now().is_err());
    let e = expired(&store, "k");
    // The tombstone waits in memory; the completion is still on disk.
    for seed in 0..8 {
        let image = st.crash(seed);
        let reopened = Store::open_with_storage(Arc::new(image.clone()), refusing(&c)).unwrap();
        assert_eq!(expired(&reopened, "k"), e, "image {seed}");
        reopened.compact_now().unwrap();
        assert_eq!(expired(&reopened, "k"), e, "image {seed}, compacted");
    }
}

#[test]
fn a_purge_frees_a_refused_key_for_good() {
    let c = clock();
    let st = MemStorage::new();
    let open = || Store::open_with_storage(Arc::new(st.clone()), refusing(&c)).unwrap();
    let store = open();
    for k in ["in-grace", "tombstoned"] {
        reserve(&store, "t", k, fp("a"))
            .complete(response("v"))
            .unwrap();
    }
    c.advance(DAY + Duration::from_secs(2 * 3600));
    // One refused by its tombstone, one by its expired completion (written
    // after the pass).
    store.compact_now().unwrap();
    for k in ["in-grace", "tombstoned"] {
        expired(&store, k);
    }
    assert!(
        store
            .purge(Tenant::new("t"), Key::new("tombstoned"))
            .unwrap()
    );
    store.close().unwrap();
    let store = open();
    assert!(matches!(
        begin(&store, "t", "tombstoned", "b"),
        Begin::Reserved(_)
    ));
    expired(&store, "in-grace");
}

#[test]
fn an_open_that_does_not_name_a_grace_keeps_the_directorys_until_it_is_turned_off() {
    let c = clock();
    let st = MemStorage::new();
    let store = Store::open_with_storage(Arc::new(st.clone()), refusing(&c)).unwrap();
    for key in ["compacted", "in-ended-bucket"] {
        reserve(&store, "t", key, fp("a"))
            .complete(response("v"))
            .unwrap();
    }
    c.advance(DAY + Duration::from_secs(2 * 3600));
    // One completion is now only a tombstone; the other's bucket ended
    // but is still on disk, within the grace.
    assert_eq!(store.compact_now().unwrap().tombstones_written, 2);
    store.close().unwrap();
    // An open that says nothing of the grace (idemctl, a restart without
    // the option) works with the kept one: recovery and compaction delete
    // nothing the refusal needs.
    for _ in 0..2 {
        let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
        store.compact_now().unwrap();
        expired(&store, "compacted");
        store.close().unwrap();
    }
    let reader = Store::open_read_only_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
    expired(&reader, "compacted");
    drop(reader);
    // Turned off, on purpose: the keys are free, and stay so at the next
    // open that does not say.
    let off = config(&c).free_expired_keys();
    let store = Store::open_with_storage(Arc::new(st.clone()), off).unwrap();
    assert_eq!(store.recovery_report().completed_live, 0);
    store.close().unwrap();
    let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
    assert!(matches!(
        begin(&store, "t", "compacted", "a"),
        Begin::Reserved(_)
    ));
}

#[test]
fn a_store_without_a_grace_writes_the_floor_a_build_without_one_reads() {
    let c = clock();
    let st = MemStorage::new();
    Store::open_with_storage(Arc::new(st.clone()), config(&c))
        .unwrap()
        .close()
        .unwrap();
    let floor = st.file_bytes("SEQFLOOR").unwrap();
    assert_eq!(
        u16::from_le_bytes([floor[8], floor[9]]),
        1,
        "floor version 1"
    );
    Store::open_with_storage(Arc::new(st.clone()), refusing(&c))
        .unwrap()
        .close()
        .unwrap();
    let floor = st.file_bytes("SEQFLOOR").unwrap();
    let versions: Vec<u16> = [0, 4096]
        .into_iter()
        .map(|at| u16::from_le_bytes([floor[at + 8], floor[at + 9]]))
        .collect();
    assert!(versions.contains(&2), "{versions:?}");
}

#[test]
fn a_shorter_grace_at_reopen_ends_the_refusal_sooner() {
    let c = clock();
    let st = MemStorage::new();
    let store = Store::open_with_storage(Arc::new(st.clone()), refusing(&c)).unwrap();
    reserve(&store, "t", "k", fp("a"))
        .complete(response("v"))
        .unwrap();
    c.advance(DAY + Duration::from_secs(2 * 3600));
    store.compact_now().unwrap();
    store.close().unwrap();
    let day = config(&c).refuse_expired_keys_for(DAY);
    let store = Store::open_with_storage(Arc::new(st.clone()), day).unwrap();
    let e = expired(&store, "k");
    assert_eq!(e.refused_until, T0.saturating_add(DAY).saturating_add(DAY));
    c.set(e.refused_until);
    assert!(matches!(begin(&store, "t", "k", "a"), Begin::Reserved(_)));
}

#[test]
fn a_grace_under_a_second_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let err = Store::open(
        dir.path(),
        config(&c).refuse_expired_keys_for(Duration::from_millis(10)),
    )
    .unwrap_err();
    assert!(err.to_string().contains("refuse_expired_keys_for"), "{err}");
}

#[test]
fn an_unreadable_completion_keeps_only_its_segment_and_its_key_never_runs() {
    let c = clock();
    let st = MemStorage::new();
    let cfg = || refusing(&c).max_record_bytes(4096).max_segment_bytes(8192);
    let store = Store::open_with_storage(Arc::new(st.clone()), cfg()).unwrap();
    let body = |k: &str| k.repeat(3000 / k.len());
    for k in ["damaged!", "b1", "b2", "b3", "b4"] {
        reserve(&store, "t", k, fp("a"))
            .complete(idemstore::Response::new(201, body(k)))
            .unwrap();
    }
    store.close().unwrap();
    let segs = |st: &MemStorage| -> Vec<String> {
        let mut v: Vec<String> = st
            .list()
            .unwrap()
            .into_iter()
            .filter(|n| n.ends_with(".seg"))
            .collect();
        v.sort();
        v
    };
    let before = segs(&st);
    assert!(before.len() >= 3, "{before:?}");
    // Flip a byte of the first completion's body on disk: its checksum
    // fails when it is read (the hint still lists it).
    let needle = body("damaged!");
    let (damaged, at) = before
        .iter()
        .find_map(|n| {
            let b = st.file_bytes(n).unwrap();
            b.windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .map(|p| (n.clone(), p))
        })
        .unwrap();
    let mut bytes = st.file_bytes(&damaged).unwrap();
    bytes[at + 100] ^= 0x40;
    st.put_file(&damaged, bytes);

    let store = Store::open_with_storage(Arc::new(st.clone()), cfg()).unwrap();
    c.advance(DAY + Duration::from_secs(2 * 3600));
    let err = store.compact_now().unwrap_err();
    assert!(matches!(err, idemstore::Error::Corrupt { .. }), "{err}");
    let after = segs(&st);
    assert!(after.contains(&damaged), "the damaged segment was deleted");
    assert!(
        after.len() < before.len(),
        "the other segments must go: {before:?} -> {after:?}"
    );
    // Neither the damaged key nor the others run again.
    assert!(
        store
            .begin(Tenant::new("t"), Key::new("damaged!"), fp("a"))
            .is_err()
    );
    for k in ["b1", "b2", "b3", "b4"] {
        expired(&store, k);
    }
    // Once the grace of its bucket ended, nothing in it is refused: it goes.
    c.advance(GRACE + Duration::from_secs(2 * 3600));
    store.compact_now().unwrap();
    assert!(!segs(&st).contains(&damaged));
}

//! What an open finds and rebuilds: completions kept across a restart, junk
//! and torn tails truncated, corrupt records skipped and counted (or refused
//! when read through the memory map), garbage files that never panic, hint
//! files that give the same store as a scan (and are ignored when they do
//! not match), zeros written ahead trimmed at close or truncated after a crash.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use common::{clock, config, file_ending, fill, fp, replay, reserve, response};
use idemstore::storage::{MemStorage, Storage};
use idemstore::{Begin, Config, Error, ManualClock, Store};
use idemstore::{Key, Tenant};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn restart_keeps_completions_and_reports_what_it_found() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    for i in 0..100 {
        reserve(&store, "t", &format!("k{i}"), fp("a"))
            .complete(response(&format!("body {i}")))
            .unwrap();
    }
    let written = store.stats().records_written;
    store.close().unwrap();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    let rep = store.recovery_report().clone();
    assert_eq!(rep.completed_live, 100);
    assert_eq!(rep.records_read, written);
    assert_eq!((rep.torn_tails, rep.corrupt_regions), (0, 0));
    for i in 0..100 {
        assert_eq!(
            replay(&store, "t", &format!("k{i}"), fp("a")).body,
            format!("body {i}").as_bytes()
        );
    }
}

#[test]
fn junk_appended_to_every_file_is_truncated_and_valid_records_still_serve() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    fill(&store, 20);
    store.close().unwrap();
    for round in 0..10u8 {
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "seg") {
                let mut bytes = std::fs::read(&p).unwrap();
                bytes.extend(
                    (0..(37 + u32::from(round) * 11)).map(|i| (i as u8).wrapping_mul(round + 7)),
                );
                std::fs::write(&p, bytes).unwrap();
            }
        }
        let store = Store::open(dir.path(), config(&c)).unwrap();
        let rep = store.recovery_report();
        assert!(
            rep.torn_tails >= 1 && rep.bytes_truncated > 0,
            "round {round}: {rep:?}"
        );
        assert_eq!(rep.completed_live, 20);
        for i in 0..20 {
            assert_eq!(
                replay(&store, "t", &format!("k{i}"), fp("a")).body,
                format!("v{i}").as_bytes()
            );
        }
        store.close().unwrap();
    }
}

#[test]
fn a_corrupt_record_in_the_middle_is_skipped_and_counted() {
    let st = MemStorage::new();
    let c = clock();
    // Reservation records wait long enough for their completions to
    // supersede them, however loaded the machine (see the end).
    let cfg = config(&c).pending_write_delay(Duration::from_secs(30));
    let store = Store::open_with_storage(Arc::new(st.clone()), cfg).unwrap();
    fill(&store, 3);
    store.close().unwrap();
    let name = file_ending(&st, ".seg");
    let mut bytes = st.file_bytes(&name).unwrap();
    // Damage the body of k1's completion ("v1").
    let at = bytes.windows(2).position(|w| w == b"v1").unwrap();
    bytes[at] ^= 0xff;
    st.put_file(&name, bytes);

    // With the segment's hint file (written at close) open does not read the
    // segment, so it cannot see the damage; the read of k1 does, and says so.
    let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
    assert_eq!(store.recovery_report().segments_from_hints, 1);
    assert_eq!(replay(&store, "t", "k0", fp("a")).body, b"v0");
    let e = store
        .begin(Tenant::new("t"), Key::new("k1"), fp("a"))
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("checksum"), "{e}");
    store.close().unwrap();

    // Without it, open scans the segment, skips the damage and counts it.
    let hint = name.replace(".seg", ".hint");
    st.remove(&hint).unwrap();
    let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
    let rep = store.recovery_report();
    assert_eq!((rep.segments_from_hints, rep.hints_written), (0, 1));
    assert_eq!(rep.corrupt_regions, 1);
    assert_eq!(rep.torn_tails, 0);
    assert_eq!(replay(&store, "t", "k0", fp("a")).body, b"v0");
    assert_eq!(replay(&store, "t", "k2", fp("a")).body, b"v2");
    // k1's completion is gone. Its reservation record was never written (the
    // completion superseded it in the same batch), so the key is free again.
    assert!(matches!(
        store
            .begin(Tenant::new("t"), Key::new("k1"), fp("a"))
            .unwrap(),
        Begin::Reserved(_)
    ));
}

#[test]
fn garbage_files_never_panic_open() {
    let c = clock();
    let st = MemStorage::new();
    let header_of_real_store = {
        let s = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
        reserve(&s, "t", "k", fp("a"))
            .complete(response("x"))
            .unwrap();
        s.close().unwrap();
        let name = file_ending(&st, ".seg");
        (name.clone(), st.file_bytes(&name).unwrap())
    };
    let mut seed = 1u64;
    for round in 0..200 {
        let st = MemStorage::new();
        let (name, real) = &header_of_real_store;
        let mut bytes = real.clone();
        for _ in 0..(round % 7 + 1) {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (seed >> 33) as usize % bytes.len();
            bytes[i] = (seed >> 20) as u8;
        }
        bytes.truncate(bytes.len() - (round % 13));
        st.put_file(name, bytes);
        st.put_file("0000000000001-0000000009.seg", vec![0xAB; round]);
        st.put_file("not-a-segment.txt", vec![1, 2, 3]);
        let s = Store::open_with_storage(Arc::new(st), config(&c)).unwrap();
        // Whatever survived is served only if it checks out.
        match s.begin(Tenant::new("t"), Key::new("k"), fp("a")) {
            Ok(Begin::Replay(r)) => assert_eq!(r.response.body, b"x"),
            Ok(_) | Err(Error::Corrupt { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
}

/// Every key's state, as `get` sees it.
fn snapshot(store: &Store, keys: &[String]) -> Vec<Option<String>> {
    keys.iter()
        .map(|k| {
            store
                .get(Tenant::new("t"), Key::new(k))
                .unwrap()
                .map(|s| format!("{s:?}"))
        })
        .collect()
}

fn remove_hints(st: &MemStorage) -> usize {
    let hints: Vec<String> = st
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".hint"))
        .collect();
    for h in &hints {
        st.remove(h).unwrap();
    }
    hints.len()
}

/// Completions, aborts, renewals and held reservations over several buckets
/// and many small segments. Returns the store, the keys and the reservations
/// still held.
fn hint_workload(
    st: &MemStorage,
    c: &ManualClock,
) -> (Store, Vec<String>, Vec<idemstore::Reservation>) {
    let store = Store::open_with_storage(Arc::new(st.clone()), hint_config(c)).unwrap();
    let mut keys = Vec::new();
    let mut held = Vec::new();
    for i in 0..300u32 {
        let k = format!("k{i}");
        keys.push(k.clone());
        let mut r = reserve(&store, "t", &k, fp("a"));
        match i % 5 {
            0 | 1 => r.complete(response(&format!("body {i}"))).unwrap(),
            2 => r.abort().unwrap(),
            3 => {
                r.renew().unwrap();
                r.persisted().wait().unwrap();
                held.push(r);
            }
            _ => {
                r.persisted().wait().unwrap();
                r.complete(response(&format!("late {i}"))).unwrap();
            }
        }
        if i % 60 == 59 && i < 299 {
            // Spread the records over several buckets (the last 60 keep
            // their leases running).
            c.advance(Duration::from_secs(1800));
        }
    }
    assert!(store.stats().hints_written > 0, "segments rolled over");
    (store, keys, held)
}

fn hint_config(c: &ManualClock) -> Config {
    config(c).max_record_bytes(1024).max_segment_bytes(4096)
}

#[test]
fn opening_from_hint_files_gives_the_same_store_as_scanning_the_segments() {
    for what in ["clean close", "crash"] {
        let c = clock();
        let st = MemStorage::new();
        let (store, keys, held) = hint_workload(&st, &c);
        let image = if what == "crash" {
            // Sealed segments have hints, the active ones do not.
            let image = st.crash(7);
            drop(held);
            let _ = store.close();
            image
        } else {
            // Leave the held reservations unfinished on disk, as a crash would.
            held.into_iter().for_each(std::mem::forget);
            store.close().unwrap();
            st
        };
        let a = Store::open_with_storage(Arc::new(image.clone()), hint_config(&c)).unwrap();
        let rep = a.recovery_report().clone();
        assert!(rep.segments_from_hints > 0, "{what}: {rep:?}");
        if what == "clean close" {
            assert_eq!(rep.segments_from_hints, rep.segments_read, "{rep:?}");
        } else {
            assert!(rep.hints_written > 0, "{what}: {rep:?}");
        }
        let from_hints = snapshot(&a, &keys);
        a.close().unwrap();
        assert!(remove_hints(&image) > 0);
        let b = Store::open_with_storage(Arc::new(image.clone()), hint_config(&c)).unwrap();
        let rep_b = b.recovery_report().clone();
        assert_eq!(rep_b.segments_from_hints, 0);
        assert_eq!(rep_b.hints_written, rep_b.segments_read);
        assert_eq!(
            (rep.completed_live, rep.pending_live, rep.records_read),
            (rep_b.completed_live, rep_b.pending_live, rep_b.records_read),
            "{what}"
        );
        assert_eq!(snapshot(&b, &keys), from_hints, "{what}");
        let has = |s: &str| from_hints.iter().flatten().any(|x| x.contains(s));
        assert!(has("Pending") && has("Completed"), "{what}: {rep:?}");
        b.close().unwrap();
    }
}

#[test]
fn a_hint_that_does_not_match_its_segment_is_ignored() {
    let c = clock();
    let st = MemStorage::new();
    let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
    fill(&store, 10);
    store.close().unwrap();
    let hint = file_ending(&st, ".hint");
    let good = st.file_bytes(&hint).unwrap();
    let damaged: Vec<Vec<u8>> = vec![
        Vec::new(),
        good[..good.len() - 1].to_vec(),
        {
            let mut b = good.clone();
            b[80] ^= 1; // an entry
            b
        },
        {
            let mut b = good.clone();
            b[16] ^= 1; // the segment id (header checksum catches it)
            b
        },
    ];
    for bytes in damaged {
        st.put_file(&hint, bytes);
        let s = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
        let rep = s.recovery_report();
        assert_eq!(
            (rep.segments_from_hints, rep.hints_written),
            (0, 1),
            "{rep:?}"
        );
        assert_eq!(rep.completed_live, 10);
        assert_eq!(replay(&s, "t", "k3", fp("a")).body, b"v3");
        s.close().unwrap();
        // The rewritten hint is good again.
        assert_eq!(st.file_bytes(&hint).unwrap(), good);
    }
    // A hint whose segment is gone is deleted at open, before any new
    // segment could take its id.
    let seg = hint.replace(".hint", ".seg");
    st.remove(&seg).unwrap();
    let s = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
    assert!(st.file_bytes(&hint).is_none());
    let r = reserve(&s, "t", "new", fp("a"));
    r.complete(response("n")).unwrap();
    s.close().unwrap();
    assert!(
        st.list()
            .unwrap()
            .iter()
            .all(|n| !n.contains("-0000000001.")),
        "id 1 was not reused: {:?}",
        st.list().unwrap()
    );
}

#[test]
fn a_damaged_record_read_through_the_memory_map_is_an_error_not_a_response() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    for i in 0..3 {
        reserve(&store, "t", &format!("k{i}"), fp("a"))
            .complete(response(&format!("value-{i}")))
            .unwrap();
    }
    store.close().unwrap();
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(7).position(|w| w == b"value-1").unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&seg, bytes).unwrap();
    // The hint (written at close) still matches, so open does not read the
    // segment; the replay reads k1 through the map and checks its CRC.
    let store = Store::open(dir.path(), config(&c)).unwrap();
    assert_eq!(store.recovery_report().segments_from_hints, 1);
    let e = store
        .begin(Tenant::new("t"), Key::new("k1"), fp("a"))
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_eq!(replay(&store, "t", "k2", fp("a")).body, b"value-2");
    // Written after the map was made, read back through it.
    reserve(&store, "t", "fresh", fp("a"))
        .complete(response("new"))
        .unwrap();
    assert_eq!(replay(&store, "t", "fresh", fp("a")).body, b"new");
}

#[test]
fn zeros_written_ahead_are_trimmed_at_close_and_truncated_after_a_crash() {
    let c = clock();
    // A crash: the zeros ahead of the last record survive (they were synced
    // with the data), and open truncates them.
    let st = MemStorage::new();
    let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
    fill(&store, 10);
    let data = store.stats().disk_bytes;
    let on_disk = st.file_bytes(&file_ending(&st, ".seg")).unwrap().len() as u64;
    assert!(
        on_disk > data + 1_000_000,
        "{on_disk} bytes for {data} of data"
    );
    let image = st.crash(3);
    let _ = store.close();
    let store = Store::open_with_storage(Arc::new(image.clone()), config(&c)).unwrap();
    let rep = store.recovery_report().clone();
    assert_eq!(rep.torn_tails, 1, "{rep:?}");
    assert_eq!(rep.bytes_truncated, on_disk - data);
    for i in 0..10 {
        assert_eq!(
            replay(&store, "t", &format!("k{i}"), fp("a")).body,
            format!("v{i}").as_bytes()
        );
    }
    store.close().unwrap();

    // A clean close trims them, so the hint written at close matches.
    let st = MemStorage::new();
    let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
    fill(&store, 10);
    let data = store.stats().disk_bytes;
    store.close().unwrap();
    assert_eq!(
        st.file_bytes(&file_ending(&st, ".seg")).unwrap().len() as u64,
        data
    );
    let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
    let rep = store.recovery_report();
    assert_eq!((rep.torn_tails, rep.segments_from_hints), (0, 1), "{rep:?}");
}

/// Copies every file of `from` into a fresh directory, as a crash would
/// leave them if the page cache survived (a killed process).
fn copy_dir(from: &std::path::Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
        }
    }
    to
}

#[test]
fn records_written_over_zeros_ahead_on_a_real_disk_all_come_back() {
    // Real files: zeros ahead go with O_DIRECT and each write is padded to
    // its last page. 3000 records of ~4 KiB cross three 4 MiB rounds of
    // zeros; every record must read back after a copy taken while open
    // (zeros and all), after a clean close, and from the segments alone.
    let c = clock();
    let dir = tempfile::tempdir().unwrap();
    let n = 3000;
    let body = |i: usize| format!("{i:>4096}");
    let store = Store::open(dir.path(), config(&c)).unwrap();
    for i in 0..n {
        reserve(&store, "t", &format!("k{i}"), fp("a"))
            .complete(response(&body(i)))
            .unwrap();
    }
    let data = store.stats().disk_bytes;
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let on_disk = std::fs::metadata(&seg).unwrap().len();
    assert!(
        on_disk > data && on_disk % 4096 == 0,
        "{on_disk} for {data}"
    );
    let check = |store: &Store| {
        for i in 0..n {
            assert_eq!(
                replay(store, "t", &format!("k{i}"), fp("a")).body,
                body(i).as_bytes(),
                "k{i}"
            );
        }
    };
    let image = copy_dir(dir.path());
    store.close().unwrap();
    let copy = Store::open(image.path(), config(&c)).unwrap();
    let rep = copy.recovery_report().clone();
    assert_eq!(
        (rep.torn_tails, rep.bytes_truncated),
        (1, on_disk - data),
        "{rep:?}"
    );
    check(&copy);
    copy.close().unwrap();

    let store = Store::open(dir.path(), config(&c)).unwrap();
    assert_eq!(store.recovery_report().segments_from_hints, 1);
    check(&store);
    store.close().unwrap();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "hint") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let store = Store::open(dir.path(), config(&c)).unwrap();
    assert_eq!(store.recovery_report().segments_from_hints, 0);
    check(&store);
}

//! Stores written by earlier format versions must stay readable. Each
//! directory under `tests/fixtures/` is a small store written by the format
//! version in its name; this test opens each and checks exactly what it holds.
//! A format change that breaks old stores fails here.
//!
//! Regenerate (only when adding a new format version's fixtures):
//! `cargo test -p idemstore --test fixtures -- --ignored write_v1_fixtures`

#![allow(clippy::unwrap_used)]

use idemstore::{Begin, Config, Fingerprint, KeyState, ManualClock, Response, Store, Timestamp};
use idemstore::{Key, Tenant};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// When the v1 fixtures were written (by their ManualClock).
const V1_WRITTEN_AT: Timestamp = Timestamp(1_800_000_000_000);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn config(clock: &ManualClock) -> Config {
    Config::default().clock(Arc::new(clock.clone()))
}

fn response(i: u32) -> Response {
    Response::new(200 + u16::try_from(i).unwrap(), format!("{{\"n\":{i}}}"))
        .with_header("content-type", b"application/json".to_vec())
        .with_header("x-fixture", vec![u8::try_from(i).unwrap(); 3])
}

/// Copies a fixture to a scratch directory (opening may truncate a torn tail).
fn open_copy(name: &str, at: Timestamp) -> (Store, tempfile::TempDir) {
    let scratch = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, scratch.path().join(p.file_name().unwrap())).unwrap();
    }
    let clock = ManualClock::new(at);
    (
        Store::open(scratch.path(), config(&clock)).unwrap(),
        scratch,
    )
}

fn replay(store: &Store, tenant: &str, key: &str, fp: &str) -> Response {
    match store
        .begin(
            Tenant::new(tenant),
            Key::new(key),
            Fingerprint::of(fp.as_bytes()),
        )
        .unwrap()
    {
        Begin::Replay(s) => s.response,
        other => panic!("{tenant}/{key}: expected a replay, got {other:?}"),
    }
}

#[test]
#[ignore = "writes the committed fixtures; run by hand for a new format version"]
fn write_v1_fixtures() {
    let clean = fixtures().join("v1-clean");
    let _ = std::fs::remove_dir_all(&clean);
    let clock = ManualClock::new(V1_WRITTEN_AT);
    let store = Store::open(&clean, config(&clock)).unwrap();
    for i in 0..3u32 {
        let Begin::Reserved(r) = store
            .begin(
                Tenant::new("tenant-a"),
                Key::new(&format!("key-{i}")),
                Fingerprint::of(format!("req-{i}").as_bytes()),
            )
            .unwrap()
        else {
            panic!("fresh")
        };
        r.complete(response(i)).unwrap();
    }
    let Begin::Reserved(r) = store
        .begin(
            Tenant::new("tenant-b"),
            Key::new("key-0"),
            Fingerprint::of(b"b"),
        )
        .unwrap()
    else {
        panic!("fresh")
    };
    r.complete(response(9)).unwrap();
    let Begin::Reserved(aborted) = store
        .begin(
            Tenant::new("tenant-a"),
            Key::new("aborted"),
            Fingerprint::of(b"x"),
        )
        .unwrap()
    else {
        panic!("fresh")
    };
    aborted.persisted().wait().unwrap();
    aborted.abort().unwrap();
    let Begin::Reserved(pending) = store
        .begin(
            Tenant::new("tenant-a"),
            Key::new("in-flight"),
            Fingerprint::of(b"p"),
        )
        .unwrap()
    else {
        panic!("fresh")
    };
    pending.persisted().wait().unwrap();
    std::mem::forget(pending); // the process "dies" mid-handler
    store.close().unwrap();
    std::fs::remove_file(clean.join("LOCK")).unwrap();

    let seg = segment_in(&clean);
    let bytes = std::fs::read(&seg).unwrap();
    for (name, damage) in [("v1-torn-tail", 0usize), ("v1-corrupt-middle", 1)] {
        let dir = fixtures().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut b = bytes.clone();
        if damage == 0 {
            b.extend_from_slice(&b.clone()[40..70]); // half a frame after the end
        } else {
            let at = b.windows(6).position(|w| w == b"{\"n\":1").unwrap();
            b[at + 5] ^= 0x55; // key-1's stored body
        }
        std::fs::write(dir.join(seg.file_name().unwrap()), b).unwrap();
    }
}

fn segment_in(dir: &Path) -> PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert_eq!(segs.len(), 1, "the fixtures are one segment each");
    segs.pop().unwrap()
}

fn check_common(store: &Store, damaged_key1: bool) {
    for i in 0..3u32 {
        if i == 1 && damaged_key1 {
            continue;
        }
        assert_eq!(
            replay(store, "tenant-a", &format!("key-{i}"), &format!("req-{i}")),
            response(i)
        );
    }
    assert_eq!(replay(store, "tenant-b", "key-0", "b"), response(9));
    assert!(
        store
            .get(Tenant::new("tenant-a"), Key::new("aborted"))
            .unwrap()
            .is_none()
    );
    match store
        .get(Tenant::new("tenant-a"), Key::new("in-flight"))
        .unwrap()
    {
        Some(KeyState::Pending {
            abandoned,
            lease_end,
            ..
        }) => {
            assert!(abandoned);
            assert_eq!(
                lease_end,
                V1_WRITTEN_AT.saturating_add(Duration::from_secs(60))
            );
        }
        other => panic!("the abandoned reservation: {other:?}"),
    }
}

#[test]
fn v1_clean_store_opens_with_everything_in_it() {
    let (store, _d) = open_copy("v1-clean", V1_WRITTEN_AT);
    let rep = store.recovery_report();
    assert_eq!((rep.completed_live, rep.pending_live), (4, 1), "{rep:?}");
    assert_eq!(
        (rep.torn_tails, rep.corrupt_regions, rep.undecodable_records),
        (0, 0, 0)
    );
    check_common(&store, false);
}

#[test]
fn v1_store_with_a_torn_tail_opens_truncated() {
    let (store, dir) = open_copy("v1-torn-tail", V1_WRITTEN_AT);
    let rep = store.recovery_report().clone();
    assert_eq!(
        (rep.torn_tails, rep.bytes_truncated, rep.corrupt_regions),
        (1, 30, 0),
        "{rep:?}"
    );
    check_common(&store, false);
    store.close().unwrap();
    let fixture = std::fs::read(segment_in(&fixtures().join("v1-torn-tail"))).unwrap();
    let truncated = std::fs::read(segment_in(dir.path())).unwrap();
    assert_eq!(truncated.len(), fixture.len() - 30);
}

#[test]
fn v1_store_with_a_corrupt_record_in_the_middle_skips_only_it() {
    let (store, _d) = open_copy("v1-corrupt-middle", V1_WRITTEN_AT);
    let rep = store.recovery_report();
    assert_eq!((rep.corrupt_regions, rep.torn_tails), (1, 0), "{rep:?}");
    check_common(&store, true);
    // key-1's completion is gone; the retry runs again.
    assert!(matches!(
        store
            .begin(
                Tenant::new("tenant-a"),
                Key::new("key-1"),
                Fingerprint::of(b"req-1")
            )
            .unwrap(),
        Begin::Reserved(_)
    ));
}

#[test]
fn v1_records_expire_when_they_said_they_would() {
    let (store, _d) = open_copy(
        "v1-clean",
        V1_WRITTEN_AT.saturating_add(Duration::from_secs(24 * 3600)),
    );
    assert_eq!(store.recovery_report().completed_live, 0);
    assert!(
        store
            .get(Tenant::new("tenant-a"), Key::new("key-0"))
            .unwrap()
            .is_none()
    );
}

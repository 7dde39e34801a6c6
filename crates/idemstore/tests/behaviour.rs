//! Behaviour of the engine through its public API, on the real filesystem
//! unless a test needs crash images (then on `MemStorage`). The contract
//! every backend keeps (replay, tenants, abort, takeover, renewal, late
//! completion, races) is `tests/tests/conformance.rs`, run on this engine
//! too; the cases here pin what only the engine has: exact leases on an
//! injected clock, restarts, files, recovery, fencing tokens.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use idemstore::internals::IndexKey;
use idemstore::storage::{MemStorage, Storage};
use idemstore::{
    Begin, Config, Durability, Error, Fingerprint, KeyState, ManualClock, Response, Store,
    TenantDigest, Timestamp,
};
use std::sync::Arc;
use std::time::Duration;

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn clock() -> ManualClock {
    ManualClock::new(T0)
}

fn config(clock: &ManualClock) -> Config {
    Config::default()
        .clock(Arc::new(clock.clone()))
        .retention(Duration::from_secs(24 * 3600))
        .bucket_width(Duration::from_secs(3600))
        .lease(Duration::from_secs(60))
}

fn fp(s: &str) -> Fingerprint {
    Fingerprint::of(s.as_bytes())
}

fn reserve(store: &Store, tenant: &str, key: &str, f: Fingerprint) -> idemstore::Reservation {
    match store.begin(tenant, key, f).unwrap() {
        Begin::Reserved(r) => r,
        other => panic!("expected Reserved for {tenant}/{key}, got {other:?}"),
    }
}

fn replay(store: &Store, tenant: &str, key: &str, f: Fingerprint) -> Response {
    match store.begin(tenant, key, f).unwrap() {
        Begin::Replay(s) => s.response,
        other => panic!("expected Replay for {tenant}/{key}, got {other:?}"),
    }
}

/// Completes keys `k0..k{n-1}` of tenant "t" with bodies `v0..`.
fn fill(store: &Store, n: usize) {
    for i in 0..n {
        reserve(store, "t", &format!("k{i}"), fp("a"))
            .complete(response(&format!("v{i}")))
            .unwrap();
    }
}

/// The name of the first file in `st` ending with `suffix`.
fn file_ending(st: &MemStorage, suffix: &str) -> String {
    st.list()
        .unwrap()
        .into_iter()
        .find(|n| n.ends_with(suffix))
        .unwrap()
}

fn response(body: &str) -> Response {
    Response::new(201, body.as_bytes().to_vec())
        .with_header("content-type", b"application/json".to_vec())
}

#[test]
fn first_request_reserves_then_retries_replay_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    let r = reserve(&store, "t", "k", fp("a"));
    assert!(matches!(
        store.begin("t", "k", fp("a")).unwrap(),
        Begin::InFlight(i) if i.same_request && i.lease_end == T0.saturating_add(Duration::from_secs(60))
    ));
    r.complete(response("{\"id\":1}")).unwrap();
    assert_eq!(replay(&store, "t", "k", fp("a")), response("{\"id\":1}"));
    assert_eq!(replay(&store, "t", "k", fp("a")), response("{\"id\":1}"));
    match store.begin("t", "k", fp("b")).unwrap() {
        Begin::Mismatch(m) => {
            assert_eq!(m.stored_fingerprint, fp("a"));
            assert_eq!(m.completed_at, T0);
        }
        other => panic!("expected Mismatch, got {other:?}"),
    }
    let s = store.stats();
    assert_eq!((s.completed, s.pending, s.live_keys), (1, 0, 1));
    assert!(s.fsyncs >= 1 && s.batches >= 1 && s.disk_bytes > 0);
    store.close().unwrap();
}

#[test]
fn the_raw_tenant_never_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    let secret = "sk_live_51HvQ2ZSECRETSECRET";
    reserve(&store, secret, "k", fp("x"))
        .complete(response("ok"))
        .unwrap();
    let r = reserve(&store, secret, "pending-key", fp("x"));
    store.flush().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
    drop(r);
}

#[test]
fn abort_and_drop_free_the_key_for_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    reserve(&store, "t", "k", fp("a")).abort().unwrap();
    let r = reserve(&store, "t", "k", fp("a"));
    drop(r); // e.g. the handler panicked
    let r = reserve(&store, "t", "k", fp("a"));
    r.complete(response("third time")).unwrap();
    assert_eq!(replay(&store, "t", "k", fp("a")).body, b"third time");
    // The abort survives a restart: the key is free, not in flight.
    reserve(&store, "t", "other", fp("a")).abort().unwrap();
    store.close().unwrap();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    reserve(&store, "t", "other", fp("a"));
}

#[test]
fn lease_takeover_fences_the_old_holder() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    let old = reserve(&store, "t", "k", fp("a"));
    c.advance(Duration::from_secs(59));
    assert!(matches!(
        store.begin("t", "k", fp("a")).unwrap(),
        Begin::InFlight(_)
    ));
    c.advance(Duration::from_secs(1));
    let new = reserve(&store, "t", "k", fp("a"));
    assert!(new.token() > old.token());
    let err = old.complete(response("stale")).unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    assert!(err.to_string().contains("not stored"));
    assert!(matches!(
        store.begin("t", "k", fp("a")).unwrap(),
        Begin::InFlight(_)
    ));
    new.complete(response("fresh")).unwrap();
    assert_eq!(replay(&store, "t", "k", fp("a")).body, b"fresh");
    assert_eq!(store.stats().takeovers, 1);
}

#[test]
fn stale_abort_and_renew_are_fenced_too() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    let mut old = reserve(&store, "t", "k", fp("a"));
    c.advance(Duration::from_secs(61));
    let new = reserve(&store, "t", "k", fp("a"));
    assert!(matches!(old.renew(), Err(Error::Fenced { .. })));
    assert!(matches!(old.abort(), Err(Error::Fenced { .. })));
    // The new holder is unaffected by the stale abort.
    assert!(matches!(
        store.begin("t", "k", fp("a")).unwrap(),
        Begin::InFlight(_)
    ));
    drop(new);
}

#[test]
fn renew_extends_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    let mut r = reserve(&store, "t", "k", fp("a"));
    c.advance(Duration::from_secs(50));
    let end = r.renew().unwrap();
    assert_eq!(end, c_now(&c).saturating_add(Duration::from_secs(60)));
    c.advance(Duration::from_secs(50));
    assert!(
        matches!(store.begin("t", "k", fp("a")).unwrap(), Begin::InFlight(i) if i.lease_end == end)
    );
    // The renewed lease is what a restart sees, too.
    r.persisted().wait().unwrap();
    let token = r.token();
    std::mem::forget(r); // the process "dies" holding it
    store.close().unwrap();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    assert_eq!(store.recovery_report().pending_live, 1);
    match store.get("t", "k").unwrap() {
        Some(KeyState::Pending {
            lease_end,
            abandoned,
            ..
        }) => {
            assert_eq!(lease_end, end);
            assert!(abandoned);
        }
        other => panic!("expected the abandoned reservation, got {other:?}"),
    }
    c.advance(Duration::from_secs(10));
    let r2 = reserve(&store, "t", "k", fp("a"));
    assert!(r2.token() > token);
}

fn c_now(c: &ManualClock) -> Timestamp {
    use idemstore::Clock;
    c.now()
}

#[test]
fn expiry_is_exact_even_before_the_compactor_runs() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    reserve(&store, "t", "k", fp("a"))
        .complete(response("r"))
        .unwrap();
    let expires = T0.saturating_add(Duration::from_secs(24 * 3600));
    c.set(Timestamp(expires.0 - 1));
    assert_eq!(replay(&store, "t", "k", fp("a")).body, b"r");
    assert!(store.get("t", "k").unwrap().is_some());
    c.set(expires);
    assert_eq!(store.get("t", "k").unwrap(), None);
    // Expired: a new request with any fingerprint runs again.
    let r = reserve(&store, "t", "k", fp("b"));
    r.complete(response("second life")).unwrap();
    assert_eq!(replay(&store, "t", "k", fp("b")).body, b"second life");
}

#[test]
fn compactor_deletes_expired_buckets_whole_and_keeps_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    reserve(&store, "t", "old", fp("a"))
        .complete(response("old"))
        .unwrap();
    c.advance(Duration::from_secs(3 * 3600));
    reserve(&store, "t", "new", fp("a"))
        .complete(response("new"))
        .unwrap();
    assert_eq!(store.stats().buckets, 2);
    let segs_before = count_segments(dir.path());
    c.advance(Duration::from_secs(22 * 3600)); // "old" expired, "new" not
    let report = store.compact_now().unwrap();
    assert!(report.segments_dropped >= 1 && report.bytes_freed > 0);
    assert_eq!(report.index_entries_dropped, 1);
    assert!(count_segments(dir.path()) < segs_before);
    assert_eq!(store.stats().buckets, 1);
    assert_eq!(store.stats().completed, 1);
    assert_eq!(replay(&store, "t", "new", fp("a")).body, b"new");
    assert!(matches!(
        store.begin("t", "old", fp("a")).unwrap(),
        Begin::Reserved(_)
    ));
    // Writes after the drop land in live buckets and survive a restart.
    reserve(&store, "t", "later", fp("a"))
        .complete(response("later"))
        .unwrap();
    store.close().unwrap();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    assert_eq!(replay(&store, "t", "later", fp("a")).body, b"later");
    assert_eq!(replay(&store, "t", "new", fp("a")).body, b"new");
}

fn count_segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count()
}

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
    let e = store.begin("t", "k1", fp("a")).unwrap_err();
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
        store.begin("t", "k1", fp("a")).unwrap(),
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
        match s.begin("t", "k", fp("a")) {
            Ok(Begin::Replay(r)) => assert_eq!(r.response.body, b"x"),
            Ok(_) | Err(Error::Corrupt { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    let err = Store::open(dir.path(), config(&c)).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    store.close().unwrap();
    Store::open(dir.path(), config(&c)).unwrap();
}

#[test]
fn a_second_process_on_the_same_directory_is_refused() {
    if let Ok(dir) = std::env::var("IDEMSTORE_LOCK_CHILD_DIR") {
        let code = match Store::open(&dir, Config::default()) {
            Err(Error::Locked { .. }) => 42,
            Ok(_) => 1,
            Err(_) => 2,
        };
        std::process::exit(code);
    }
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(dir.path(), Config::default()).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_second_process_on_the_same_directory_is_refused",
            "--nocapture",
        ])
        .env("IDEMSTORE_LOCK_CHILD_DIR", dir.path())
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(42),
        "the child should have seen Error::Locked"
    );
}

fn colliding_hash(_: &TenantDigest, _: &[u8]) -> IndexKey {
    IndexKey { hi: 7, lo: 7 }
}

#[test]
fn a_forced_index_collision_never_serves_another_tenants_response() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut cfg = config(&c);
    cfg.index_hash = colliding_hash;
    let store = Store::open(dir.path(), cfg.clone()).unwrap();
    reserve(&store, "alice", "k", fp("same"))
        .complete(response("alice's secret"))
        .unwrap();
    // Bob's key lands on Alice's index slot, with the same fingerprint.
    assert!(matches!(
        store.begin("bob", "k", fp("same")),
        Err(Error::DigestCollision)
    ));
    assert!(matches!(store.get("bob", "k"), Err(Error::DigestCollision)));
    assert!(matches!(
        store.begin("alice", "other", fp("same")),
        Err(Error::DigestCollision)
    ));
    // The rightful owner still replays.
    assert_eq!(
        replay(&store, "alice", "k", fp("same")).body,
        b"alice's secret"
    );
}

#[test]
fn a_forced_collision_with_a_pending_key_is_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut cfg = config(&c);
    cfg.index_hash = colliding_hash;
    let store = Store::open(dir.path(), cfg).unwrap();
    let _r = reserve(&store, "alice", "k", fp("same"));
    assert!(matches!(
        store.begin("bob", "k", fp("same")),
        Err(Error::DigestCollision)
    ));
}

#[test]
fn malformed_keys_and_oversized_responses_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let store = Store::open(
        dir.path(),
        config(&c).key_len(10..=20).max_record_bytes(1024),
    )
    .unwrap();
    for k in ["short", "this-key-is-much-too-long-for-the-bounds"] {
        let e = store.begin("t", k, fp("a")).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidKey {
                    min: 10,
                    max: 20,
                    ..
                }
            ),
            "{e}"
        );
    }
    let e = store.begin("t", "", fp("a")).unwrap_err();
    assert!(e.to_string().contains("0 bytes"), "{e}");
    let r = reserve(&store, "t", "key-of-ok-len", fp("a"));
    let e = r.complete(Response::new(200, vec![0u8; 2000])).unwrap_err();
    assert!(matches!(e, Error::RecordTooLarge { max: 1024, .. }), "{e}");
    // The refused completion freed the key rather than leaving it stuck.
    let r = reserve(&store, "t", "key-of-ok-len", fp("a"));
    r.complete(Response::new(200, vec![1u8; 100])).unwrap();
}

#[test]
fn racing_begins_get_exactly_one_reservation_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let keys = 200;
    let threads = 8;
    let barrier = Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut won = Vec::new();
                for k in 0..keys {
                    match store.begin("t", format!("k{k}"), fp("a")).unwrap() {
                        Begin::Reserved(r) => {
                            r.complete(Response::new(200, format!("{k}"))).unwrap();
                            won.push(k);
                        }
                        Begin::InFlight(_) | Begin::Replay(_) => {}
                        Begin::Mismatch(_) => panic!("same fingerprint cannot mismatch"),
                    }
                }
                won
            })
        })
        .collect();
    let mut wins = vec![0; keys];
    for h in handles {
        for k in h.join().unwrap() {
            wins[k] += 1;
        }
    }
    assert!(wins.iter().all(|&w| w == 1), "{wins:?}");
    for k in 0..keys {
        assert_eq!(
            replay(&store, "t", &format!("k{k}"), fp("a")).body,
            format!("{k}").as_bytes()
        );
    }
}

#[test]
fn group_commit_shares_fsyncs_between_concurrent_callers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let per_thread = 50;
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let Begin::Reserved(r) = store.begin("t", format!("{t}-{i}"), fp("a")).unwrap()
                    else {
                        panic!("fresh key")
                    };
                    r.complete(Response::new(200, vec![7u8; 512])).unwrap();
                    // Whichever thread settled the batch, it published the
                    // completion before acknowledging it.
                    assert!(matches!(
                        store.begin("t", format!("{t}-{i}"), fp("a")).unwrap(),
                        Begin::Replay(_)
                    ));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = store.stats();
    assert_eq!(s.completed, 16 * per_thread);
    // Each cycle's reservation record is written or elided (superseded by its
    // completion in the same batch).
    assert_eq!(s.records_written + s.records_elided, 2 * 16 * per_thread);
    // Not a timing assertion: with 16 callers waiting at once, batches must
    // hold more than one record on average.
    assert!(s.batches < s.records_written, "{s:?}");
    assert!(s.fsyncs <= s.batches * 2, "{s:?}");
}

/// A gate the writer's fsyncs wait at while it is closed, until it is
/// opened or `GATE_TIMEOUT` passes (so that a test whose code under test
/// never opens it fails instead of hanging).
#[derive(Debug, Default)]
struct Gate {
    closed: parking_lot::Mutex<bool>,
    changed: parking_lot::Condvar,
    /// An fsync waited at the gate and the timeout opened it.
    timed_out: std::sync::atomic::AtomicBool,
}

const GATE_TIMEOUT: Duration = Duration::from_secs(10);

impl Gate {
    fn close(&self) {
        *self.closed.lock() = true;
    }
    fn open(&self) {
        *self.closed.lock() = false;
        self.changed.notify_all();
    }
    fn pass(&self) {
        let mut closed = self.closed.lock();
        let deadline = std::time::Instant::now() + GATE_TIMEOUT;
        while *closed {
            if self.changed.wait_until(&mut closed, deadline).timed_out() {
                self.timed_out
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                *closed = false;
            }
        }
    }
}

/// `MemStorage` whose `sync_data` calls wait at a [`Gate`].
#[derive(Debug, Clone)]
struct GatedSyncs(MemStorage, Arc<Gate>);

#[derive(Debug)]
struct GatedFile(Arc<dyn idemstore::storage::StorageFile>, Arc<Gate>);

impl idemstore::storage::StorageFile for GatedFile {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, off)
    }
    fn write_all_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        self.0.write_all_at(buf, off)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.1.pass();
        self.0.sync_data()
    }
}

impl Storage for GatedSyncs {
    fn location(&self) -> std::path::PathBuf {
        self.0.location()
    }
    fn lock(&self) -> std::io::Result<idemstore::storage::LockOutcome> {
        self.0.lock()
    }
    fn list(&self) -> std::io::Result<Vec<String>> {
        self.0.list()
    }
    fn create(&self, name: &str) -> std::io::Result<Arc<dyn idemstore::storage::StorageFile>> {
        Ok(Arc::new(GatedFile(self.0.create(name)?, self.1.clone())))
    }
    fn open(&self, name: &str) -> std::io::Result<Arc<dyn idemstore::storage::StorageFile>> {
        Ok(Arc::new(GatedFile(self.0.open(name)?, self.1.clone())))
    }
    fn remove(&self, name: &str) -> std::io::Result<()> {
        self.0.remove(name)
    }
    fn sync_dir(&self) -> std::io::Result<()> {
        self.0.sync_dir()
    }
}

#[test]
fn commit_can_be_awaited_without_blocking_the_executor() {
    // A single-threaded executor runs two tasks: awaiting a commit, and a
    // ticker that opens the gate the writer's fsync waits at only after it
    // has run several times. If polling the commit blocked until the write
    // was durable, the ticker could never run: the gate would open only by
    // its timeout.
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let gate = Arc::new(Gate::default());
    let st = GatedSyncs(MemStorage::new(), gate.clone());
    let c = clock();
    let store = Store::open_with_storage(Arc::new(st), config(&c)).unwrap();
    let r = reserve(&store, "t", "k", fp("a"));
    gate.close();
    let commit = r.complete_async(response("async"));
    let ticks = std::cell::Cell::new(0u32);
    let done = std::cell::Cell::new(false);
    let ticks_before_done = std::cell::Cell::new(None);
    let mut awaiting: Pin<Box<dyn Future<Output = ()>>> = Box::pin(async {
        commit.await.unwrap();
        ticks_before_done.set(Some(ticks.get()));
        done.set(true);
    });
    let mut ticker: Pin<Box<dyn Future<Output = ()>>> = Box::pin(std::future::poll_fn(|cx| {
        if done.get() {
            return Poll::Ready(());
        }
        ticks.set(ticks.get() + 1);
        if ticks.get() == 5 {
            gate.open();
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }));
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let (mut a_done, mut t_done) = (false, false);
    while !(a_done && t_done) {
        a_done = a_done || awaiting.as_mut().poll(&mut cx).is_ready();
        t_done = t_done || ticker.as_mut().poll(&mut cx).is_ready();
        std::thread::park_timeout(Duration::from_millis(1));
    }
    assert!(
        !gate.timed_out.load(std::sync::atomic::Ordering::SeqCst),
        "the ticker never ran while the commit was pending: polling it blocked"
    );
    // The commit settled only after the ticker had opened the gate.
    assert!(
        ticks_before_done.get().is_some_and(|t| t >= 5),
        "{:?}",
        ticks_before_done.get()
    );
    assert_eq!(replay(&store, "t", "k", fp("a")).body, b"async");
}

#[test]
fn a_dead_disk_gets_clear_errors_and_never_hangs() {
    let st = MemStorage::new();
    let c = clock();
    let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
    reserve(&store, "t", "before", fp("a"))
        .complete(response("kept"))
        .unwrap();
    let after_crash = st.crash(0); // every later I/O on `st` fails
    let r = reserve(&store, "t", "k", fp("a"));
    let e = r.complete(response("lost")).unwrap_err();
    assert!(matches!(e, Error::Deferred { .. }), "{e}");
    assert!(e.to_string().contains("retry later"), "{e}");
    // The key whose request ran stays reserved: it never runs twice.
    assert!(matches!(
        store.begin("t", "k", fp("a")).unwrap(),
        Begin::InFlight(_)
    ));
    // New requests are refused with the write's error, which says what to do
    // (full-disk and fsync cases: tests/faults.rs).
    let e = store.begin("t", "k2", fp("a")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(e.to_string().contains("writes again by itself"), "{e}");
    assert!(e.is_unavailable());
    drop(store);
    // Reopening the disk as the crash left it serves what was acknowledged.
    let store = Store::open_with_storage(Arc::new(after_crash), config(&c)).unwrap();
    assert_eq!(replay(&store, "t", "before", fp("a")).body, b"kept");
}

#[test]
fn close_makes_later_calls_say_closed_and_releases_the_lock() {
    // That close joins the threads is tests/threads.rs (alone in its binary).
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let r = reserve(&store, "t", "k", fp("a"));
    store.close().unwrap();
    assert!(matches!(store.begin("t", "k", fp("a")), Err(Error::Closed)));
    assert!(matches!(r.complete(response("x")), Err(Error::Closed)));
    store.close().unwrap(); // idempotent
    // The lock is released: the directory opens again at once.
    Store::open(dir.path(), Config::default()).unwrap();
}

#[test]
fn periodic_and_none_durability_acknowledge_and_survive_a_clean_restart() {
    for d in [
        Durability::Periodic(Duration::from_millis(5)),
        Durability::None,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let c = clock();
        let store = Store::open(dir.path(), config(&c).durability(d)).unwrap();
        for i in 0..50 {
            reserve(&store, "t", &format!("k{i}"), fp("a"))
                .complete(response("v"))
                .unwrap();
        }
        assert_eq!(store.stats().completed, 50);
        store.close().unwrap();
        let store = Store::open(dir.path(), config(&c).durability(d)).unwrap();
        assert_eq!(store.recovery_report().completed_live, 50, "{d:?}");
    }
}

#[test]
fn a_reservation_reaches_the_disk_within_the_pending_write_delay() {
    // Sync mode, MemStorage: a crash keeps exactly what was fsynced.
    let c = clock();
    let st = MemStorage::new();
    let cfg = config(&c).pending_write_delay(Duration::from_millis(5));
    let store = Store::open_with_storage(Arc::new(st.clone()), cfg.clone()).unwrap();
    let slow = reserve(&store, "t", "slow-handler", fp("a"));
    let waited = reserve(&store, "t", "waited", fp("a"));
    waited.persisted().wait().unwrap();
    // Without waiting, the writer still writes it within the delay.
    for _ in 0..2000 {
        if slow.persisted().is_settled() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        slow.persisted().is_settled(),
        "not written within the delay"
    );
    let after = st.crash(0);
    std::mem::forget((slow, waited)); // the process died mid-handler
    let _ = store.close();
    let store = Store::open_with_storage(Arc::new(after), cfg).unwrap();
    assert_eq!(store.recovery_report().pending_live, 2);
    for k in ["slow-handler", "waited"] {
        assert!(
            matches!(store.begin("t", k, fp("a")).unwrap(), Begin::InFlight(_)),
            "{k}"
        );
    }
    c.advance(Duration::from_secs(60));
    assert!(matches!(
        store.begin("t", "waited", fp("a")).unwrap(),
        Begin::Reserved(_)
    ));
}

#[test]
fn reservations_completed_within_one_batch_cost_no_disk_record() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    // A long delay: the completion always arrives before the reservation is due.
    let store = Store::open(
        dir.path(),
        config(&c).pending_write_delay(Duration::from_secs(5)),
    )
    .unwrap();
    for i in 0..10 {
        reserve(&store, "t", &format!("k{i}"), fp("a"))
            .complete(response("v"))
            .unwrap();
    }
    let s = store.stats();
    assert_eq!((s.records_written, s.records_elided), (10, 10));
}

#[test]
fn closing_while_callers_complete_never_leaves_one_waiting() {
    // Every complete/flush racing a close must return (Ok or Closed), never
    // hang: nothing may be queued behind the writer's shutdown.
    for round in 0..20u64 {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Config::default()).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for t in 0..8 {
            let store = store.clone();
            let done_tx = done_tx.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let r = match store.begin("t", format!("{t}-{i}"), fp("a")) {
                        Ok(Begin::Reserved(r)) => r,
                        Ok(other) => panic!("fresh key: {other:?}"),
                        Err(_) => break,
                    };
                    let res = if i % 7 == 0 {
                        store.flush().and(r.complete(response("v")))
                    } else {
                        r.complete(response("v"))
                    };
                    if res.is_err() {
                        break;
                    }
                }
                done_tx.send(()).unwrap();
            });
        }
        std::thread::sleep(Duration::from_millis(round % 5));
        store.close().unwrap();
        for _ in 0..8 {
            done_rx
                .recv_timeout(Duration::from_secs(20))
                .expect("a caller was left waiting after close");
        }
    }
}

#[test]
fn a_lease_as_long_as_the_retention_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = Store::open(
        dir.path(),
        Config::default()
            .retention(Duration::from_secs(3600))
            .lease(Duration::from_secs(3600)),
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
}

/// Every key's state, as `get` sees it.
fn snapshot(store: &Store, keys: &[String]) -> Vec<Option<String>> {
    keys.iter()
        .map(|k| store.get("t", k).unwrap().map(|s| format!("{s:?}")))
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

/// Keys that differ only in the 26 index-key bits the in-memory index does
/// not keep (bits 32..58 of `hi`): the index sees one slot.
fn slot_colliding_hash(tenant: &TenantDigest, key: &[u8]) -> IndexKey {
    let real = idemstore::internals::default_index_hash(tenant, key);
    IndexKey {
        hi: (real.hi & (0x3ff_ffff << 32)) | 0x1234_5678,
        lo: 42,
    }
}

#[test]
fn keys_sharing_an_index_slot_but_not_an_index_key_are_refused_not_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut cfg = config(&c);
    cfg.index_hash = slot_colliding_hash;
    let store = Store::open(dir.path(), cfg.clone()).unwrap();
    let held = reserve(&store, "alice", "k", fp("same"));
    assert!(matches!(
        store.begin("bob", "k", fp("same")),
        Err(Error::DigestCollision)
    ));
    held.complete(response("alice's")).unwrap();
    assert!(matches!(
        store.begin("bob", "k", fp("same")),
        Err(Error::DigestCollision)
    ));
    store.close().unwrap();
    let store = Store::open(dir.path(), cfg).unwrap();
    assert_eq!(replay(&store, "alice", "k", fp("same")).body, b"alice's");
    assert!(matches!(
        store.begin("bob", "k", fp("same")),
        Err(Error::DigestCollision)
    ));
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
    let e = store.begin("t", "k1", fp("a")).unwrap_err();
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
        store.begin("t", "k", fp("a")).unwrap(),
        Begin::Reserved(_)
    ));
}

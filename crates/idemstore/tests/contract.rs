//! The engine's side of the contract, on an injected clock: reserve then
//! replay byte for byte, abort and drop, lease takeover and fencing, renewal,
//! exact expiry and the compactor's bucket drops, clear errors for bad keys
//! and oversized responses, racing begins. The contract every backend keeps
//! is `tests/tests/conformance.rs`, run on this engine too; the cases here
//! pin what only the engine has (exact leases, restarts, files).

#![allow(clippy::unwrap_used)]

mod common;

use common::{T0, clock, config, fp, replay, reserve, response};
use idemstore::{Begin, Config, Error, KeyState, ManualClock, Response, Store, Timestamp};
use idemstore::{Key, Tenant};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn first_request_reserves_then_retries_replay_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    let r = reserve(&store, "t", "k", fp("a"));
    assert!(matches!(
        store.begin(Tenant::new("t"), Key::new("k"), fp("a")).unwrap(),
        Begin::InFlight(i) if i.same_request && i.lease_end == T0.saturating_add(Duration::from_secs(60))
    ));
    r.complete(response("{\"id\":1}")).unwrap();
    assert_eq!(replay(&store, "t", "k", fp("a")), response("{\"id\":1}"));
    assert_eq!(replay(&store, "t", "k", fp("a")), response("{\"id\":1}"));
    match store
        .begin(Tenant::new("t"), Key::new("k"), fp("b"))
        .unwrap()
    {
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
        store
            .begin(Tenant::new("t"), Key::new("k"), fp("a"))
            .unwrap(),
        Begin::InFlight(_)
    ));
    c.advance(Duration::from_secs(1));
    let new = reserve(&store, "t", "k", fp("a"));
    assert!(new.token() > old.token());
    let err = old.complete(response("stale")).unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    assert!(err.to_string().contains("not stored"));
    assert!(matches!(
        store
            .begin(Tenant::new("t"), Key::new("k"), fp("a"))
            .unwrap(),
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
        store
            .begin(Tenant::new("t"), Key::new("k"), fp("a"))
            .unwrap(),
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
        matches!(store.begin(Tenant::new("t"), Key::new("k"), fp("a")).unwrap(), Begin::InFlight(i) if i.lease_end == end)
    );
    // The renewed lease is what a restart sees, too.
    r.persisted().wait().unwrap();
    let token = r.token();
    std::mem::forget(r); // the process "dies" holding it
    store.close().unwrap();
    let store = Store::open(dir.path(), config(&c)).unwrap();
    assert_eq!(store.recovery_report().pending_live, 1);
    match store.get(Tenant::new("t"), Key::new("k")).unwrap() {
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
    assert!(
        store
            .get(Tenant::new("t"), Key::new("k"))
            .unwrap()
            .is_some()
    );
    c.set(expires);
    assert_eq!(store.get(Tenant::new("t"), Key::new("k")).unwrap(), None);
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
        store
            .begin(Tenant::new("t"), Key::new("old"), fp("a"))
            .unwrap(),
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
fn malformed_keys_and_oversized_responses_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let store = Store::open(
        dir.path(),
        config(&c).key_len(10..=20).max_record_bytes(1024),
    )
    .unwrap();
    for k in ["short", "this-key-is-much-too-long-for-the-bounds"] {
        let e = store
            .begin(Tenant::new("t"), Key::new(k), fp("a"))
            .unwrap_err();
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
    let e = store
        .begin(Tenant::new("t"), Key::new(""), fp("a"))
        .unwrap_err();
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
                    match store
                        .begin(Tenant::new("t"), Key::new(&format!("k{k}")), fp("a"))
                        .unwrap()
                    {
                        Begin::Reserved(r) => {
                            r.complete(Response::new(200, format!("{k}"))).unwrap();
                            won.push(k);
                        }
                        Begin::InFlight(_) | Begin::Replay(_) => {}
                        Begin::Mismatch(_) => panic!("same fingerprint cannot mismatch"),
                        Begin::Expired(_) => panic!("tombstones are off"),
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

//! Index collisions, forced through `Config::index_hash`: a key whose index
//! key or index slot it shares with another tenant's is refused with
//! `Error::DigestCollision`, never served the other's response.

#![allow(clippy::unwrap_used)]

mod common;

use common::{clock, config, fp, replay, reserve, response};
use idemstore::internals::IndexKey;
use idemstore::{Error, Store, TenantDigest};
use idemstore::{Key, Tenant};

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
        store.begin(Tenant::new("bob"), Key::new("k"), fp("same")),
        Err(Error::DigestCollision)
    ));
    assert!(matches!(
        store.get(Tenant::new("bob"), Key::new("k")),
        Err(Error::DigestCollision)
    ));
    assert!(matches!(
        store.begin(Tenant::new("alice"), Key::new("other"), fp("same")),
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
        store.begin(Tenant::new("bob"), Key::new("k"), fp("same")),
        Err(Error::DigestCollision)
    ));
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
        store.begin(Tenant::new("bob"), Key::new("k"), fp("same")),
        Err(Error::DigestCollision)
    ));
    held.complete(response("alice's")).unwrap();
    assert!(matches!(
        store.begin(Tenant::new("bob"), Key::new("k"), fp("same")),
        Err(Error::DigestCollision)
    ));
    store.close().unwrap();
    let store = Store::open(dir.path(), cfg).unwrap();
    assert_eq!(replay(&store, "alice", "k", fp("same")).body, b"alice's");
    assert!(matches!(
        store.begin(Tenant::new("bob"), Key::new("k"), fp("same")),
        Err(Error::DigestCollision)
    ));
}

//! Helpers shared by the engine's test files: an injected clock at `T0`, a
//! test config on it, and short ways to reserve, replay and fill keys. Each
//! test binary compiles this module on its own and uses part of it.

#![allow(dead_code)]

use idemstore::storage::{MemStorage, Storage};
use idemstore::{Begin, Config, Fingerprint, ManualClock, Response, Store, Timestamp};
use idemstore::{Key, Tenant};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const T0: Timestamp = Timestamp(1_800_000_000_000);

pub(crate) fn clock() -> ManualClock {
    ManualClock::new(T0)
}

pub(crate) fn config(clock: &ManualClock) -> Config {
    Config::default()
        .clock(Arc::new(clock.clone()))
        .retention(Duration::from_secs(24 * 3600))
        .bucket_width(Duration::from_secs(3600))
        .lease(Duration::from_secs(60))
}

pub(crate) fn fp(s: &str) -> Fingerprint {
    Fingerprint::of(s.as_bytes())
}

pub(crate) fn reserve(
    store: &Store,
    tenant: &str,
    key: &str,
    f: Fingerprint,
) -> idemstore::Reservation {
    match store.begin(Tenant::new(tenant), Key::new(key), f).unwrap() {
        Begin::Reserved(r) => r,
        other => panic!("expected Reserved for {tenant}/{key}, got {other:?}"),
    }
}

pub(crate) fn replay(store: &Store, tenant: &str, key: &str, f: Fingerprint) -> Response {
    match store.begin(Tenant::new(tenant), Key::new(key), f).unwrap() {
        Begin::Replay(s) => s.response,
        other => panic!("expected Replay for {tenant}/{key}, got {other:?}"),
    }
}

/// Completes keys `k0..k{n-1}` of tenant "t" with bodies `v0..`.
pub(crate) fn fill(store: &Store, n: usize) {
    for i in 0..n {
        reserve(store, "t", &format!("k{i}"), fp("a"))
            .complete(response(&format!("v{i}")))
            .unwrap();
    }
}

/// The name of the first file in `st` ending with `suffix`.
pub(crate) fn file_ending(st: &MemStorage, suffix: &str) -> String {
    st.list()
        .unwrap()
        .into_iter()
        .find(|n| n.ends_with(suffix))
        .unwrap()
}

pub(crate) fn response(body: &str) -> Response {
    Response::new(201, body.as_bytes().to_vec())
        .with_header("content-type", b"application/json".to_vec())
}

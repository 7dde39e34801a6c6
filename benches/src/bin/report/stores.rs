//! idemstore itself, as the workloads measure it: the durability modes they
//! compare, a store in a fresh directory, the W1 cycle (threads or async
//! tasks) and the W6 server behind the layer.

use idemstore::{Config, Durability, Store};
use idemstore_benches::peers::BODY;
use idemstore_benches::{cycles_for, durable_cycles, runtime};
use std::time::Duration;

/// The durability modes the workloads compare, with their labels.
pub(crate) fn modes() -> [(&'static str, Durability); 3] {
    [
        ("Sync", Durability::Sync),
        (
            "Periodic(100 ms)",
            Durability::Periodic(Duration::from_millis(100)),
        ),
        ("None", Durability::None),
    ]
}

/// W1 with the callers as threads: cycles/s of `callers` threads on a store
/// with durability `d`.
pub(crate) fn idemstore(d: Durability, callers: usize, secs: f64) -> f64 {
    with_store(Config::default().durability(d), |store| {
        cycles_for(secs, callers, |run, n| {
            durable_cycles(store, callers, n, run, BODY);
        })
    })
}

/// W1 with the callers as async tasks on a 2-worker tokio runtime awaiting
/// `complete_async`, as a service behind an async HTTP server calls it.
pub(crate) fn idemstore_async(d: Durability, callers: usize, secs: f64) -> f64 {
    let rt = runtime();
    with_store(Config::default().durability(d), |store| {
        cycles_for(secs, callers, |run, n| {
            idemstore_benches::durable_cycles_async(&rt, store, callers, n, run, BODY);
        })
    })
}

/// Runs `f` on a store opened with `cfg` in a fresh directory, then closes it.
pub(crate) fn with_store<R>(cfg: Config, f: impl FnOnce(&Store) -> R) -> R {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let store = Store::open(dir.path(), cfg).expect("open");
    let r = f(&store);
    store.close().expect("close");
    r
}

/// W6 behind the layer: the handler on a store with durability `d`;
/// requests/s. `GCW_US=N` sets the store's `group_commit_window` in µs.
pub(crate) fn layered(rt: &tokio::runtime::Runtime, d: Durability, conns: usize, secs: f64) -> f64 {
    let mut cfg = Config::default().durability(d);
    if let Some(us) = std::env::var("GCW_US").ok().and_then(|v| v.parse().ok()) {
        cfg = cfg.group_commit_window(Duration::from_micros(us));
    }
    with_store(cfg, |store| {
        idemstore_benches::http::run(rt, idemstore_benches::http::layered(store), conns, secs)
    })
}

//! Runs the begin→complete cycle for a fixed time at a given caller count and
//! durability, and prints throughput and the store's batch figures. Meant to
//! be run under a profiler; the benches in `benches/` are the measurements.
//!
//! `cargo run --release -p idemstore-benches --bin cycle_load -- CALLERS sync|none SECONDS [threads|async]`
//!
//! `SLOW_FSYNC_US=1000` adds 1 ms to every fdatasync, to model a slower disk;
//! `MEM_STORAGE=1` runs on an in-memory disk (the engine without I/O).

use idemstore::{Config, Durability, Store};
use idemstore_benches::{SlowSync, cycles_for, durable_cycles, durable_cycles_async};
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let callers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let durability = match args.next().as_deref() {
        Some("none") => Durability::None,
        _ => Durability::Sync,
    };
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let tasks = args.next().as_deref() == Some("async");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .expect("tempdir");
    let mut config = Config::default().durability(durability);
    if let Some(us) = std::env::var("GROUP_COMMIT_WINDOW_US")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config = config.group_commit_window(Duration::from_micros(us));
    }
    // SLOW_FSYNC_US adds that much to every fdatasync (see `SlowSync`).
    let mem = std::env::var("MEM_STORAGE").is_ok();
    let store = match std::env::var("SLOW_FSYNC_US")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(us) => Store::open_with_storage(
            std::sync::Arc::new(SlowSync::new(dir.path(), Duration::from_micros(us)).expect("dir")),
            config,
        ),
        None if mem => Store::open_with_storage(
            std::sync::Arc::new(idemstore::storage::MemStorage::new()),
            config,
        ),
        None => Store::open(dir.path(), config),
    }
    .expect("open");
    let rate = cycles_for(secs as f64, callers, |run, n| {
        if tasks {
            durable_cycles_async(&rt, &store, callers, n, run, 512);
        } else {
            durable_cycles(&store, callers, n, run, 512);
        }
    });
    let s = store.stats();
    println!(
        "{callers} {} {durability:?}: {:.0} cycles/s; {:.1} records/batch; {} fsyncs",
        if tasks { "async tasks" } else { "threads" },
        rate,
        s.records_written as f64 / s.batches.max(1) as f64,
        s.fsyncs
    );
    store.close().expect("close");
}

//! Engine benches: the durable begin→complete cycle at 1, 8 and 64 callers
//! (group commit), and replay lookups.
//!
//! `cargo bench -p idemstore-benches --bench engine`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use idemstore::{Begin, Config, Durability, Fingerprint, Store};
use idemstore::{Key, Tenant};
use idemstore_benches::{durable_cycles, durable_cycles_async, response};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static RUN: AtomicU64 = AtomicU64::new(0);

fn cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("w1_cycle_512B");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for (name, durability) in [("sync", Durability::Sync), ("none", Durability::None)] {
        for callers in [1usize, 8, 64] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store =
                Store::open(dir.path(), Config::default().durability(durability)).expect("open");
            g.throughput(Throughput::Elements(1));
            g.bench_with_input(BenchmarkId::new(name, callers), &callers, |b, &callers| {
                b.iter_custom(|iters| {
                    let run = RUN.fetch_add(1, Ordering::Relaxed);
                    durable_cycles(&store, callers, iters, run, 512)
                });
            });
            store.close().expect("close");
        }
    }
    g.finish();

    // The same cycle with async callers: tasks on a 2-worker tokio runtime
    // awaiting `complete_async`, as behind an async HTTP server.
    let mut g = c.benchmark_group("w1_cycle_512B_async");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    for callers in [1usize, 8, 64] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Config::default()).expect("open");
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(
            BenchmarkId::new("sync", callers),
            &callers,
            |b, &callers| {
                b.iter_custom(|iters| {
                    let run = RUN.fetch_add(1, Ordering::Relaxed);
                    durable_cycles_async(&rt, &store, callers, iters, run, 512)
                });
            },
        );
        store.close().expect("close");
    }
    g.finish();
}

fn replay(c: &mut Criterion) {
    let mut g = c.benchmark_group("w2_replay_1KB");
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Store::open(dir.path(), Config::default().durability(Durability::None)).expect("open");
    let fp = Fingerprint::of(b"POST /v1/payments");
    let keys: Vec<String> = (0..10_000).map(|i| format!("replay-{i}")).collect();
    for k in &keys {
        let Ok(Begin::Reserved(r)) = store.begin(Tenant::new("bench-tenant"), Key::new(k), fp)
        else {
            panic!("fresh key")
        };
        r.complete(response(1024)).expect("complete");
    }
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("hit", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            match store.begin(Tenant::new("bench-tenant"), Key::new(&keys[i]), fp) {
                Ok(Begin::Replay(s)) => s.response.body.len(),
                other => panic!("expected replay: {other:?}"),
            }
        })
    });
    g.finish();
}

criterion_group!(benches, cycle, replay);
criterion_main!(benches);

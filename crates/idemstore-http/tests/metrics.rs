//! The metrics of the layer and the store, counted through a recorder of
//! the test's own for a known mix of requests. One test in its own binary:
//! the recorder is process-wide.

#![allow(clippy::unwrap_used)]

mod common;

use common::{app, send};
use idemstore_http::{IdempotencyConfig, TenantSource};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use std::collections::BTreeMap;
use std::time::Duration;

type Series = (
    BTreeMap<String, u64>,
    BTreeMap<String, f64>,
    BTreeMap<String, Vec<f64>>,
);

/// What was recorded since the last snapshot: counters, gauges and
/// histograms by `name{label=value,...}`.
fn series(snapshotter: &metrics_util::debugging::Snapshotter) -> Series {
    let (mut counters, mut gauges, mut histograms) = Series::default();
    for (k, _, _, v) in snapshotter.snapshot().into_vec() {
        let key = k.key();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        match v {
            DebugValue::Counter(n) => {
                counters.insert(name, n);
            }
            DebugValue::Gauge(g) => {
                gauges.insert(name, g.into_inner());
            }
            DebugValue::Histogram(h) => {
                histograms
                    .entry(name)
                    .or_default()
                    .extend(h.into_iter().map(|x| x.into_inner()));
            }
        }
    }
    (counters, gauges, histograms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_and_the_stores_work_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let app = app(IdempotencyConfig::new(TenantSource::Single));
    let key = |k: &'static str| [("idempotency-key", k)];
    // Executed: a, b, c; then d, which also meets a conflict.
    for k in ["a", "b", "c"] {
        assert_eq!(send(&app, "POST", "/201", &key(k), "x").await.status, 201);
    }
    // Replayed: a, b.
    for k in ["a", "b"] {
        assert!(send(&app, "POST", "/201", &key(k), "x").await.replayed());
    }
    // Mismatch: a with another body.
    assert_eq!(send(&app, "POST", "/201", &key("a"), "y").await.status, 422);
    // Conflict: d while its first request runs.
    let slow = {
        let router = app.router.clone();
        tokio::spawn(async move {
            use tower::ServiceExt;
            let req = axum::http::Request::post("/201?sleep=400")
                .header("idempotency-key", "d")
                .body(axum::body::Body::from("x"))
                .unwrap();
            router.oneshot(req).await.unwrap().status()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        send(&app, "POST", "/201?sleep=400", &key("d"), "x")
            .await
            .status,
        409
    );
    assert_eq!(slow.await.unwrap(), 201);
    // Rejected: a key longer than allowed, and a key sent twice.
    let long = "k".repeat(300);
    assert_eq!(
        send(
            &app,
            "POST",
            "/201",
            &[("idempotency-key", long.as_str())],
            "x"
        )
        .await
        .status,
        400
    );
    assert_eq!(
        send(
            &app,
            "POST",
            "/201",
            &[("idempotency-key", "e"), ("idempotency-key", "f")],
            "x"
        )
        .await
        .status,
        400
    );
    // Not covered: a GET is not counted.
    assert_eq!(send(&app, "GET", "/200", &key("g"), "").await.status, 200);
    // The store's gauges, published by stats().
    let stats = app.store.stats();
    assert_eq!((stats.live_keys, stats.pending), (4, 0));
    // Unavailable: the store is closed.
    app.store.close().unwrap();
    assert_eq!(send(&app, "POST", "/201", &key("h"), "x").await.status, 503);
    assert_eq!(app.runs.get(), 5, "a, b, c, d and the GET ran");

    let (counters, gauges, histograms) = series(&snapshotter);
    let want: BTreeMap<String, u64> = [
        ("executed", 4),
        ("replayed", 2),
        ("mismatch", 1),
        ("conflict", 1),
        ("rejected", 2),
        ("unavailable", 1),
    ]
    .into_iter()
    .map(|(o, n)| (format!("idempotency_requests_total{{outcome={o}}}"), n))
    .collect();
    let got: BTreeMap<String, u64> = counters
        .iter()
        .filter(|(k, _)| k.starts_with("idempotency_requests_total"))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        counters.get("idempotency_store_write_failures_total{}"),
        None,
        "no write failed"
    );
    let handler = &histograms["idempotency_handler_seconds{}"];
    assert_eq!(handler.len(), 4, "one per executed request");
    assert!(
        handler.iter().any(|s| *s >= 0.4),
        "d slept 400 ms: {handler:?}"
    );
    let batch = &histograms["idempotency_store_batch_records{}"];
    let records: f64 = batch.iter().sum();
    assert!(
        records >= 4.0,
        "at least the four completions were written: {batch:?}"
    );
    assert_eq!(
        histograms["idempotency_store_commit_seconds{}"].len(),
        batch.len(),
        "one commit time per batch"
    );
    assert_eq!(gauges["idempotency_store_live_keys{}"], 4.0);
    assert_eq!(gauges["idempotency_store_pending_keys{}"], 0.0);
    assert!(gauges["idempotency_store_disk_bytes{}"] > 0.0);

    // A full disk: one failed write, counted once (the next try is 10 s
    // away); the request ran, so it counts as executed.
    use idemstore::storage::{ENOSPC, Fault, FaultOn, FaultyStorage, FsStorage};
    use idemstore::{Config, ManualClock, Store, Timestamp};
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyStorage::new(std::sync::Arc::new(FsStorage::new(dir.path()).unwrap()));
    let faults = disk.faults();
    let store = Store::open_with_storage(
        std::sync::Arc::new(disk),
        Config::default().write_retry_interval(Duration::from_secs(10)),
    )
    .unwrap();
    let full = common::app_on(
        store,
        ManualClock::new(Timestamp(0)),
        dir,
        IdempotencyConfig::new(TenantSource::Single),
    );
    faults.inject(Fault {
        on: FaultOn::Write,
        after: 0,
        errno: ENOSPC,
    });
    let r = send(&full, "POST", "/201", &key("full"), "x").await;
    assert_eq!(r.status, 503);
    let (after, _, _) = series(&snapshotter);
    assert_eq!(
        after.get("idempotency_store_write_failures_total{}"),
        Some(&1)
    );
    assert_eq!(
        after.get("idempotency_requests_total{outcome=executed}"),
        Some(&1)
    );
}

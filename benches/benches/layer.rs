//! The idempotency layer's overhead over a bare handler, in-process: the
//! report's W6 service (the `payments` example's, `idemstore_benches::http`),
//! bare and behind the layer on the embedded store (durability `None` and
//! `Sync`), every request with a fresh key (the full path: parse,
//! fingerprint, reserve, run, store, respond).
//! One caller, and 64 concurrent tasks on a 2-worker tokio runtime.
//!
//! Beside it, the fingerprint alone: bytes against the canonical JSON form,
//! on the example's body and on a 2 KiB document.
//!
//! `cargo bench -p idemstore-benches --bench layer`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::BodyExt;
use idemstore::{Config, Durability, Store};
use idemstore_benches::http::{layered, router};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tower::ServiceExt;

static KEY: AtomicU64 = AtomicU64::new(0);

async fn one(app: Router) {
    let k = KEY.fetch_add(1, Ordering::Relaxed);
    let req = Request::post("/v1/payments")
        .header("idempotency-key", format!("k-{k}"))
        .header("x-api-key", "sk_bench")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"amount":100,"currency":"EUR"}"#))
        .expect("request");
    let resp = app.oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.into_body().collect().await.expect("body");
}

fn run(rt: &tokio::runtime::Runtime, app: &Router, callers: u64, iters: u64) -> Duration {
    rt.block_on(async {
        let per = iters.div_ceil(callers).max(1);
        let start = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let app = app.clone();
                tokio::spawn(async move {
                    for _ in 0..per {
                        one(app.clone()).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        start.elapsed()
    })
}

fn fingerprint(c: &mut Criterion) {
    use idemstore_http::FingerprintSpec;
    use idemstore_http::fingerprint::digest;
    let (parts, ()) = Request::post("/v1/payments")
        .body(())
        .expect("request")
        .into_parts();
    let small = br#"{"amount":100,"currency":"EUR"}"#.to_vec();
    let items: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"sku":"item-{i}","qty":{i},"price":"{i}.99"}}"#))
        .collect();
    let large = format!(
        r#"{{"order":"o-1","lines":[{}],"note":"x"}}"#,
        items.join(",")
    );
    let mut g = c.benchmark_group("fingerprint");
    for (body_name, body) in [("payments_body", &small), ("json_2k", &large.into_bytes())] {
        for (spec_name, spec) in [
            ("bytes", FingerprintSpec::default()),
            ("json", FingerprintSpec::json()),
        ] {
            g.bench_function(BenchmarkId::new(spec_name, body_name), |b| {
                b.iter(|| digest(&spec, &parts, body));
            });
        }
    }
    g.finish();
}

fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("w6_layer");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(1));
    let mut dirs = Vec::new();
    let variants: Vec<(&str, Router)> = {
        let mut v = vec![("bare", router())];
        for (name, d) in [
            ("layer_none", Durability::None),
            ("layer_sync", Durability::Sync),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(dir.path(), Config::default().durability(d)).expect("open");
            dirs.push(dir);
            v.push((name, layered(&store)));
        }
        v
    };
    for callers in [1u64, 64] {
        for (name, app) in &variants {
            g.bench_with_input(BenchmarkId::new(*name, callers), &callers, |b, &callers| {
                b.iter_custom(|iters| run(&rt, app, callers, iters));
            });
        }
    }
    g.finish();
}

criterion_group!(benches, layer, fingerprint);
criterion_main!(benches);

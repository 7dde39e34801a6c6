//! When the store or the handler fails: a closed store and a full disk answer
//! 503 without running the handler, panics become 500s (stored or freed by
//! the policy), a client that leaves mid-handler neither cancels it nor frees
//! the key, and configurations the store cannot honour are refused at startup.

#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use common::{KEY, app, app_on, open_store, send};
use idemstore::{Config, ManualClock, Store, Timestamp};
use idemstore_http::{IdempotencyConfig, IdempotencyLayer, REPLAYED, StorePolicy, TenantSource};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tower::ServiceExt;

#[tokio::test]
async fn a_failing_store_answers_503_and_the_handler_does_not_run() {
    let a = app(IdempotencyConfig::new(TenantSource::Single));
    a.store.close().unwrap();
    let r = send(&a, "POST", "/201", &[KEY], "{}").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.problem_type(), "store-unavailable");
    assert!(
        !r.text().contains('/'),
        "no server paths leak to clients: {}",
        r.text()
    );
    assert_eq!(a.runs.get(), 0);
    // Requests the layer does not cover still work.
    assert_eq!(
        send(&a, "GET", "/200", &[], "").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_handler_panic_is_a_500_that_is_stored_when_the_policy_stores_5xx() {
    let a = app(IdempotencyConfig::new(TenantSource::Single));
    let r = send(&a, "POST", "/201?panic", &[KEY], "{}").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.problem_type(), "handler-failed");
    // Stored under StorePolicy::All: the retry gets the same 500, and the
    // handler (which may have made its side effect first) never runs again.
    let retry = send(&a, "POST", "/201?panic", &[KEY], "{}").await;
    assert_eq!(retry.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(retry.replayed());
    assert_eq!(a.runs.get(), 1);
}

#[tokio::test]
async fn a_handler_panic_frees_the_key_when_the_policy_does_not_store_5xx() {
    let a = app(IdempotencyConfig::new(TenantSource::Single).store(StorePolicy::SuccessOnly));
    let r = send(&a, "POST", "/201?panic", &[KEY], "{}").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let r = send(&a, "POST", "/201", &[KEY], "{}").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(!r.replayed());
    assert_eq!(a.runs.get(), 2);
}

#[tokio::test]
async fn a_client_that_goes_away_mid_handler_neither_cancels_it_nor_frees_the_key() {
    let a = app(IdempotencyConfig::new(TenantSource::Single));
    let req = Request::post("/201?sleep=500")
        .header(KEY.0, KEY.1)
        .body(Body::from("{}"))
        .unwrap();
    // The server drops the request future when the client disconnects.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), a.router.clone().oneshot(req))
            .await
            .is_err()
    );
    // Its retry, the case the header exists for, finds the handler running.
    let r = send(&a, "POST", "/201?sleep=500", &[KEY], "{}").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.problem_type(), "request-in-flight");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = send(&a, "POST", "/201?sleep=500", &[KEY], "{}").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.replayed(), "the handler ran to the end and was stored");
    assert_eq!(a.runs.get(), 1);
}

#[tokio::test]
async fn a_full_disk_answers_503_without_running_the_handler_and_recovers() {
    use idemstore::storage::{ENOSPC, Fault, FaultOn, FaultyStorage, FsStorage};
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyStorage::new(Arc::new(FsStorage::new(dir.path()).unwrap()));
    let faults = disk.faults();
    let store = Store::open_with_storage(
        Arc::new(disk),
        Config::default().write_retry_interval(Duration::from_millis(100)),
    )
    .unwrap();
    let a = app_on(
        store,
        ManualClock::new(Timestamp(0)),
        dir,
        IdempotencyConfig::new(TenantSource::Single),
    );
    let before = send(&a, "POST", "/201", &[("idempotency-key", "before")], "{}").await;
    faults.inject(Fault {
        on: FaultOn::Write,
        after: 0,
        errno: ENOSPC,
    });
    // The request that finds the disk full: its handler runs (the store only
    // learns at completion). No success leaves before it is stored: 503.
    let first = send(&a, "POST", "/201", &[("idempotency-key", "full-1")], "{}").await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.problem_type(), "response-not-stored");
    assert!(first.headers.contains_key("retry-after"));
    assert_eq!(a.runs.get(), 2);
    // Its key stays reserved: its retry does not run the handler again.
    let r = send(&a, "POST", "/201", &[("idempotency-key", "full-1")], "{}").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    // New keys: 503 and no handler, until writes succeed again.
    for k in ["full-2", "full-3"] {
        let r = send(&a, "POST", "/201", &[("idempotency-key", k)], "{}").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{k}");
        assert_eq!(r.problem_type(), "store-unavailable");
    }
    // Replays need no write: served while the disk is full.
    let again = send(&a, "POST", "/201", &[("idempotency-key", "before")], "{}").await;
    assert!(again.replayed());
    assert_eq!(
        again.body, before.body,
        "what was acknowledged before is intact"
    );
    assert_eq!(a.runs.get(), 2);
    faults.heal();
    // The store writes the kept completion by itself and resumes.
    let mut replay = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = send(&a, "POST", "/201", &[("idempotency-key", "full-1")], "{}").await;
        if r.status != StatusCode::CONFLICT {
            replay = Some(r);
            break;
        }
    }
    let replay = replay.expect("the kept completion is written once the disk has room");
    assert_eq!(replay.status, StatusCode::CREATED);
    assert!(replay.replayed());
    assert!(replay.text().starts_with("run 2:"), "{}", replay.text());
    assert_eq!(
        send(&a, "POST", "/201", &[("idempotency-key", "full-2")], "{}")
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(a.runs.get(), 3);
}

#[tokio::test]
async fn a_service_whose_call_panics_is_a_stored_500_not_a_freed_key() {
    let (store, _dir) = open_store(Config::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = {
        let calls = calls.clone();
        tower::service_fn(move |_req: Request<idemstore_http::BoxBody>| {
            calls.fetch_add(1, Ordering::SeqCst);
            assert!(calls.load(Ordering::SeqCst) > 100, "call itself panics");
            async { Ok::<_, std::convert::Infallible>(Response::new(Body::empty())) }
        })
    };
    let svc = tower::Layer::layer(
        &IdempotencyLayer::new(store, IdempotencyConfig::new(TenantSource::Single)),
        svc,
    );
    let req = || {
        Request::post("/x")
            .header(KEY.0, KEY.1)
            .body(Body::empty())
            .unwrap()
    };
    let r = svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let r = svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.headers().contains_key(REPLAYED), "stored, not freed");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_layer_that_accepts_longer_keys_than_the_store_is_refused_at_startup() {
    let (store, _dir) = open_store(Config::default()); // keys up to 255
    let e = IdempotencyLayer::try_new(
        store.clone(),
        IdempotencyConfig::new(TenantSource::Single).key_len(10..=1024),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("up to 255"), "{e}");
    assert!(IdempotencyLayer::try_new(store, IdempotencyConfig::new(TenantSource::Single)).is_ok());
}

#[test]
fn a_response_limit_the_store_records_cannot_hold_is_refused_at_startup() {
    let (store, _dir) = open_store(Config::default().max_record_bytes(64 << 10));
    let e = IdempotencyLayer::try_new(store.clone(), IdempotencyConfig::new(TenantSource::Single))
        .err()
        .expect("1 MiB bodies cannot fit 64 KiB records");
    assert!(e.to_string().contains("max_record_bytes"), "{e}");
    assert!(
        IdempotencyLayer::try_new(
            store,
            IdempotencyConfig::new(TenantSource::Single).max_response_bytes(32 << 10),
        )
        .is_ok()
    );
}

#[tokio::test]
async fn a_response_marked_ran_nothing_frees_its_key_even_where_every_response_is_stored() {
    let a = app(IdempotencyConfig::new(TenantSource::Single).store(StorePolicy::All));
    let first = send(&a, "POST", "/502?ran=nothing", &[KEY], "{}").await;
    assert_eq!(first.status, StatusCode::BAD_GATEWAY);
    assert!(!first.replayed());
    let retry = send(&a, "POST", "/502?ran=nothing", &[KEY], "{}").await;
    assert!(!retry.replayed(), "nothing ran, so nothing is replayed");
    assert_eq!(a.runs.get(), 2, "the retry ran the request");
}

#[tokio::test]
async fn a_response_marked_ran_unknown_is_stored_even_where_only_successes_are() {
    let a = app(IdempotencyConfig::new(TenantSource::Single).store(StorePolicy::SuccessOnly));
    let first = send(&a, "POST", "/502?ran=unknown", &[KEY], "{}").await;
    assert_eq!(first.status, StatusCode::BAD_GATEWAY);
    let retry = send(&a, "POST", "/502?ran=unknown", &[KEY], "{}").await;
    assert!(
        retry.replayed(),
        "a request that may have run never runs again"
    );
    assert_eq!(retry.status, StatusCode::BAD_GATEWAY);
    assert_eq!(retry.body, first.body);
    assert_eq!(a.runs.get(), 1);
    // Unmarked, the same 502 frees the key under this policy.
    send(&a, "POST", "/502", &[("idempotency-key", "k2")], "{}").await;
    let again = send(&a, "POST", "/502", &[("idempotency-key", "k2")], "{}").await;
    assert!(!again.replayed());
    assert_eq!(a.runs.get(), 3);
}

//! `RoutePolicy::stored_by_handler`: the layer hands the reserved key to the
//! handler (`HeldKey`), which stores the response itself (with
//! idemstore-postgres, in its own transaction; here on the embedded store,
//! whose `complete` stands for that commit). The layer then stores nothing
//! of its own; a handler that does not take the key leaves the storing to
//! the layer; one that takes it and drops it frees it.

#![allow(clippy::unwrap_used)]

mod common;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use http_body_util::BodyExt;
use idemstore::{Reservation, Store};
use idemstore_http::{HeldKey, IdempotencyConfig, IdempotencyLayer, RoutePolicy, TenantSource};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tower::ServiceExt;

#[derive(Clone, Default)]
struct Runs(Arc<AtomicUsize>);

/// `x-mode: store` stores the response itself (with a marker header, so a
/// replay shows whose record it is), `x-mode: drop` takes the key and drops
/// it (a rollback), anything else leaves it to the layer. (A header, not
/// the query: the fingerprint covers the path and query.)
async fn pay(
    State(runs): State<Runs>,
    Extension(held): Extension<HeldKey<Reservation>>,
    request_headers: HeaderMap,
) -> Response {
    let n = runs.0.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(ms) = request_headers
        .get("x-sleep-ms")
        .and_then(|v| v.to_str().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms.parse().unwrap())).await;
    }
    let body = Bytes::from(format!("payment {n}"));
    let mut headers = HeaderMap::new();
    headers.insert("x-stored-by", "handler".parse().unwrap());
    let mode = request_headers
        .get("x-mode")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match mode {
        "store" => {
            let lease = held.take().await.unwrap();
            let record = held
                .record(&lease, StatusCode::CREATED, &headers, &body)
                .unwrap();
            // The handler's "commit".
            lease.complete(record).unwrap();
            assert!(held.take().await.is_none(), "taken once");
            (StatusCode::CREATED, headers, body).into_response()
        }
        "drop" => {
            drop(held.take().await);
            (StatusCode::SERVICE_UNAVAILABLE, "rolled back").into_response()
        }
        _ => (StatusCode::CREATED, body).into_response(),
    }
}

fn app(store: Store) -> (Router, Runs) {
    let config = IdempotencyConfig::new(TenantSource::Single)
        .route("/pay", RoutePolicy::default().stored_by_handler());
    let runs = Runs::default();
    let router = Router::new()
        .route(
            "/pay",
            post(pay).route_layer(IdempotencyLayer::new(store, config)),
        )
        .with_state(runs.clone());
    (router, runs)
}

async fn send(router: &Router, mode: &str, key: &str) -> (StatusCode, HeaderMap, Bytes) {
    send_slow(router, mode, key, 0).await
}

/// [`send`], with the handler sleeping `ms` first (the fingerprint does not
/// cover this header, so retries may differ in it).
async fn send_slow(
    router: &Router,
    mode: &str,
    key: &str,
    ms: u64,
) -> (StatusCode, HeaderMap, Bytes) {
    let req = Request::post("/pay")
        .header("idempotency-key", key)
        .header("x-mode", mode)
        .header("x-sleep-ms", ms.to_string())
        .body(Body::from("{}"))
        .unwrap();
    let r = router.clone().oneshot(req).await.unwrap();
    let (parts, body) = r.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn a_handler_that_stores_the_response_itself_is_replayed_and_the_layer_stores_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (router, runs) = app(Store::open(dir.path(), idemstore::Config::default()).unwrap());
    let (status, headers, body) = send(&router, "store", "k1").await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(!headers.contains_key("idempotent-replayed"));
    assert_eq!(body, "payment 1");
    // The retry replays the handler's own record (with its marker header),
    // whichever mode it asks for: it never runs again.
    for q in ["store", "layer", "drop"] {
        let (status, headers, body) = send(&router, q, "k1").await;
        assert_eq!(status, StatusCode::CREATED, "{q}");
        assert_eq!(headers["idempotent-replayed"], "true");
        assert_eq!(headers["x-stored-by"], "handler");
        assert_eq!(body, "payment 1");
    }
    assert_eq!(runs.0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_handler_that_does_not_take_the_key_leaves_the_storing_to_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let (router, runs) = app(Store::open(dir.path(), idemstore::Config::default()).unwrap());
    assert_eq!(send(&router, "layer", "k2").await.2, "payment 1");
    let (status, headers, body) = send(&router, "layer", "k2").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert!(!headers.contains_key("x-stored-by"));
    assert_eq!(body, "payment 1");
    assert_eq!(runs.0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_handler_that_takes_the_key_and_rolls_back_frees_it_and_its_answer_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (router, runs) = app(Store::open(dir.path(), idemstore::Config::default()).unwrap());
    let (status, _, _) = send(&router, "drop", "k3").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Not replayed: the retry runs, and this time stores.
    let (status, headers, body) = send(&router, "store", "k3").await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(!headers.contains_key("idempotent-replayed"));
    assert_eq!(body, "payment 2");
    assert_eq!(runs.0.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_held_key_is_renewed_until_the_handler_takes_it_so_a_slow_handler_is_never_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let lease = std::time::Duration::from_millis(600);
    let store = Store::open(dir.path(), idemstore::Config::default().lease(lease)).unwrap();
    let (router, runs) = app(store);
    for (mode, key) in [("layer", "slow-layer"), ("store", "slow-store")] {
        let first = {
            let router = router.clone();
            tokio::spawn(async move { send_slow(&router, mode, key, 2600).await })
        };
        // Past the lease, three times over (the handler sleeps longer): the
        // key is still the first request's, so a retry is told it is in
        // flight. (Renewed every 200 ms: a 400 ms stall of this runtime
        // would be needed to lose it.)
        for _ in 0..3 {
            tokio::time::sleep(lease + lease / 6).await;
            let (status, _, _) = send(&router, mode, key).await;
            assert_eq!(
                status,
                StatusCode::CONFLICT,
                "{mode}: taken over mid-handler"
            );
        }
        let (status, _, body) = first.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{mode}");
        let (_, headers, replay) = send(&router, mode, key).await;
        assert_eq!(headers["idempotent-replayed"], "true", "{mode}");
        assert_eq!(replay, body);
    }
    assert_eq!(runs.0.load(Ordering::SeqCst), 2, "each key ran once");
}

#[tokio::test]
async fn a_handler_stored_body_over_the_response_limit_is_stored_as_the_notice_as_on_the_layers_path()
 {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), idemstore::Config::default()).unwrap();
    let config = IdempotencyConfig::new(TenantSource::Single)
        .max_response_bytes(4)
        .route("/pay", RoutePolicy::default().stored_by_handler());
    let runs = Runs::default();
    let router = Router::new()
        .route(
            "/pay",
            post(pay).route_layer(IdempotencyLayer::new(store, config)),
        )
        .with_state(runs.clone());
    let (status, _, body) = send(&router, "store", "big").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, "payment 1", "the first client gets the whole body");
    let (status, headers, body) = send(&router, "store", "big").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert!(
        String::from_utf8_lossy(&body).contains("response-not-replayable"),
        "{body:?}"
    );
    assert_eq!(runs.0.load(Ordering::SeqCst), 1);
}

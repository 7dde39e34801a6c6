//! A real full disk: a 4 MiB tmpfs mounted under a scratch directory (needs
//! root; skipped with a message otherwise), filled up under the store while
//! requests run through the HTTP layer.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt;
use idemstore::{Config, Store};
use idemstore_http::{IdempotencyConfig, IdempotencyLayer, REPLAYED, TenantSource};
use idemstore_tests::Tmpfs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tower::ServiceExt;

async fn post_key(app: &Router, key: &str) -> (StatusCode, bool, bytes::Bytes) {
    let req = Request::post("/v1/payments")
        .header("idempotency-key", key)
        .body(Body::from(r#"{"amount":100}"#))
        .unwrap();
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let replayed = r.headers().get(REPLAYED).is_some();
    (
        status,
        replayed,
        r.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn a_filled_disk_never_runs_a_key_twice_serves_replays_and_recovers_when_freed() {
    let fs = match Tmpfs::mount("4m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED a_filled_disk...: cannot mount a tmpfs here ({why}); run as root");
            return;
        }
    };
    let data = fs.path().join("store");
    let config = || {
        Config::default()
            .write_retry_interval(Duration::from_millis(100))
            .max_record_bytes(64 << 10)
            .max_segment_bytes(256 << 10)
    };
    let store = Store::open(&data, config()).unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let app = {
        let runs = runs.clone();
        Router::new()
            .route(
                "/v1/payments",
                post(move || {
                    let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                    // A response body big enough to need fresh segments.
                    async move {
                        (
                            StatusCode::CREATED,
                            format!("payment {n} {}", "x".repeat(8000)),
                        )
                    }
                }),
            )
            .layer(IdempotencyLayer::new(
                store.clone(),
                IdempotencyConfig::new(TenantSource::Single).max_response_bytes(16 << 10),
            ))
    };
    let mut acked = Vec::new();
    for i in 0..20 {
        let key = format!("before-{i}");
        let (status, _, body) = post_key(&app, &key).await;
        assert_eq!(status, StatusCode::CREATED);
        acked.push((key, body));
    }
    let filler = fs.fill();
    // Requests run until the store hits the full disk. A request whose
    // handler ran but whose response could not be written gets 503 and keeps
    // its key; new requests get 503 without running the handler; replays of
    // what was acknowledged are still served.
    let mut kept = Vec::new();
    let mut refused = 0;
    for i in 0..400 {
        let key = format!("during-{i}");
        let before = runs.load(Ordering::SeqCst);
        let (status, _, body) = post_key(&app, &key).await;
        let ran = runs.load(Ordering::SeqCst) > before;
        match status {
            StatusCode::CREATED => acked.push((key, body)),
            StatusCode::SERVICE_UNAVAILABLE => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                match v["type"].as_str().unwrap() {
                    "urn:idemstore:problem:response-not-stored" => {
                        assert!(ran, "{key}: 'not stored' only after the handler ran");
                        kept.push(key);
                    }
                    "urn:idemstore:problem:store-unavailable" => {
                        assert!(!ran, "{key}: the handler must not run");
                        refused += 1;
                        if refused == 5 {
                            break;
                        }
                    }
                    other => panic!("{key}: unexpected problem {other}"),
                }
            }
            other => panic!("{key}: unexpected {other}"),
        }
    }
    assert_eq!(refused, 5, "a full disk must be noticed");
    for (key, body) in &acked {
        let (status, replayed, again) = post_key(&app, key).await;
        assert_eq!(
            (status, replayed),
            (StatusCode::CREATED, true),
            "{key} while the disk is full"
        );
        assert_eq!(&again, body, "{key}");
    }
    for key in &kept {
        let (status, _, _) = post_key(&app, key).await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "{key}: reserved, not run again"
        );
    }
    let ran_before_freeing = runs.load(Ordering::SeqCst);
    // Free the space: the store works again, without a restart, and writes
    // the responses it kept.
    std::fs::remove_file(filler).unwrap();
    for key in &kept {
        let mut replayed = false;
        for _ in 0..100 {
            let (status, r, body) = post_key(&app, key).await;
            if status == StatusCode::CONFLICT {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            assert_eq!((status, r), (StatusCode::CREATED, true), "{key}");
            acked.push((key.clone(), body));
            replayed = true;
            break;
        }
        assert!(
            replayed,
            "{key}: its kept response is written once there is room"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), ran_before_freeing);
    let mut resumed = false;
    for i in 0..100 {
        let key = format!("after-{i}");
        let (status, _, body) = post_key(&app, &key).await;
        if status == StatusCode::SERVICE_UNAVAILABLE && !resumed {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(status, StatusCode::CREATED, "{key}");
        resumed = true;
        acked.push((key, body));
        if acked
            .iter()
            .filter(|(k, _)| k.starts_with("after-"))
            .count()
            == 20
        {
            break;
        }
    }
    assert!(
        resumed,
        "the store resumes by itself once the disk has room"
    );
    for (key, body) in &acked {
        let (status, replayed, again) = post_key(&app, key).await;
        assert_eq!((status, replayed), (StatusCode::CREATED, true), "{key}");
        assert_eq!(&again, body, "{key}");
    }
    store.close().unwrap();
    drop(app);
    let store = Store::open(&data, config()).unwrap();
    assert_eq!(store.recovery_report().unreadable_segments.len(), 0);
    let app = Router::new()
        .route(
            "/v1/payments",
            post(|| async { (StatusCode::CREATED, "must not run") }),
        )
        .layer(IdempotencyLayer::new(
            store.clone(),
            IdempotencyConfig::new(TenantSource::Single).max_response_bytes(16 << 10),
        ));
    for (key, body) in &acked {
        let (_, replayed, again) = post_key(&app, key).await;
        assert!(replayed, "{key} after reopen");
        assert_eq!(&again, body);
    }
    store.close().unwrap();
}

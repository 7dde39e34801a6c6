//! The layer's decision table in front of an axum router, in-process
//! (`tower::ServiceExt::oneshot`): which requests it covers, malformed and
//! missing keys, replays marked as such, 422 for a different request under the
//! same key, 409 (or waiting) while the first runs, tenants, duplicates that
//! run once, renewed leases and the Retry-After estimate.

#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{HeaderName, Request, StatusCode};
use common::{App, KEY, Runs, app, app_on, open_store, routes, send};
use http_body_util::BodyExt;
use idemstore::{Config, ManualClock, Store, Timestamp};
use idemstore_http::{FingerprintSpec, IdempotencyConfig, InFlightPolicy, TenantSource};
use std::time::Duration;
use tower::ServiceExt;

#[tokio::test]
async fn uncovered_methods_and_keyless_requests_pass_through_untouched() {
    let a = app(IdempotencyConfig::new(TenantSource::Single));
    for _ in 0..2 {
        let r = send(&a, "GET", "/200", &[KEY], "").await;
        assert!(!r.replayed());
        let r = send(&a, "POST", "/201", &[], "{}").await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert!(!r.replayed());
    }
    assert_eq!(a.runs.get(), 4);
}

#[tokio::test]
async fn a_required_key_that_is_missing_is_400() {
    let a = app(IdempotencyConfig::new(TenantSource::Single).key_required(true));
    let r = send(&a, "POST", "/201", &[], "{}").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.problem_type(), "key-missing");
    assert!(r.text().contains("idempotency-key"));
    assert_eq!(a.runs.get(), 0);
}

#[tokio::test]
async fn malformed_keys_are_400_and_say_why() {
    let a = app(IdempotencyConfig::new(TenantSource::Single));
    let long = "k".repeat(256);
    for (key, why) in [
        ("has space", "0x20"),
        (long.as_str(), "256 characters"),
        ("\"unterminated", "structured-field"),
        ("\"\"", "0 characters"),
    ] {
        let r = send(&a, "POST", "/201", &[("idempotency-key", key)], "{}").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{key}");
        assert_eq!(r.problem_type(), "key-malformed");
        assert!(r.text().contains(why), "{key}: {}", r.text());
    }
    let r = send(
        &a,
        "POST",
        "/201",
        &[KEY, ("idempotency-key", "other")],
        "{}",
    )
    .await;
    assert_eq!(r.problem_type(), "key-malformed");
    assert_eq!(a.runs.get(), 0);
}

#[tokio::test]
async fn the_draft_quoted_form_and_the_plain_form_name_the_same_key() {
    let a = app(IdempotencyConfig::new(TenantSource::Single));
    let first = send(
        &a,
        "POST",
        "/201",
        &[("idempotency-key", "\"abc-1\"")],
        "{}",
    )
    .await;
    let again = send(&a, "POST", "/201", &[("idempotency-key", "abc-1")], "{}").await;
    assert!(again.replayed());
    assert_eq!(again.body, first.body);
    assert_eq!(a.runs.get(), 1);
}

#[tokio::test]
async fn a_retry_gets_the_stored_status_headers_and_body_marked_as_replayed() {
    let a = app(IdempotencyConfig::new(TenantSource::Single));
    let first = send(&a, "POST", "/201?hop", &[KEY], "{\"a\":1}").await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.replayed());
    for _ in 0..3 {
        let again = send(&a, "POST", "/201?hop", &[KEY], "{\"a\":1}").await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert!(again.replayed());
        assert_eq!(again.body, first.body);
        assert_eq!(again.headers["x-run"], "1");
        assert_eq!(again.headers["content-type"], "text/plain");
        // Hop-by-hop headers (and those Connection names) are not replayed.
        assert!(again.headers.get("keep-alive").is_none());
        assert!(again.headers.get("x-secret-hop").is_none());
        assert!(again.headers.get("connection").is_none());
    }
    assert_eq!(a.runs.get(), 1);
}

#[tokio::test]
async fn same_key_different_request_is_422() {
    let a = app(IdempotencyConfig::new(TenantSource::Single));
    send(&a, "POST", "/201", &[KEY], "{\"a\":1}").await;
    for (m, uri, body) in [
        ("POST", "/201", "{\"a\":2}"),
        ("POST", "/201?x=1", "{\"a\":1}"),
        ("PATCH", "/201", "{\"a\":1}"),
    ] {
        let r = send(&a, m, uri, &[KEY], body).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{m} {uri} {body}"
        );
        assert_eq!(r.problem_type(), "request-mismatch");
    }
    assert_eq!(a.runs.get(), 1);
}

#[tokio::test]
async fn the_fingerprint_covers_exactly_the_configured_parts() {
    let spec = FingerprintSpec {
        method: true,
        path_and_query: false,
        body: true,
        headers: vec![HeaderName::from_static("x-account")],
        json: None,
    };
    let a = app(IdempotencyConfig::new(TenantSource::Single).fingerprint(spec));
    send(&a, "POST", "/201?page=1", &[KEY, ("x-account", "7")], "b").await;
    // Query not covered: a replay.
    assert!(
        send(&a, "POST", "/201?page=2", &[KEY, ("x-account", "7")], "b")
            .await
            .replayed()
    );
    // A covered header differs: a mismatch.
    let r = send(&a, "POST", "/201?page=1", &[KEY, ("x-account", "8")], "b").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.runs.get(), 1);
}

#[tokio::test]
async fn same_key_while_the_first_runs_is_409_with_retry_after() {
    let a = app(IdempotencyConfig::new(TenantSource::Single));
    let slow = {
        let router = a.router.clone();
        tokio::spawn(async move {
            let req = Request::post("/201?sleep=300")
                .header(KEY.0, KEY.1)
                .body(Body::from("{}"))
                .unwrap();
            router.oneshot(req).await.unwrap().status()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = send(&a, "POST", "/201?sleep=300", &[KEY], "{}").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.problem_type(), "request-in-flight");
    assert_eq!(
        r.headers["retry-after"], "1",
        "no figures for this path yet: come back soon, not at the lease's end (60 s)"
    );
    // A different request with the key in flight is a mismatch right away.
    let r = send(&a, "POST", "/201?sleep=300", &[KEY], "{\"other\":1}").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(slow.await.unwrap(), StatusCode::CREATED);
    assert!(
        send(&a, "POST", "/201?sleep=300", &[KEY], "{}")
            .await
            .replayed()
    );
    assert_eq!(a.runs.get(), 1);
}

#[tokio::test]
async fn the_wait_option_replays_the_first_response_instead_of_409() {
    let a = app(IdempotencyConfig::new(TenantSource::Single)
        .in_flight(InFlightPolicy::Wait(Duration::from_secs(5))));
    let slow = {
        let router = a.router.clone();
        tokio::spawn(async move {
            let req = Request::post("/201?sleep=300")
                .header(KEY.0, KEY.1)
                .body(Body::from("{}"))
                .unwrap();
            let r = router.oneshot(req).await.unwrap();
            r.into_body().collect().await.unwrap().to_bytes()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waited = send(&a, "POST", "/201?sleep=300", &[KEY], "{}").await;
    assert_eq!(waited.status, StatusCode::CREATED);
    assert!(waited.replayed());
    assert_eq!(waited.body, slow.await.unwrap());
    assert_eq!(a.runs.get(), 1);
}

#[tokio::test]
async fn the_wait_option_gives_up_with_409_after_its_timeout() {
    let a = app(IdempotencyConfig::new(TenantSource::Single)
        .in_flight(InFlightPolicy::Wait(Duration::from_millis(100))));
    let router = a.router.clone();
    let slow = tokio::spawn(async move {
        let req = Request::post("/201?sleep=600")
            .header(KEY.0, KEY.1)
            .body(Body::from("{}"))
            .unwrap();
        router.oneshot(req).await.unwrap().status()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = send(&a, "POST", "/201?sleep=600", &[KEY], "{}").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    slow.await.unwrap();
}

#[tokio::test]
async fn the_same_key_from_another_tenant_is_independent() {
    let a = app(IdempotencyConfig::new(TenantSource::Header(
        HeaderName::from_static("x-api-key"),
    )));
    let alice = send(&a, "POST", "/201", &[KEY, ("x-api-key", "alice")], "{}").await;
    let bob = send(&a, "POST", "/201", &[KEY, ("x-api-key", "bob")], "{}").await;
    assert!(!bob.replayed());
    assert_ne!(alice.body, bob.body);
    assert_eq!(
        send(&a, "POST", "/201", &[KEY, ("x-api-key", "alice")], "{}")
            .await
            .body,
        alice.body
    );
    assert_eq!(
        send(&a, "POST", "/201", &[KEY, ("x-api-key", "bob")], "{}")
            .await
            .body,
        bob.body
    );
    // Without a tenant, a covered request cannot be scoped: 401.
    let r = send(&a, "POST", "/201", &[KEY], "{}").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.problem_type(), "tenant-missing");
    assert_eq!(a.runs.get(), 2);
}

#[derive(Clone)]
struct Account(u64);

#[tokio::test]
async fn the_tenant_can_come_from_an_auth_layers_extension() {
    let (store, dir) = open_store(Config::default());
    let runs = Runs::default();
    let cfg = IdempotencyConfig::new(TenantSource::extension(|a: &Account| {
        a.0.to_le_bytes().to_vec()
    }));
    let router = routes(store, cfg)
        .layer(axum::middleware::from_fn(
            |mut req: axum::extract::Request, next: axum::middleware::Next| async move {
                // The "auth layer": the account is derived from a bearer token.
                let account = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(|t| t.len() as u64);
                if let Some(a) = account {
                    req.extensions_mut().insert(Account(a));
                }
                next.run(req).await
            },
        ))
        .with_state(runs.clone());
    let a = App {
        router,
        runs,
        store: Store::open(tempfile::tempdir().unwrap().path(), Config::default()).unwrap(),
        clock: ManualClock::new(Timestamp(0)),
        _dir: dir,
    };
    let one = send(&a, "POST", "/201", &[KEY, ("authorization", "aaa")], "{}").await;
    let two = send(&a, "POST", "/201", &[KEY, ("authorization", "bbbb")], "{}").await;
    assert_ne!(one.body, two.body);
    assert!(
        send(&a, "POST", "/201", &[KEY, ("authorization", "ccc")], "{}")
            .await
            .replayed(),
        "same account (length 3)"
    );
    assert_eq!(
        send(&a, "POST", "/201", &[KEY], "{}").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(a.runs.get(), 2);
}

#[tokio::test]
async fn a_tenant_header_sent_twice_is_400_and_the_handler_does_not_run() {
    let a = app(IdempotencyConfig::new(TenantSource::Header(
        HeaderName::from_static("x-api-key"),
    )));
    let r = send(
        &a,
        "POST",
        "/201",
        &[KEY, ("x-api-key", "alice"), ("x-api-key", "bob")],
        "{}",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.problem_type(), "tenant-ambiguous");
    assert_eq!(a.runs.get(), 0);
}

#[tokio::test]
async fn fifty_simultaneous_duplicates_execute_once() {
    let a = app(IdempotencyConfig::new(TenantSource::Single)
        .in_flight(InFlightPolicy::Wait(Duration::from_secs(10))));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let router = a.router.clone();
            tokio::spawn(async move {
                let req = Request::post("/201?sleep=50")
                    .header(KEY.0, KEY.1)
                    .body(Body::from("{}"))
                    .unwrap();
                let r = router.oneshot(req).await.unwrap();
                (
                    r.status(),
                    r.into_body().collect().await.unwrap().to_bytes(),
                )
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::CREATED);
        bodies.push(body);
    }
    assert_eq!(a.runs.get(), 1);
    assert!(bodies.iter().all(|b| *b == bodies[0]));
}

#[tokio::test]
async fn a_handler_longer_than_the_lease_keeps_its_key() {
    // Store lease 300 ms; the handler takes 1 s. The layer renews the lease
    // (every 100 ms), so a duplicate still sees the first in flight at 600 ms.
    let (store, dir) = open_store(Config::default().lease(Duration::from_millis(300)));
    let a = app_on(
        store,
        ManualClock::new(Timestamp(0)),
        dir,
        IdempotencyConfig::new(TenantSource::Single),
    );
    let first = {
        let router = a.router.clone();
        tokio::spawn(async move {
            let req = Request::post("/201?sleep=1000")
                .header(KEY.0, KEY.1)
                .body(Body::from("{}"))
                .unwrap();
            router.oneshot(req).await.unwrap().status()
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    let dup = send(&a, "POST", "/201?sleep=1000", &[KEY], "{}").await;
    assert_eq!(dup.status, StatusCode::CONFLICT, "{}", dup.text());
    assert_eq!(first.await.unwrap(), StatusCode::CREATED);
    assert!(
        send(&a, "POST", "/201?sleep=1000", &[KEY], "{}")
            .await
            .replayed()
    );
    assert_eq!(a.runs.get(), 1);
}

#[tokio::test]
async fn retry_after_estimates_the_rest_of_the_running_request_from_recent_durations() {
    let a = app(IdempotencyConfig::new(TenantSource::Single));
    // One request on the path takes ~2 s and sets the path's figure.
    let r = send(
        &a,
        "POST",
        "/201?sleep=2000",
        &[("idempotency-key", "a")],
        "{}",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let slow = {
        let router = a.router.clone();
        tokio::spawn(async move {
            let req = Request::post("/201?sleep=2000")
                .header("idempotency-key", "b")
                .body(Body::from("{}"))
                .unwrap();
            router.oneshot(req).await.unwrap().status()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = send(
        &a,
        "POST",
        "/201?sleep=2000",
        &[("idempotency-key", "b")],
        "{}",
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    // The store's clock is frozen in this test (running_for reads 0), so the
    // estimate is the path's figure: 2 s and a little, rounded up.
    assert!((2..=3).contains(&secs), "{secs}");
    assert_eq!(slow.await.unwrap(), StatusCode::CREATED);
}

#[tokio::test]
async fn the_replay_header_can_be_named_as_a_client_expects() {
    let a = app(IdempotencyConfig::new(TenantSource::Single)
        .replayed_header(HeaderName::from_static("idempotency-replayed")));
    let h = [("idempotency-key", "named")];
    let first = send(&a, "POST", "/201", &h, "x").await;
    assert!(!first.headers.contains_key("idempotency-replayed"));
    let again = send(&a, "POST", "/201", &h, "x").await;
    assert_eq!(again.headers["idempotency-replayed"], "true");
    assert!(!again.headers.contains_key("idempotent-replayed"));
    assert_eq!(again.body, first.body);
}

#[tokio::test]
async fn past_max_in_flight_a_request_gets_503_and_nothing_is_reserved() {
    let a = app(IdempotencyConfig::new(TenantSource::Single).max_in_flight(1));
    let slow = {
        let router = a.router.clone();
        tokio::spawn(async move {
            let req = Request::post("/201?sleep=300")
                .header("idempotency-key", "slow")
                .body(Body::from("x"))
                .unwrap();
            router.oneshot(req).await.unwrap().status()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let over = send(&a, "POST", "/201", &[("idempotency-key", "other")], "x").await;
    assert_eq!(over.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(over.problem_type(), "overloaded");
    assert_eq!(over.headers["retry-after"], "1");
    assert_eq!(slow.await.unwrap(), StatusCode::CREATED);
    assert_eq!(a.runs.get(), 1, "the refused request did not run");
    // Its key was not reserved: once there is room it runs.
    let later = send(&a, "POST", "/201", &[("idempotency-key", "other")], "x").await;
    assert_eq!(later.status, StatusCode::CREATED);
    assert!(!later.replayed());
    assert_eq!(a.runs.get(), 2);
}

#[tokio::test]
async fn the_expiry_header_says_when_the_key_expires_on_the_first_response_and_replays() {
    let name = HeaderName::from_static("idempotency-key-expires");
    let a = app(IdempotencyConfig::new(TenantSource::Single).expiry_header(name.clone()));
    let h = [("idempotency-key", "expiring")];
    let before = std::time::SystemTime::now();
    let first = send(&a, "POST", "/201", &h, "x").await;
    let after = std::time::SystemTime::now();
    // The store's default retention, 24 h, from now by the layer's clock
    // (the HTTP-date has whole seconds).
    let said = httpdate::parse_http_date(first.headers[&name].to_str().unwrap()).unwrap();
    let day = Duration::from_secs(24 * 3600);
    assert!(
        said + Duration::from_secs(1) >= before + day && said <= after + day,
        "{:?}",
        first.headers[&name]
    );
    // A replay says the stored expiry exactly: the test store's clock
    // (ManualClock at 1_800_000_000_000 ms) plus the retention.
    let again = send(&a, "POST", "/201", &h, "x").await;
    assert!(again.replayed());
    let stored = httpdate::parse_http_date(again.headers[&name].to_str().unwrap()).unwrap();
    assert_eq!(
        stored,
        std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + day
    );
    // Without the option, no such header.
    let plain = app(IdempotencyConfig::new(TenantSource::Single));
    let r = send(&plain, "POST", "/201", &h, "x").await;
    assert!(!r.headers.contains_key(&name));
}

#[tokio::test]
async fn a_key_refused_after_expiry_is_422_key_expired_and_never_runs() {
    let clock = ManualClock::new(Timestamp(1_800_000_000_000));
    let day = Duration::from_secs(24 * 3600);
    let (store, dir) = open_store(
        Config::default()
            .clock(std::sync::Arc::new(clock.clone()))
            .refuse_expired_keys_for(7 * day),
    );
    let a = app_on(
        store,
        clock,
        dir,
        IdempotencyConfig::new(TenantSource::Single),
    );
    let h = [("idempotency-key", "late")];
    assert_eq!(
        send(&a, "POST", "/201", &h, "x").await.status,
        StatusCode::CREATED
    );
    a.clock.advance(day);
    for body in ["x", "another request"] {
        let r = send(&a, "POST", "/201", &h, body).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
        assert_eq!(r.problem_type(), "key-expired");
        assert_eq!(r.headers["cache-control"], "no-store");
        // It names when the key expired and what to do.
        assert!(r.text().contains("Sat, 16 Jan 2027"), "{}", r.text());
        assert!(r.text().contains("new key"), "{}", r.text());
    }
    assert_eq!(a.runs.get(), 1, "the late retries did not run");
    // A new key runs; once the grace is over, so does the old one.
    let fresh = send(&a, "POST", "/201", &[("idempotency-key", "new")], "x").await;
    assert_eq!(fresh.status, StatusCode::CREATED);
    a.clock.advance(7 * day);
    let r = send(&a, "POST", "/201", &h, "x").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(!r.replayed());
    assert_eq!(a.runs.get(), 3);
}

//! A policy per route: one layer, and for the paths a pattern matches
//! another key header, key bounds, store policy, replay status,
//! fingerprint or retention; the first matching route wins, and other
//! paths keep the layer's settings. Bad routes are refused at startup.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{HeaderName, StatusCode};
use common::{KEY, app, send};
use idemstore::{Key, KeyState, Tenant};
use idemstore_http::{
    FingerprintSpec, IdempotencyConfig, IdempotencyLayer, ReplayStatus, RoutePolicy, StorePolicy,
    TenantSource,
};
use std::time::Duration;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn config() -> IdempotencyConfig {
    IdempotencyConfig::new(TenantSource::Single)
        .route(
            "/payouts/**",
            RoutePolicy::default()
                .retention(7 * DAY)
                .store(StorePolicy::SuccessOnly)
                .replay_status(ReplayStatus::Fixed(StatusCode::CONFLICT)),
        )
        .route(
            "/partner/{id}/201",
            RoutePolicy::default()
                .header(HeaderName::from_static("x-partner-key"))
                .key_len(10..=64)
                .key_required(true)
                .fingerprint(FingerprintSpec::json()),
        )
        // Never reached for /payouts: the first match wins.
        .route("/payouts/201", RoutePolicy::default().retention(2 * DAY))
}

/// How long the store keeps the record of `key` (tenant "Single").
fn kept_for(a: &common::App, key: &str) -> Duration {
    match a.store.get(Tenant::new(""), Key::new(key)).unwrap() {
        Some(KeyState::Completed(s)) => Duration::from_millis(s.expires_at.0 - s.completed_at.0),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_route_keeps_its_records_for_its_own_retention_and_replays_its_own_way() {
    let a = app(config());
    assert_eq!(
        send(&a, "POST", "/payouts/201", &[KEY], "{}").await.status,
        201
    );
    assert_eq!(kept_for(&a, "key-1"), 7 * DAY, "the first matching route's");
    let replay = send(&a, "POST", "/payouts/201", &[KEY], "{}").await;
    assert!(replay.replayed());
    assert_eq!(replay.status, StatusCode::CONFLICT, "its replay status");
    // Its store policy: a 500 is not stored, the retry runs again.
    let k = ("idempotency-key", "payout-500");
    send(&a, "POST", "/payouts/500", &[k], "{}").await;
    assert!(
        !send(&a, "POST", "/payouts/500", &[k], "{}")
            .await
            .replayed()
    );
    assert_eq!(a.runs.get(), 3);

    // Another path: the layer's own settings.
    let k = ("idempotency-key", "plain-1");
    send(&a, "POST", "/orders/500", &[k], "{}").await;
    let r = send(&a, "POST", "/orders/500", &[k], "{}").await;
    assert!(r.replayed() && r.status == StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(kept_for(&a, "plain-1"), DAY);

    // Past the default retention, the payout's key still replays.
    a.clock.advance(3 * DAY);
    assert!(
        send(&a, "POST", "/payouts/201", &[KEY], "{}")
            .await
            .replayed()
    );
    assert!(!send(&a, "POST", "/orders/500", &[k], "{}").await.replayed());
}

#[tokio::test]
async fn a_route_can_have_its_own_header_key_bounds_and_fingerprint() {
    let a = app(config());
    let path = "/partner/acme/201";
    // The standard header is not this route's: the key is missing.
    let r = send(&a, "POST", path, &[KEY], "{}").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.problem_type(), "key-missing");
    let short = send(&a, "POST", path, &[("x-partner-key", "short")], "{}").await;
    assert_eq!(short.problem_type(), "key-malformed", "under its 10 bytes");
    let k = ("x-partner-key", "partner-key-0001");
    send(&a, "POST", path, &[k], r#"{"a":1,"b":2}"#).await;
    let r = send(&a, "POST", path, &[k], r#"{ "b": 2, "a": 1 }"#).await;
    assert!(r.replayed(), "its JSON fingerprint: {}", r.text());
    assert_eq!(a.runs.get(), 1);
}

#[tokio::test]
async fn routes_that_cannot_work_are_refused_at_startup() {
    let refused = |c: IdempotencyConfig| {
        let (store, _dir) = common::open_store(idemstore::Config::default());
        IdempotencyLayer::try_new(store, c)
            .err()
            .unwrap()
            .to_string()
    };
    let base = || IdempotencyConfig::new(TenantSource::Single);
    assert!(
        refused(base().route("payouts", RoutePolicy::default())).contains("must start with '/'")
    );
    assert!(
        refused(base().route("/a/**/b", RoutePolicy::default())).contains("'**' must come last")
    );
    let e = refused(base().route(
        "/a",
        RoutePolicy::default().retention(Duration::from_secs(30)),
    ));
    assert!(e.contains("longer than the backend's lease"), "{e}");
    let e = refused(base().route("/a", RoutePolicy::default().key_len(1..=4096)));
    assert!(e.contains("the store only up to"), "{e}");
}

#[test]
fn a_json_pointer_without_its_leading_slash_is_refused_at_startup() {
    let (store, _dir) = common::open_store(idemstore::Config::default());
    let spec = FingerprintSpec {
        json: Some(idemstore_http::JsonBody {
            members: vec!["amount".into()],
        }),
        ..FingerprintSpec::default()
    };
    let config = IdempotencyConfig::new(TenantSource::Single)
        .route("/a", RoutePolicy::default().fingerprint(spec));
    let e = IdempotencyLayer::try_new(store, config).err().unwrap();
    assert!(
        e.to_string().contains("must be empty or start with '/'"),
        "{e}"
    );
}

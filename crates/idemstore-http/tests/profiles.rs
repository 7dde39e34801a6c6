//! Store policies, and the layer configured as public idempotent APIs
//! document their behaviour, each test named after what it pins.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{HeaderName, Method, StatusCode};
use common::{KEY, app, send};
use idemstore_http::{IdempotencyConfig, ReplayStatus, StorePolicy, TenantSource};
use std::time::Duration;

#[tokio::test]
async fn every_response_is_stored_and_replayed_including_500s() {
    // The first request's status and headers are kept whatever it
    // answered, server errors included; POST and PATCH are covered, keys run
    // up to 255 bytes, and a retry must send the same parameters.
    let a = app(IdempotencyConfig::new(TenantSource::Single).store(StorePolicy::All));
    let first = send(&a, "POST", "/500", &[KEY], "{}").await;
    assert_eq!(first.status, StatusCode::INTERNAL_SERVER_ERROR);
    let again = send(&a, "POST", "/500", &[KEY], "{}").await;
    assert_eq!(again.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(again.replayed());
    assert_eq!(
        send(&a, "PATCH", "/200", &[("idempotency-key", "patch-1")], "{}")
            .await
            .status,
        StatusCode::OK
    );
    assert!(
        send(&a, "PATCH", "/200", &[("idempotency-key", "patch-1")], "{}")
            .await
            .replayed()
    );
    assert_eq!(
        send(&a, "POST", "/500", &[KEY], "{\"changed\":1}")
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let ok = "k".repeat(255);
    assert_eq!(
        send(&a, "POST", "/201", &[("idempotency-key", &ok)], "{}")
            .await
            .status,
        StatusCode::CREATED
    );
    // DELETE and GET are not covered: the key has no effect on them.
    send(&a, "DELETE", "/200", &[KEY], "").await;
    assert!(!send(&a, "DELETE", "/200", &[KEY], "").await.replayed());
    assert_eq!(a.runs.get(), 5);
}

#[tokio::test]
async fn only_successful_responses_are_stored_and_failures_run_again() {
    // Only the first request that succeeds takes effect; identical
    // requests after it get that success back; keys run up to 255 bytes.
    let a = app(IdempotencyConfig::new(TenantSource::Single).store(StorePolicy::SuccessOnly));
    assert_eq!(
        send(&a, "POST", "/500", &[KEY], "{}").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        send(&a, "POST", "/402", &[KEY], "{}").await.status,
        StatusCode::PAYMENT_REQUIRED
    );
    // Neither failure was stored; the retry runs, and this success is kept.
    let ok = send(&a, "POST", "/201", &[KEY], "{}").await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let again = send(&a, "POST", "/201", &[KEY], "{}").await;
    assert!(again.replayed());
    assert_eq!(again.body, ok.body);
    assert_eq!(a.runs.get(), 3);
    let too_long = "k".repeat(256);
    assert_eq!(
        send(&a, "POST", "/201", &[("idempotency-key", &too_long)], "{}")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn non_server_errors_policy_stores_4xx_but_not_5xx() {
    let a = app(IdempotencyConfig::new(TenantSource::Single).store(StorePolicy::NonServerErrors));
    send(&a, "POST", "/503", &[KEY], "{}").await;
    assert!(!send(&a, "POST", "/503", &[KEY], "{}").await.replayed());
    send(&a, "POST", "/404", &[("idempotency-key", "k2")], "{}").await;
    assert!(
        send(&a, "POST", "/404", &[("idempotency-key", "k2")], "{}")
            .await
            .replayed()
    );
    assert_eq!(a.runs.get(), 3);
}

#[tokio::test]
async fn replays_as_409_with_original_body_under_x_idempotency_key_for_post_only() {
    // The key travels in X-Idempotency-Key, is 10 to 1024 characters long,
    // covers POST alone, and a replay carries the original body with a 409;
    // the body is part of what must match.
    let cfg = IdempotencyConfig::new(TenantSource::Single)
        .header(HeaderName::from_static("x-idempotency-key"))
        .methods([Method::POST])
        .key_len(10..=1024)
        .replay_status(ReplayStatus::Fixed(StatusCode::CONFLICT));
    let a = app(cfg);
    let key = ("x-idempotency-key", "e367c03e-3082-4c8e-b647-d6810761dcd4");
    let first = send(&a, "POST", "/200", &[key], "test=true").await;
    assert_eq!(first.status, StatusCode::OK);
    let again = send(&a, "POST", "/200", &[key], "test=true").await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body, first.body, "the original response body");
    assert_eq!(
        send(&a, "POST", "/200", &[key], "test=false").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        send(&a, "POST", "/200", &[("x-idempotency-key", "short")], "")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let max = "k".repeat(1024);
    assert_eq!(
        send(&a, "POST", "/200", &[("x-idempotency-key", &max)], "")
            .await
            .status,
        StatusCode::OK
    );
    let over = "k".repeat(1025);
    assert_eq!(
        send(&a, "POST", "/200", &[("x-idempotency-key", &over)], "")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    // The standard header name means nothing here; PATCH is not covered.
    send(&a, "POST", "/200", &[KEY], "").await;
    assert!(!send(&a, "POST", "/200", &[KEY], "").await.replayed());
    send(&a, "PATCH", "/200", &[key], "").await;
    assert!(!send(&a, "PATCH", "/200", &[key], "").await.replayed());
    assert_eq!(a.runs.get(), 6);
}

#[tokio::test]
async fn post_put_and_delete_replay_errors_too_and_keys_belong_to_the_api_key() {
    // POST, PUT and DELETE are covered with keys up to 255 characters; a
    // retry gets the identical result, errors included; a key belongs to the
    // API key that sent it.
    let cfg = IdempotencyConfig::new(TenantSource::Single)
        .methods([Method::POST, Method::PUT, Method::DELETE])
        .key_len(1..=255)
        .store(StorePolicy::All)
        .tenant(TenantSource::Header(HeaderName::from_static("x-api-key")));
    let a = app(cfg);
    for m in ["POST", "PUT", "DELETE"] {
        let key = format!("123e4567-e89b-12d3-a456-{m}");
        let k = ("idempotency-key", key.as_str());
        let uri = format!("/{m}/422");
        let first = send(&a, m, &uri, &[k, ("x-api-key", "one")], "{}").await;
        assert_eq!(first.status, StatusCode::UNPROCESSABLE_ENTITY);
        let again = send(&a, m, &uri, &[k, ("x-api-key", "one")], "{}").await;
        assert!(again.replayed(), "{m}");
        assert_eq!(again.body, first.body);
        let other_tenant = send(&a, m, &uri, &[k, ("x-api-key", "two")], "{}").await;
        assert!(
            !other_tenant.replayed(),
            "{m}: another API key is another scope"
        );
    }
    assert_eq!(a.runs.get(), 6);
}

#[tokio::test]
async fn only_the_covered_paths_and_a_second_resource_after_the_24_hour_retention() {
    // Only POSTs to the postcard, letter and check resources are covered;
    // a key lasts 24 hours, and the same request with the same key after
    // that creates a second resource.
    let covered = ["/v1/postcards", "/v1/letters", "/v1/checks"];
    let cfg = IdempotencyConfig::new(TenantSource::Single)
        .methods([Method::POST])
        .paths(move |p| covered.iter().any(|c| p.starts_with(c)));
    let a = app(cfg);
    let first = send(&a, "POST", "/v1/letters/201", &[KEY], "{}").await;
    assert!(
        send(&a, "POST", "/v1/letters/201", &[KEY], "{}")
            .await
            .replayed()
    );
    send(&a, "POST", "/v1/other/201", &[KEY], "{}").await;
    assert!(
        !send(&a, "POST", "/v1/other/201", &[KEY], "{}")
            .await
            .replayed(),
        "not a covered path"
    );
    a.clock.advance(Duration::from_secs(24 * 3600 - 1));
    assert!(
        send(&a, "POST", "/v1/letters/201", &[KEY], "{}")
            .await
            .replayed()
    );
    a.clock.advance(Duration::from_secs(1));
    let later = send(&a, "POST", "/v1/letters/201", &[KEY], "{}").await;
    assert!(!later.replayed());
    assert_ne!(later.body, first.body, "a second resource is created");
    assert_eq!(a.runs.get(), 4);
}

#[tokio::test]
async fn a_standard_webhooks_receiver_processes_each_webhook_id_once() {
    // Each delivery of one event carries the same webhook-id and body, and
    // its own timestamp and signature.
    let a = app(IdempotencyConfig::standard_webhooks(TenantSource::Single));
    let delivery = |ts: &'static str, sig: &'static str| {
        [
            ("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
            ("webhook-timestamp", ts),
            ("webhook-signature", sig),
        ]
    };
    let event = r#"{"type":"invoice.paid","data":{"id":"in_1"}}"#;
    let first = send(&a, "POST", "/204", &delivery("1796000000", "v1,aaa"), event).await;
    assert_eq!(first.status, StatusCode::NO_CONTENT);
    let retry = send(&a, "POST", "/204", &delivery("1796000030", "v1,bbb"), event).await;
    assert!(retry.replayed(), "timestamp and signature are not compared");
    assert_eq!(a.runs.get(), 1);
    // Another event under the same id is refused, and so is a delivery
    // without an id.
    let other = send(&a, "POST", "/204", &delivery("1796000060", "v1,ccc"), "{}").await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    let anonymous = send(&a, "POST", "/204", &[], event).await;
    assert_eq!(anonymous.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.runs.get(), 1);

    // A delivery the receiver failed is processed again on the retry.
    let failing = [("webhook-id", "msg_failing"), ("webhook-timestamp", "1")];
    assert_eq!(send(&a, "POST", "/503", &failing, event).await.status, 503);
    let again = send(&a, "POST", "/503", &failing, event).await;
    assert!(!again.replayed());
    assert_eq!(a.runs.get(), 3);
}

/// An IMF-fixdate `secs` seconds before now.
fn sent_ago(secs: u64) -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(secs))
}

#[tokio::test]
async fn oasis_repeatable_requests_accept_repeats_inside_the_window_and_412_outside() {
    let window = Duration::from_secs(300);
    let a = app(IdempotencyConfig::oasis_repeatable_requests(
        TenantSource::Single,
        window,
    ));
    let id = (
        "repeatability-request-id",
        "5e9e8c1c-6bf1-4a50-9e63-4ed3e0c1a7d2",
    );
    let recent = sent_ago(10);
    let headers = [id, ("repeatability-first-sent", recent.as_str())];
    let first = send(&a, "PUT", "/201", &headers, "{}").await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.headers["repeatability-result"], "accepted");
    let repeat = send(&a, "PUT", "/201", &headers, "{}").await;
    assert!(repeat.replayed());
    assert_eq!(repeat.headers["repeatability-result"], "accepted");
    assert_eq!(a.runs.get(), 1);

    // First sent before the window: refused, never run.
    let old = sent_ago(301);
    let late = [
        ("repeatability-request-id", "late-1"),
        ("repeatability-first-sent", old.as_str()),
    ];
    let r = send(&a, "POST", "/201", &late, "{}").await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.problem_type(), "repeatability-window-passed");
    assert_eq!(r.headers["repeatability-result"], "rejected");
    // No or a malformed first-sent date: 400.
    for bad in [
        &[("repeatability-request-id", "no-date")][..],
        &[
            ("repeatability-request-id", "bad-date"),
            ("repeatability-first-sent", "yesterday"),
        ],
    ] {
        let r = send(&a, "POST", "/201", bad, "{}").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.problem_type(), "first-sent-invalid");
        assert_eq!(r.headers["repeatability-result"], "rejected");
    }
    // The id reused with another request is rejected too.
    let other = send(&a, "PUT", "/201", &headers, "{\"x\":1}").await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.headers["repeatability-result"], "rejected");
    assert_eq!(a.runs.get(), 1);

    // Without a repeatability id: processed as usual, no result header.
    let plain = send(&a, "POST", "/201", &[], "{}").await;
    assert_eq!(plain.status, StatusCode::CREATED);
    assert!(!plain.headers.contains_key("repeatability-result"));
    assert_eq!(a.runs.get(), 2);
}

#[tokio::test]
async fn a_repeatability_window_longer_than_the_retention_is_refused_at_startup() {
    let (store, _dir) = common::open_store(idemstore::Config::default());
    let config = IdempotencyConfig::oasis_repeatable_requests(
        TenantSource::Single,
        Duration::from_secs(25 * 3600),
    );
    let e = idemstore_http::IdempotencyLayer::try_new(store, config)
        .err()
        .unwrap();
    assert!(e.to_string().contains("repeatability window"), "{e}");
}

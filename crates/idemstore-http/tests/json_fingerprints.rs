//! JSON-aware fingerprints: key order, whitespace and escapes do not make
//! a retry "another request"; numbers count as written; a body that is not
//! JSON falls back to its bytes; chosen members (JSON pointers) are all
//! that count; and a 422 names the members that differ, never their values.

#![allow(clippy::unwrap_used)]

mod common;

use common::{KEY, app, send};
use idemstore_http::{FingerprintSpec, IdempotencyConfig, JsonBody, TenantSource};

fn json_config() -> IdempotencyConfig {
    IdempotencyConfig::new(TenantSource::Single).fingerprint(FingerprintSpec::json())
}

fn problem_members(r: &common::Reply) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["members"]
        .as_array()
        .map(|a| a.iter().map(|m| m.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn key_order_and_whitespace_replay_and_a_422_names_the_members_that_differ() {
    let a = app(json_config());
    let first = r#"{"amount":500,"currency":"EUR","memo":"secret-memo"}"#;
    assert_eq!(send(&a, "POST", "/201", &[KEY], first).await.status, 201);
    let reordered = "{ \"memo\": \"secret\\u002dmemo\",\n  \"currency\":\"EUR\", \"amount\": 500 }";
    let r = send(&a, "POST", "/201", &[KEY], reordered).await;
    assert!(r.replayed(), "the same document: {}", r.text());

    let r = send(
        &a,
        "POST",
        "/201",
        &[KEY],
        r#"{"amount":700,"currency":"EUR","memo":"other","extra":true}"#,
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.problem_type(), "request-mismatch");
    assert_eq!(problem_members(&r), ["amount", "extra", "memo"]);
    assert!(
        r.text()
            .contains("the body differs in: amount, extra, memo")
    );
    assert!(
        !r.text().contains("700") && !r.text().contains("secret"),
        "names only, never values: {}",
        r.text()
    );
    // Numbers as written: 500.0 is not 500 to a handler that reads decimals.
    let r = send(
        &a,
        "POST",
        "/201",
        &[KEY],
        r#"{"amount":500.0,"currency":"EUR","memo":"secret-memo"}"#,
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(problem_members(&r), ["amount"]);
    assert_eq!(a.runs.get(), 1);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_compared_byte_for_byte() {
    let a = app(json_config());
    send(&a, "POST", "/201", &[KEY], "amount=5&currency=EUR").await;
    assert!(
        send(&a, "POST", "/201", &[KEY], "amount=5&currency=EUR")
            .await
            .replayed()
    );
    let r = send(&a, "POST", "/201", &[KEY], "currency=EUR&amount=5").await;
    assert_eq!(r.status, 422);
    assert!(problem_members(&r).is_empty(), "no members to name");
    // A JSON retry of a form body is another request too.
    let r = send(&a, "POST", "/201", &[KEY], r#"{"amount":5}"#).await;
    assert_eq!(r.status, 422);
    assert_eq!(a.runs.get(), 1);
}

#[tokio::test]
async fn only_the_chosen_members_count() {
    let spec = FingerprintSpec {
        json: Some(JsonBody {
            members: vec!["/amount".into(), "/customer/id".into()],
        }),
        ..FingerprintSpec::default()
    };
    let a = app(IdempotencyConfig::new(TenantSource::Single).fingerprint(spec));
    let first = r#"{"amount":5,"customer":{"id":"c_1","email":"a@example.com"},"trace":"t1"}"#;
    send(&a, "POST", "/201", &[KEY], first).await;
    let r = send(
        &a,
        "POST",
        "/201",
        &[KEY],
        r#"{"trace":"t2","customer":{"email":"b@example.com","id":"c_1"},"amount":5}"#,
    )
    .await;
    assert!(r.replayed(), "trace and email are not chosen: {}", r.text());
    let r = send(
        &a,
        "POST",
        "/201",
        &[KEY],
        r#"{"amount":5,"customer":{"id":"c_2"}}"#,
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(problem_members(&r), ["/customer/id"]);
    assert_eq!(a.runs.get(), 1);
}

#[tokio::test]
async fn the_default_fingerprint_compares_bytes() {
    let a = app(IdempotencyConfig::new(TenantSource::Single));
    send(&a, "POST", "/201", &[KEY], r#"{"a":1,"b":2}"#).await;
    let r = send(&a, "POST", "/201", &[KEY], r#"{"b":2,"a":1}"#).await;
    assert_eq!(r.status, 422, "bytes differ");
    assert!(problem_members(&r).is_empty());
}

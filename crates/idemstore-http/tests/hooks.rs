//! The application's hooks: told of each stored response and each replay,
//! with the key and the first execution's times; a panicking hook changes
//! nothing for the client.

#![allow(clippy::unwrap_used)]

mod common;

use common::{app, send};
use idemstore_http::{IdempotencyConfig, TenantSource};
use std::sync::{Arc, Mutex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_hear_of_every_stored_response_and_every_replay() {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let (s, r) = (seen.clone(), seen.clone());
    let config = IdempotencyConfig::new(TenantSource::Single)
        .on_stored(move |e| {
            let id = e.first_request_id.unwrap_or("-");
            s.lock()
                .unwrap()
                .push(format!("stored {} {} {id}", e.key, e.status));
        })
        .on_replayed(move |e| {
            let first = e.first_started_at.unwrap();
            let stored = e.stored_at.unwrap();
            assert!(first <= stored);
            let id = e.first_request_id.unwrap_or("-");
            r.lock()
                .unwrap()
                .push(format!("replayed {} {} {id}", e.key, e.status));
        });
    let app = app(config);
    let k = |k: &'static str| [("idempotency-key", k)];
    let traced = [
        ("idempotency-key", "a"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ];
    send(&app, "POST", "/201", &traced, "x").await;
    send(&app, "POST", "/500", &k("b"), "x").await;
    send(&app, "POST", "/201", &k("a"), "x").await;
    send(&app, "POST", "/201", &k("a"), "y").await; // mismatch: neither
    send(&app, "GET", "/200", &k("c"), "").await; // not covered: neither
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "stored a 201 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "stored b 500 -",
            "replayed a 201 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_hook_changes_nothing_for_the_client() {
    let config = IdempotencyConfig::new(TenantSource::Single)
        .on_stored(|_| panic!("a broken hook"))
        .on_replayed(|_| panic!("a broken hook"));
    let app = app(config);
    let h = [("idempotency-key", "a")];
    let first = send(&app, "POST", "/201", &h, "x").await;
    assert_eq!(first.status, 201);
    let again = send(&app, "POST", "/201", &h, "x").await;
    assert!(again.replayed());
    assert_eq!(again.body, first.body);
    assert_eq!(app.runs.get(), 1);
}

//! The span of a keyed request, as a log subscriber sees it: digests of
//! the tenant and key (never the raw values), the outcome, the fencing
//! token, and a replay's line naming the first execution: its request id
//! and when it ran.

#![allow(clippy::unwrap_used)]

mod common;

use common::{app, send};
use idemstore_http::{IdempotencyConfig, TenantSource};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Everything the subscriber writes, kept.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread (the default test runtime), so the subscriber set for it sees
// the handler's task too.
#[tokio::test]
async fn a_keyed_request_has_a_span_with_digests_outcome_and_token() {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let tenant = TenantSource::Header(http::HeaderName::from_static("x-tenant"));
    let app = app(IdempotencyConfig::new(tenant));
    let h = [
        ("idempotency-key", "secret-key-1"),
        ("x-tenant", "acme-tenant"),
    ];
    let first = [h[0], h[1], ("x-request-id", "req-first-0001")];
    assert_eq!(send(&app, "POST", "/201", &first, "x").await.status, 201);
    let retry = [h[0], h[1], ("x-request-id", "req-retry-0002")];
    let replay = send(&app, "POST", "/201", &retry, "x").await;
    assert!(replay.replayed());
    assert!(
        replay
            .headers
            .keys()
            .all(|n| !n.as_str().contains("request-id")),
        "the kept request id is not replayed: {:?}",
        replay.headers
    );

    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let spans: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("idempotency{"))
        .collect();
    assert!(
        spans
            .iter()
            .any(|l| l.contains("outcome=\"executed\"") && l.contains("token=")),
        "the first request's span closes with its outcome and token:\n{text}"
    );
    assert!(
        spans.iter().any(|l| l.contains("outcome=\"replayed\"")
            && l.contains("replaying the response of the key's first execution")
            && l.contains("first_started_at_ms=")
            && l.contains("first_request_id=\"req-first-0001\"")),
        "the replay says what it replays:\n{text}"
    );
    assert!(
        spans
            .iter()
            .all(|l| l.contains("tenant=") && l.contains("key=")),
        "{text}"
    );
    assert!(
        !text.contains("secret-key-1") && !text.contains("acme-tenant"),
        "only digests, never the raw tenant or key:\n{text}"
    );
}

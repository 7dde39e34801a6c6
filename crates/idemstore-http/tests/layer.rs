//! Behaviour of the layer in front of an axum router, in-process
//! (`tower::ServiceExt::oneshot`). The "profiles" near the end configure the
//! layer as public idempotent APIs document their behaviour, each test named
//! after what it pins.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use axum::routing::any;
use http_body_util::BodyExt;
use idemstore::{Config, ManualClock, Store, Timestamp};
use idemstore_http::{
    FingerprintSpec, IdempotencyConfig, IdempotencyLayer, InFlightPolicy, OversizeResponse,
    REPLAYED, ReplayStatus, StorePolicy, TenantSource,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tower::ServiceExt;

/// Counts handler executions.
#[derive(Clone, Default)]
struct Runs(Arc<AtomicUsize>);

impl Runs {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// `/{status}`: answers that status with a body naming the execution;
/// `?sleep=ms` first sleeps; `?big=n` answers n bytes; `?panic` panics;
/// `?hop` adds hop-by-hop headers.
async fn handler(
    State(runs): State<Runs>,
    Path(status): Path<u16>,
    method: Method,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response<Body> {
    let n = runs.0.fetch_add(1, Ordering::SeqCst) + 1;
    let q = uri.query().unwrap_or("");
    if let Some(ms) = q.strip_prefix("sleep=") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
    }
    assert!(q != "panic", "handler panicked on purpose");
    if q == "failbody" {
        let mut r = Response::new(Body::new(FailingStream(false)));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        return r;
    }
    let body = match q.strip_prefix("big=") {
        Some(n) => Body::from(vec![b'x'; n.parse().unwrap()]),
        None => Body::from(format!("run {n}: {method} {} bytes", body.len())),
    };
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert("x-run", HeaderValue::from(n));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    if q == "hop" {
        r.headers_mut()
            .insert("connection", HeaderValue::from_static("x-secret-hop"));
        r.headers_mut()
            .insert("x-secret-hop", HeaderValue::from_static("1"));
        r.headers_mut()
            .insert("keep-alive", HeaderValue::from_static("timeout=5"));
    }
    r
}

struct App {
    router: Router,
    runs: Runs,
    store: Store,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

/// The test routes on a store with an injected clock and keys up to 1024 bytes.
fn app(config: IdempotencyConfig) -> App {
    let clock = ManualClock::new(Timestamp(1_800_000_000_000));
    let (store, dir) = open_store(
        Config::default()
            .clock(Arc::new(clock.clone()))
            .key_len(1..=1024),
    );
    app_on(store, clock, dir, config)
}

/// A store in a fresh directory, which lives as long as the returned guard.
fn open_store(config: Config) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config).unwrap();
    (store, dir)
}

/// The test routes (`/{*status}`, [`handler_path`]) behind the layer on `store`.
fn routes(store: Store, config: IdempotencyConfig) -> Router<Runs> {
    Router::new()
        .route("/{*status}", any(handler_path))
        .layer(IdempotencyLayer::new(store, config))
}

/// An [`App`] serving the test routes behind the layer on `store`, counting runs.
fn app_on(
    store: Store,
    clock: ManualClock,
    dir: tempfile::TempDir,
    config: IdempotencyConfig,
) -> App {
    let runs = Runs::default();
    let router = routes(store.clone(), config).with_state(runs.clone());
    App {
        router,
        runs,
        store,
        clock,
        _dir: dir,
    }
}

/// Routes `/any/prefix/.../{status}`: the status is the last path segment.
async fn handler_path(
    state: State<Runs>,
    Path(path): Path<String>,
    method: Method,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response<Body> {
    let status = path.rsplit('/').next().unwrap().parse().unwrap_or(200);
    handler(state, Path(status), method, uri, body).await
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn replayed(&self) -> bool {
        self.headers.get(REPLAYED).is_some_and(|v| v == "true")
    }
    fn problem_type(&self) -> String {
        assert_eq!(
            self.headers["content-type"],
            "application/problem+json",
            "{}",
            self.text()
        );
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(v["status"], self.status.as_u16());
        v["type"]
            .as_str()
            .unwrap()
            .trim_start_matches("urn:idemstore:problem:")
            .to_owned()
    }
}

async fn send(app: &App, method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = app
        .router
        .clone()
        .oneshot(b.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

const KEY: (&str, &str) = ("idempotency-key", "key-1");

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
async fn a_request_over_the_limit_is_413_and_the_handler_does_not_run() {
    let a = app(IdempotencyConfig::new(TenantSource::Single).max_request_bytes(16));
    let r = send(&a, "POST", "/201", &[KEY], &"x".repeat(17)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.problem_type(), "request-too-large");
    assert_eq!(
        send(&a, "POST", "/201", &[KEY], &"x".repeat(16))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(a.runs.get(), 1);
}

#[tokio::test]
async fn a_response_over_the_limit_is_sent_whole_and_a_retry_learns_it_ran() {
    let a = app(IdempotencyConfig::new(TenantSource::Single).max_response_bytes(1000));
    let first = send(&a, "POST", "/201?big=5000", &[KEY], "{}").await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(
        first.body.len(),
        5000,
        "the first client gets the whole response"
    );
    let retry = send(&a, "POST", "/201?big=5000", &[KEY], "{}").await;
    assert_eq!(retry.status, StatusCode::CONFLICT);
    assert!(retry.replayed());
    assert_eq!(retry.problem_type(), "response-not-replayable");
    assert_eq!(a.runs.get(), 1, "the handler never runs twice");
}

#[tokio::test]
async fn a_response_over_the_limit_can_free_the_key_instead() {
    let a = app(IdempotencyConfig::new(TenantSource::Single)
        .max_response_bytes(1000)
        .oversize(OversizeResponse::Release));
    assert_eq!(
        send(&a, "POST", "/201?big=5000", &[KEY], "{}")
            .await
            .body
            .len(),
        5000
    );
    let retry = send(&a, "POST", "/201?big=5000", &[KEY], "{}").await;
    assert!(!retry.replayed());
    assert_eq!(a.runs.get(), 2);
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
async fn a_request_body_that_fails_is_400_and_nothing_is_reserved() {
    let a = app(IdempotencyConfig::new(TenantSource::Single));
    let failing = Body::new(FailingStream(false));
    let req = Request::post("/201")
        .header(KEY.0, KEY.1)
        .body(failing)
        .unwrap();
    let r = a.router.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        send(&a, "POST", "/201", &[KEY], "{}").await.status,
        StatusCode::CREATED
    );
}

/// Yields one chunk, then an error.
struct FailingStream(bool);

impl http_body::Body for FailingStream {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if self.0 {
            return std::task::Poll::Ready(Some(Err(std::io::Error::other("client reset"))));
        }
        self.0 = true;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b"{")))))
    }
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

// ---- store policies ----------------------------------------------------

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
async fn a_response_body_that_fails_is_a_500_judged_by_the_store_policy() {
    let a = app(IdempotencyConfig::new(TenantSource::Single));
    let r = send(&a, "POST", "/201?failbody", &[KEY], "{}").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.problem_type(), "handler-failed");
    let again = send(&a, "POST", "/201?failbody", &[KEY], "{}").await;
    assert!(again.replayed(), "stored as a 500 under StorePolicy::All");
    assert_eq!(a.runs.get(), 1);

    let a = app(IdempotencyConfig::new(TenantSource::Single).store(StorePolicy::NonServerErrors));
    assert_eq!(
        send(&a, "POST", "/201?failbody", &[KEY], "{}").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let again = send(&a, "POST", "/201?failbody", &[KEY], "{}").await;
    assert!(!again.replayed(), "not stored: the key was freed");
    assert_eq!(a.runs.get(), 2);
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

/// Yields "slow" after `ms`, then ends.
struct SlowBody(Option<std::pin::Pin<Box<tokio::time::Sleep>>>);

impl http_body::Body for SlowBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        let Some(sleep) = self.0.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        match sleep.as_mut().poll(cx) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(()) => {
                self.0 = None;
                std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
                    b"slow",
                )))))
            }
        }
    }
}

#[tokio::test]
async fn a_client_gone_after_the_handler_ran_still_gets_its_response_stored() {
    let (store, _dir) = open_store(Config::default());
    let runs = Arc::new(AtomicUsize::new(0));
    let router = {
        let runs = runs.clone();
        Router::new()
            .route(
                "/pay",
                axum::routing::post(move || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    async {
                        let body = SlowBody(Some(Box::pin(tokio::time::sleep(
                            Duration::from_millis(300),
                        ))));
                        (StatusCode::CREATED, Body::new(body))
                    }
                }),
            )
            .layer(IdempotencyLayer::new(
                store,
                IdempotencyConfig::new(TenantSource::Single),
            ))
    };
    let req = || {
        Request::post("/pay")
            .header(KEY.0, KEY.1)
            .body(Body::from("{}"))
            .unwrap()
    };
    // The head arrives at once (the body streams); the client gives up
    // while the body is still being produced.
    let first = router.clone().oneshot(req()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    drop(first);
    let r = router.clone().oneshot(req()).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "still being read and stored"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = router.clone().oneshot(req()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(
        r.headers().contains_key(REPLAYED),
        "the handler ran: its response was stored"
    );
    assert_eq!(
        r.into_body().collect().await.unwrap().to_bytes().as_ref(),
        b"slow"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
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
async fn a_response_whose_headers_overflow_the_record_stores_the_notice_not_freeing_the_key() {
    let (store, _dir) = open_store(Config::default().max_record_bytes(64 << 10));
    let runs = Arc::new(AtomicUsize::new(0));
    let router = {
        let runs = runs.clone();
        Router::new().route(
            "/pay",
            axum::routing::post(move || {
                runs.fetch_add(1, Ordering::SeqCst);
                async { ([("x-huge", "h".repeat(40_000))], "x".repeat(30_000)) }
            })
            .route_layer(IdempotencyLayer::new(
                store,
                IdempotencyConfig::new(TenantSource::Single).max_response_bytes(32 << 10),
            )),
        )
    };
    let req = || {
        Request::post("/pay")
            .header(KEY.0, KEY.1)
            .body(Body::empty())
            .unwrap()
    };
    let first = router.clone().oneshot(req()).await.unwrap();
    assert_eq!(
        first.status(),
        StatusCode::OK,
        "the first client gets it all"
    );
    let retry = router.clone().oneshot(req()).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CONFLICT);
    assert!(retry.headers().contains_key(REPLAYED));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "never run twice");
}

/// A body that yields a chunk every 20 ms forever, and notes when it is
/// dropped.
struct Endless(
    std::pin::Pin<Box<tokio::time::Interval>>,
    Arc<std::sync::atomic::AtomicBool>,
);

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        match self.0.as_mut().poll_tick(cx) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(_) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(
                Bytes::from_static(b"tick "),
            )))),
        }
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.1.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn an_endless_stream_stores_the_notice_at_the_capture_deadline_and_stops_once_its_client_leaves()
 {
    let (store, _dir) = open_store(Config::default());
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let layer = IdempotencyLayer::new(
        store,
        IdempotencyConfig::new(TenantSource::Single).capture_timeout(Duration::from_millis(300)),
    );
    let work = layer.in_flight_work();
    let router = {
        let dropped = dropped.clone();
        Router::new().route(
            "/events",
            axum::routing::post(move || {
                let dropped = dropped.clone();
                async move {
                    let tick = tokio::time::interval(Duration::from_millis(20));
                    Body::new(Endless(Box::pin(tick), dropped))
                }
            })
            .route_layer(layer),
        )
    };
    let req = || {
        Request::post("/events")
            .header(KEY.0, KEY.1)
            .body(Body::empty())
            .unwrap()
    };
    // The first client reads the stream as it comes.
    let first = router.clone().oneshot(req()).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let mut body = first.into_body();
    let chunk = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(chunk.starts_with(b"tick"));
    // A retry before the deadline: still running.
    let r = router.clone().oneshot(req()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Past the deadline the notice is stored, while the first client still
    // reads.
    let r = router.clone().oneshot(req()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.headers().contains_key(REPLAYED), "the notice, replayed");
    assert!(body.frame().await.unwrap().is_ok(), "still streaming");
    assert_eq!(work.count(), 1);
    assert!(!dropped.load(Ordering::SeqCst));
    // The client leaves: nothing needs the body any more.
    drop(body);
    tokio::time::timeout(Duration::from_secs(5), work.idle())
        .await
        .expect("the work ends once its client is gone");
    assert!(dropped.load(Ordering::SeqCst), "the body was dropped");
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

/// `frames` chunks as fast as asked, then `end`: an error, or a stall.
struct ThenFail {
    left: usize,
    stall: bool,
    dropped: Arc<std::sync::atomic::AtomicBool>,
    pause: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for ThenFail {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        // Pending first, so the layer streams this body.
        if self.pause.as_mut().poll(cx).is_pending() {
            return std::task::Poll::Pending;
        }
        if self.left > 0 {
            self.left -= 1;
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![
                b'x';
                1024
            ])))));
        }
        if self.stall {
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Some(Err(std::io::Error::other("body failed"))))
    }
}

impl Drop for ThenFail {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

fn streaming_app(
    frames: usize,
    stall: bool,
    capture: Duration,
) -> (
    Router,
    idemstore_http::InFlightWork,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<AtomicUsize>,
    tempfile::TempDir,
) {
    let (store, dir) = open_store(Config::default());
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let layer = IdempotencyLayer::new(
        store,
        IdempotencyConfig::new(TenantSource::Single).capture_timeout(capture),
    );
    let work = layer.in_flight_work();
    let router = {
        let (dropped, runs) = (dropped.clone(), runs.clone());
        Router::new().route(
            "/s",
            axum::routing::post(move || {
                runs.fetch_add(1, Ordering::SeqCst);
                let dropped = dropped.clone();
                async move {
                    Body::new(ThenFail {
                        left: frames,
                        stall,
                        dropped,
                        pause: Box::pin(tokio::time::sleep(Duration::from_millis(10))),
                    })
                }
            })
            .route_layer(layer),
        )
    };
    (router, work, dropped, runs, dir)
}

fn post_s() -> Request<Body> {
    Request::post("/s")
        .header(KEY.0, KEY.1)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn a_streamed_body_that_fails_is_stored_even_when_its_client_stopped_reading() {
    // Frames that fill the channel to the client (16), a client that never
    // reads, then the body fails: storing the 500 must not wait for the
    // client. (A client that stops reading earlier holds the stream up to
    // `capture_timeout`, after which the notice is stored.)
    let (router, work, _, runs, _dir) = streaming_app(16, false, Duration::from_secs(10));
    let first = router.clone().oneshot(post_s()).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK, "streamed");
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let r = router.clone().oneshot(post_s()).await.unwrap();
            if r.status() != StatusCode::CONFLICT {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .map(|r| {
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(r.headers().contains_key(REPLAYED));
    })
    .expect("the failure is stored without waiting for the client");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), work.idle())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_stalled_stream_ends_its_work_once_the_client_leaves_after_the_deadline() {
    let (router, work, dropped, _, _dir) = streaming_app(1, true, Duration::from_millis(200));
    let first = router.clone().oneshot(post_s()).await.unwrap();
    let mut body = first.into_body();
    assert!(body.frame().await.unwrap().is_ok());
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Past the deadline: the notice is stored; the stalled body is still
    // read for the client that is still there.
    let r = router.clone().oneshot(post_s()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.headers().contains_key(REPLAYED));
    assert_eq!(work.count(), 1);
    drop(body);
    tokio::time::timeout(Duration::from_secs(5), work.idle())
        .await
        .expect("the client left: the stalled body is not waited for");
    assert!(dropped.load(Ordering::SeqCst));
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

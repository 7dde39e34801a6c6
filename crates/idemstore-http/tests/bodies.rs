//! Request and response bodies through the layer: size limits, bodies that
//! fail, responses too large for a record, clients that leave while a body
//! streams, and streams that never end or stall past the capture deadline.

#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use common::{FailingStream, KEY, app, open_store, send};
use http_body_util::BodyExt;
use idemstore::Config;
use idemstore_http::{
    IdempotencyConfig, IdempotencyLayer, OversizeResponse, REPLAYED, StorePolicy, TenantSource,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tower::ServiceExt;

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
    // Past the deadline the notice is stored (once its write is durable: on
    // a loaded machine a moment after the deadline), while the first client
    // still reads.
    let waited = std::time::Instant::now();
    let r = loop {
        let r = router.clone().oneshot(req()).await.unwrap();
        if r.headers().contains_key(REPLAYED) || waited.elapsed() > Duration::from_secs(10) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
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

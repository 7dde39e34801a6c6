//! The behaviour table (`idemstore-http`'s crate docs), one suite run
//! against two servers over real TCP: axum with the tower layer, and
//! actix-web with this crate's middleware. Both serve the same handler on
//! the embedded store; every row must answer the same on both.
//!
//! The handler (`/{status}`): answers that status with `run N: METHOD L
//! bytes` (N counts its runs); `?sleep=MS` first sleeps; `?panic` panics;
//! `?stream=N` streams N bytes in 64 KiB chunks; `?ran=nothing` and
//! `?ran=unknown` mark the response with that `Ran`.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::{HeaderName, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use idemstore::{Config, Store};
use idemstore_http::{IdempotencyConfig, Ran, StorePolicy, TenantSource};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A server under test.
struct Server {
    addr: SocketAddr,
    runs: Arc<AtomicUsize>,
    store: Store,
    _dir: tempfile::TempDir,
}

impl Server {
    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

/// What the handler does for a request, as both frameworks share it.
enum Act {
    Answer(u16, String, Option<Ran>),
    Stream(u16, usize),
}

/// The handler's decision, after its sleep; counts the run. Panics for
/// `?panic`.
async fn act(runs: &AtomicUsize, path: &str, query: &str, method: &str, body_len: usize) -> Act {
    let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
    let status: u16 = path.trim_start_matches('/').parse().unwrap_or(200);
    let mut ran = None;
    for q in query.split('&') {
        match q.split_once('=') {
            Some(("sleep", ms)) => {
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await
            }
            Some(("stream", len)) => return Act::Stream(status, len.parse().unwrap()),
            Some(("ran", "nothing")) => ran = Some(Ran::Nothing),
            Some(("ran", "unknown")) => ran = Some(Ran::Unknown),
            _ if q == "panic" => panic!("handler panicked on purpose"),
            _ => {}
        }
    }
    Act::Answer(status, format!("run {n}: {method} {body_len} bytes"), ran)
}

fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default().lease(Duration::from_secs(5))).unwrap();
    (store, dir)
}

/// Chunks of a streamed body.
fn chunks(len: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(64 << 10);
        out.push(Bytes::from(vec![b'x'; n]));
        left -= n;
    }
    out
}

/// axum, with the tower layer on every path.
fn tower_server(config: IdempotencyConfig) -> Server {
    use axum::body::Body;
    use axum::extract::Request as AxumRequest;
    let (store, dir) = store();
    let runs = Arc::new(AtomicUsize::new(0));
    let layer = idemstore_http::IdempotencyLayer::new(store.clone(), config);
    let (tx, rx) = std::sync::mpsc::channel();
    let counter = runs.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let handler = move |req: AxumRequest| {
                let runs = counter.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    let act = act(
                        &runs,
                        parts.uri.path(),
                        parts.uri.query().unwrap_or(""),
                        parts.method.as_str(),
                        body.len(),
                    )
                    .await;
                    match act {
                        Act::Answer(status, text, ran) => {
                            let mut r = http::Response::new(Body::from(text));
                            *r.status_mut() = StatusCode::from_u16(status).unwrap();
                            r.headers_mut()
                                .insert("content-type", "text/plain".parse().unwrap());
                            if let Some(ran) = ran {
                                r.extensions_mut().insert(ran);
                            }
                            r
                        }
                        Act::Stream(status, len) => {
                            let stream = tokio_stream(chunks(len));
                            let mut r = http::Response::new(Body::from_stream(stream));
                            *r.status_mut() = StatusCode::from_u16(status).unwrap();
                            r
                        }
                    }
                }
            };
            let app = axum::Router::new().fallback(handler).layer(layer);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    Server {
        addr: rx.recv().unwrap(),
        runs,
        store,
        _dir: dir,
    }
}

/// A stream of chunks that yields one at a time, each after a pause (so
/// the body is still being produced when the handler returns).
fn tokio_stream(
    chunks: Vec<Bytes>,
) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    struct Chunks(
        std::vec::IntoIter<Bytes>,
        Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    );
    impl futures_core::Stream for Chunks {
        type Item = Result<Bytes, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            let sleep = self
                .1
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(1))));
            if sleep.as_mut().poll(cx).is_pending() {
                return std::task::Poll::Pending;
            }
            self.1 = None;
            std::task::Poll::Ready(self.0.next().map(Ok))
        }
    }
    use std::future::Future;
    Chunks(chunks.into_iter(), None)
}

/// actix-web, with this crate's middleware on every path.
fn actix_server(config: IdempotencyConfig) -> Server {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    let (store, dir) = store();
    let runs = Arc::new(AtomicUsize::new(0));
    let mw = idemstore_actix::Idempotency::new(store.clone(), config);
    let (tx, rx) = std::sync::mpsc::channel();
    let counter = runs.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                let runs = counter.clone();
                // Routed under an App-wide wrap: actix's routing must find
                // the request unshared while the handler runs.
                App::new().wrap(mw.clone()).route(
                    "/{status}",
                    web::to(move |req: HttpRequest, body: Bytes| {
                        let runs = runs.clone();
                        async move {
                            let act = act(
                                &runs,
                                req.path(),
                                req.query_string(),
                                req.method().as_str(),
                                body.len(),
                            )
                            .await;
                            match act {
                                Act::Answer(status, text, ran) => {
                                    let mut r = HttpResponse::build(
                                        actix_web::http::StatusCode::from_u16(status).unwrap(),
                                    )
                                    .content_type("text/plain")
                                    .body(text);
                                    if let Some(ran) = ran {
                                        idemstore_actix::mark(&mut r, ran);
                                    }
                                    r
                                }
                                Act::Stream(status, len) => HttpResponse::build(
                                    actix_web::http::StatusCode::from_u16(status).unwrap(),
                                )
                                .streaming(tokio_stream(chunks(len))),
                            }
                        }
                    }),
                )
            })
            .workers(1)
            .disable_signals()
            .bind("127.0.0.1:0")
            .unwrap();
            tx.send(server.addrs()[0]).unwrap();
            server.run().await.unwrap();
        });
    });
    Server {
        addr: rx.recv().unwrap(),
        runs,
        store,
        _dir: dir,
    }
}

/// A whole reply.
struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }
    fn problem(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["type"].as_str().map(str::to_owned))
            .unwrap_or_default()
            .trim_start_matches("urn:idemstore:problem:")
            .to_owned()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(s: &Server, method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", s.addr.to_string());
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = sender
        .send_request(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
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

fn single() -> IdempotencyConfig {
    IdempotencyConfig::new(TenantSource::Single)
}

/// Retries until the key is no longer in flight.
async fn settled(s: &Server, uri: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = send(s, "POST", uri, headers, body).await;
        if r.problem() != "request-in-flight" {
            return r;
        }
        assert!(Instant::now() < deadline, "still in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Start = fn(IdempotencyConfig) -> Server;

async fn uncovered_methods_and_keyless_requests_pass_through_untouched(start: Start) {
    let s = start(single());
    for _ in 0..2 {
        let r = send(&s, "GET", "/200", &[KEY], "").await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(!r.replayed());
        let r = send(&s, "POST", "/201", &[], "{}").await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert!(!r.replayed());
    }
    assert_eq!(s.runs(), 4);
}

async fn a_required_key_that_is_missing_is_400(start: Start) {
    let s = start(single().key_required(true));
    let r = send(&s, "POST", "/201", &[], "{}").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.problem(), "key-missing");
    assert_eq!(s.runs(), 0);
}

async fn a_malformed_key_is_400_saying_why(start: Start) {
    let s = start(single());
    let long = "k".repeat(256);
    for (key, why) in [("has space", "0x20"), (long.as_str(), "256 characters")] {
        let r = send(&s, "POST", "/201", &[("idempotency-key", key)], "{}").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.problem(), "key-malformed");
        assert!(r.text().contains(why), "{}", r.text());
    }
    assert_eq!(s.runs(), 0);
}

async fn a_retry_gets_the_stored_response_marked_replayed(start: Start) {
    let s = start(single());
    let first = send(&s, "POST", "/201", &[KEY], "{}").await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.replayed());
    let retry = send(&s, "POST", "/201", &[KEY], "{}").await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(retry.replayed());
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.headers["content-type"], "text/plain");
    assert_eq!(s.runs(), 1);
}

async fn another_request_under_the_same_key_is_422(start: Start) {
    let s = start(single());
    send(&s, "POST", "/201", &[KEY], "{}").await;
    let r = send(&s, "POST", "/201", &[KEY], "{\"other\":1}").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.problem(), "request-mismatch");
    assert_eq!(s.runs(), 1);
}

async fn the_same_key_while_the_first_runs_is_409_with_retry_after(start: Start) {
    let s = Arc::new(start(single()));
    let first = {
        let s = s.clone();
        tokio::spawn(async move { send(&s, "POST", "/201?sleep=500", &[KEY], "{}").await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = send(&s, "POST", "/201?sleep=500", &[KEY], "{}").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.problem(), "request-in-flight");
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(first.await.unwrap().status, StatusCode::CREATED);
    assert_eq!(s.runs(), 1);
}

async fn the_same_key_from_another_tenant_is_independent(start: Start) {
    let s = start(IdempotencyConfig::new(TenantSource::Header(
        HeaderName::from_static("x-api-key"),
    )));
    let a = send(&s, "POST", "/201", &[KEY, ("x-api-key", "a")], "{}").await;
    let b = send(&s, "POST", "/201", &[KEY, ("x-api-key", "b")], "{}").await;
    assert!(!a.replayed() && !b.replayed());
    assert_ne!(a.body, b.body);
    let none = send(&s, "POST", "/201", &[KEY], "{}").await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.runs(), 2);
}

async fn an_unavailable_store_is_503_and_nothing_runs(start: Start) {
    let s = start(single());
    s.store.close().unwrap();
    let r = send(&s, "POST", "/201", &[KEY], "{}").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.problem(), "store-unavailable");
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(s.runs(), 0);
}

async fn a_body_over_the_limit_is_413(start: Start) {
    let s = start(single().max_request_bytes(10));
    let r = send(&s, "POST", "/201", &[KEY], &"x".repeat(11)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.problem(), "request-too-large");
    assert_eq!(s.runs(), 0);
}

async fn a_client_that_vanishes_mid_handler_neither_cancels_it_nor_frees_the_key(start: Start) {
    use tokio::io::AsyncWriteExt;
    let s = start(single());
    {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        c.write_all(
            b"POST /201?sleep=400 HTTP/1.1\r\nhost: x\r\nidempotency-key: key-1\r\ncontent-length: 2\r\n\r\n{}",
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = settled(&s, "/201?sleep=400", &[KEY], "{}").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.replayed(), "{}", r.text());
    assert_eq!(s.runs(), 1);
}

async fn a_panicking_handler_is_a_500_stored_per_policy(start: Start) {
    let s = start(single().store(StorePolicy::All));
    let r = send(&s, "POST", "/201?panic", &[KEY], "{}").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.problem(), "handler-failed");
    let retry = send(&s, "POST", "/201?panic", &[KEY], "{}").await;
    assert!(retry.replayed());
    assert_eq!(s.runs(), 1);
}

async fn a_response_marked_ran_overrides_the_store_policy(start: Start) {
    let s = start(single().store(StorePolicy::NonServerErrors));
    for _ in 0..2 {
        let r = send(
            &s,
            "POST",
            "/502?ran=nothing",
            &[("idempotency-key", "n")],
            "{}",
        )
        .await;
        assert!(!r.replayed());
    }
    assert_eq!(s.runs(), 2, "ran nothing: freed, so the retry ran");
    send(
        &s,
        "POST",
        "/502?ran=unknown",
        &[("idempotency-key", "u")],
        "{}",
    )
    .await;
    let r = send(
        &s,
        "POST",
        "/502?ran=unknown",
        &[("idempotency-key", "u")],
        "{}",
    )
    .await;
    assert!(r.replayed(), "may have run: stored whatever the policy");
    assert_eq!(s.runs(), 3);
}

async fn a_store_that_fails_after_the_handler_ran_is_503_response_not_stored(start: Start) {
    let s = Arc::new(start(single()));
    let first = {
        let s = s.clone();
        tokio::spawn(async move { send(&s, "POST", "/201?sleep=400", &[KEY], "{}").await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.store.close().unwrap();
    let r = first.await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.problem(), "response-not-stored");
    assert_eq!(s.runs(), 1);
}

async fn a_streamed_body_over_the_limit_reaches_the_client_whole_and_is_not_replayable(
    start: Start,
) {
    let s = start(single().max_response_bytes(100_000));
    let r = send(&s, "POST", "/201?stream=300000", &[KEY], "{}").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body.len(), 300_000);
    let retry = settled(&s, "/201?stream=300000", &[KEY], "{}").await;
    assert_eq!(retry.status, StatusCode::CONFLICT);
    assert_eq!(retry.problem(), "response-not-replayable");
    assert_eq!(s.runs(), 1);
}

async fn a_streamed_body_within_the_limit_is_stored_when_it_ends_and_replayed(start: Start) {
    let s = start(single());
    let r = send(&s, "POST", "/201?stream=200000", &[KEY], "{}").await;
    assert_eq!(r.body.len(), 200_000);
    let retry = settled(&s, "/201?stream=200000", &[KEY], "{}").await;
    assert!(retry.replayed());
    assert_eq!(retry.body.len(), 200_000);
    assert_eq!(s.runs(), 1);
}

macro_rules! table {
    ($($row:ident),* $(,)?) => {
        mod tower {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $row() { super::$row(super::tower_server).await })*
        }
        mod actix {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $row() { super::$row(super::actix_server).await })*
        }
    };
}

table!(
    uncovered_methods_and_keyless_requests_pass_through_untouched,
    a_required_key_that_is_missing_is_400,
    a_malformed_key_is_400_saying_why,
    a_retry_gets_the_stored_response_marked_replayed,
    another_request_under_the_same_key_is_422,
    the_same_key_while_the_first_runs_is_409_with_retry_after,
    the_same_key_from_another_tenant_is_independent,
    an_unavailable_store_is_503_and_nothing_runs,
    a_body_over_the_limit_is_413,
    a_client_that_vanishes_mid_handler_neither_cancels_it_nor_frees_the_key,
    a_panicking_handler_is_a_500_stored_per_policy,
    a_response_marked_ran_overrides_the_store_policy,
    a_store_that_fails_after_the_handler_ran_is_503_response_not_stored,
    a_streamed_body_over_the_limit_reaches_the_client_whole_and_is_not_replayable,
    a_streamed_body_within_the_limit_is_stored_when_it_ends_and_replayed,
);

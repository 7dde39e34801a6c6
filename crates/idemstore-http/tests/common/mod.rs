//! The app the layer's tests drive: a handler that counts its runs and
//! answers the status in its path, the layer in front of it on a fresh store,
//! and `send`, which collects the reply. Each test binary compiles this
//! module on its own and uses part of it.

#![allow(dead_code)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use axum::routing::any;
use http_body_util::BodyExt;
use idemstore::{Config, ManualClock, Store, Timestamp};
use idemstore_http::{IdempotencyConfig, IdempotencyLayer, REPLAYED};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tower::ServiceExt;

/// Counts handler executions.
#[derive(Clone, Default)]
pub(crate) struct Runs(pub(crate) Arc<AtomicUsize>);

impl Runs {
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// `/{status}`: answers that status with a body naming the execution;
/// `?sleep=ms` first sleeps; `?big=n` answers n bytes; `?panic` panics;
/// `?hop` adds hop-by-hop headers; `?ran=nothing` and `?ran=unknown` mark
/// the response with that [`idemstore_http::Ran`].
pub(crate) async fn handler(
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
    match q {
        "ran=nothing" => {
            r.extensions_mut().insert(idemstore_http::Ran::Nothing);
        }
        "ran=unknown" => {
            r.extensions_mut().insert(idemstore_http::Ran::Unknown);
        }
        _ => {}
    }
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

pub(crate) struct App {
    pub(crate) router: Router,
    pub(crate) runs: Runs,
    pub(crate) store: Store,
    pub(crate) clock: ManualClock,
    pub(crate) _dir: tempfile::TempDir,
}

/// The test routes on a store with an injected clock and keys up to 1024 bytes.
pub(crate) fn app(config: IdempotencyConfig) -> App {
    let clock = ManualClock::new(Timestamp(1_800_000_000_000));
    let (store, dir) = open_store(
        Config::default()
            .clock(Arc::new(clock.clone()))
            .key_len(1..=1024),
    );
    app_on(store, clock, dir, config)
}

/// A store in a fresh directory, which lives as long as the returned guard.
pub(crate) fn open_store(config: Config) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config).unwrap();
    (store, dir)
}

/// The test routes (`/{*status}`, [`handler_path`]) behind the layer on `store`.
pub(crate) fn routes(store: Store, config: IdempotencyConfig) -> Router<Runs> {
    Router::new()
        .route("/{*status}", any(handler_path))
        .layer(IdempotencyLayer::new(store, config))
}

/// An [`App`] serving the test routes behind the layer on `store`, counting runs.
pub(crate) fn app_on(
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
pub(crate) async fn handler_path(
    state: State<Runs>,
    Path(path): Path<String>,
    method: Method,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response<Body> {
    let status = path.rsplit('/').next().unwrap().parse().unwrap_or(200);
    handler(state, Path(status), method, uri, body).await
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub(crate) fn replayed(&self) -> bool {
        self.headers.get(REPLAYED).is_some_and(|v| v == "true")
    }
    pub(crate) fn problem_type(&self) -> String {
        assert_eq!(
            self.headers["content-type"],
            "application/problem+json",
            "{}",
            self.text()
        );
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(v["status"], self.status.as_u16());
        let code = v["type"]
            .as_str()
            .unwrap()
            .trim_start_matches("urn:idemstore:problem:")
            .to_owned();
        assert_eq!(v["code"], code.as_str(), "code is the type's last part");
        assert_eq!(self.headers["cache-control"], "no-store");
        code
    }
}

pub(crate) async fn send(
    app: &App,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
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

pub(crate) const KEY: (&str, &str) = ("idempotency-key", "key-1");

/// Yields one chunk, then an error.
pub(crate) struct FailingStream(pub(crate) bool);

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

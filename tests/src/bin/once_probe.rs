//! `once_probe`: a service whose handler makes its side effect *first* (it
//! appends the key to an effects file, as a charge would reach a card
//! network), then awaits, so a handler cancelled or run twice shows up as a
//! count. `tests/once.rs` runs it as a real process over TCP and counts how
//! often each key's effect happened while clients time out, handlers panic,
//! the disk fills up or Redis is paused.
//!
//! ```sh
//! cargo run -p idemstore-tests --bin once_probe -- --listen 127.0.0.1:0 --effects /tmp/effects \
//!     (--data DIR | --redis URL) [--write-retry-ms N] [--redis-timeout-ms N]
//! ```
//!
//! `POST /charge?delay_ms=N[&panic=1][&stream=1][&pad=N]` with `X-Api-Key` (the
//! tenant) and `Idempotency-Key`: appends `<key>\n` to the effects file,
//! sleeps N ms, then panics or answers 201 `charged <key>` and `pad` x's (with `stream=1`,
//! the body comes in two parts 100 ms apart). Prints `listening on
//! http://ADDR` once ready.

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use http_body::Frame;
use idemstore::{Config, Store};
use idemstore_http::{IdempotencyConfig, IdempotencyLayer, TenantSource};
use idemstore_redis::{RedisBackend, RedisConfig};
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

#[derive(serde::Deserialize)]
struct Params {
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    panic: u8,
    #[serde(default)]
    stream: u8,
    #[serde(default)]
    pad: usize,
}

#[derive(Clone)]
struct Effects(Arc<Mutex<std::fs::File>>);

async fn charge(
    State(effects): State<Effects>,
    Query(p): Query<Params>,
    headers: HeaderMap,
) -> (StatusCode, Body) {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    {
        // The side effect, before any await: it happened once this returns.
        let mut f = effects.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(f, "{key}");
        let _ = f.flush();
    }
    tokio::time::sleep(Duration::from_millis(p.delay_ms)).await;
    assert!(p.panic == 0, "the handler panics after its side effect");
    if p.stream == 1 {
        return (StatusCode::CREATED, Body::new(TwoParts::new(key)));
    }
    let pad = "x".repeat(p.pad);
    (
        StatusCode::CREATED,
        Body::from(format!("charged {key}{pad}")),
    )
}

/// A streamed body: `charged `, then the key 100 ms later.
struct TwoParts {
    first: bool,
    key: Option<String>,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl TwoParts {
    fn new(key: String) -> Self {
        TwoParts {
            first: true,
            key: Some(key),
            pause: Box::pin(tokio::time::sleep(Duration::from_millis(100))),
        }
    }
}

impl http_body::Body for TwoParts {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if std::mem::take(&mut self.first) {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"charged ")))));
        }
        if self.key.is_none() {
            return Poll::Ready(None);
        }
        match self.pause.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                let key = self.key.take().unwrap_or_default();
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(key)))))
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut data: Option<PathBuf> = None;
    let mut redis: Option<String> = None;
    let mut effects: Option<PathBuf> = None;
    let mut write_retry_ms = 100;
    let mut redis_timeout_ms = 2000;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value,
            "--data" => data = Some(value.into()),
            "--redis" => redis = Some(value),
            "--effects" => effects = Some(value.into()),
            "--write-retry-ms" => write_retry_ms = value.parse()?,
            "--redis-timeout-ms" => redis_timeout_ms = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let effects = effects.ok_or("--effects FILE is required")?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&effects)?;
    let state = Effects(Arc::new(Mutex::new(file)));
    let config = IdempotencyConfig::new(TenantSource::Header(HeaderName::from_static("x-api-key")))
        .max_response_bytes(16 << 10)
        .capture_timeout(Duration::from_secs(5));
    let routes = Router::new().route("/charge", post(charge));
    let (app, store) = match (&data, &redis) {
        (Some(dir), None) => {
            let store = Store::open(
                dir,
                Config::default()
                    .write_retry_interval(Duration::from_millis(write_retry_ms))
                    .max_record_bytes(64 << 10)
                    .max_segment_bytes(256 << 10),
            )?;
            let layer = IdempotencyLayer::try_new(store.clone(), config)?;
            (routes.route_layer(layer).with_state(state), Some(store))
        }
        (None, Some(url)) => {
            let backend = RedisBackend::connect(
                url,
                RedisConfig::default().timeout(Duration::from_millis(redis_timeout_ms)),
            )
            .await?;
            let layer = IdempotencyLayer::try_new(backend, config)?;
            (routes.route_layer(layer).with_state(state), None)
        }
        _ => return Err("give exactly one of --data DIR and --redis URL".into()),
    };
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    if let Some(store) = store {
        store.close()?;
    }
    Ok(())
}

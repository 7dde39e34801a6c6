//! `payments`: a small payments API behind the idempotency layer, on the
//! embedded store with `Sync` durability (a 201 leaves the server only after
//! its record is on disk).
//!
//! ```sh
//! cargo run --release -p idemstore-http --example payments -- --listen 127.0.0.1:3000 --data ./payments-data
//! # or, with several replicas sharing one Redis:
//! cargo run --release -p idemstore-http --example payments -- --listen 127.0.0.1:3001 --redis redis://127.0.0.1:6379
//! ```
//!
//! - every request needs `X-Api-Key` (the tenant); 401 problem+json without;
//! - `POST /v1/payments` `{"amount": 100, "currency": "EUR", "delay_ms": 0}`
//!   → 201 `{"id", "amount", "currency", "created_at"}`; bad JSON → 400;
//! - `GET /v1/payments` → this tenant's payments (kept in memory: a restart
//!   forgets them, while the idempotency store remembers every response).
//!
//! Prints `listening on http://ADDR` when ready; SIGTERM or Ctrl-C shut it
//! down cleanly (in-flight requests finish, the store is flushed and closed).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use idemstore::{Config, Store};
use idemstore_http::{Backend, Embedded, IdempotencyConfig, IdempotencyLayer, TenantSource};
use idemstore_redis::{RedisBackend, RedisConfig};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

const API_KEY: HeaderName = HeaderName::from_static("x-api-key");

struct Args {
    listen: SocketAddr,
    data: PathBuf,
    redis: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
        data: PathBuf::from("./payments-data"),
        redis: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => {
                args.listen = value
                    .parse()
                    .map_err(|e| format!("--listen {value}: {e}"))?
            }
            "--data" => args.data = PathBuf::from(value),
            "--redis" => args.redis = Some(value),
            other => {
                return Err(format!(
                    "unknown flag {other}; use --listen ADDR and --data DIR or --redis URL"
                ));
            }
        }
    }
    Ok(args)
}

#[derive(Clone, Serialize)]
struct Payment {
    id: String,
    amount: i64,
    currency: String,
    created_at: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPayment {
    amount: i64,
    currency: String,
    #[serde(default)]
    delay_ms: u64,
}

#[derive(Default)]
struct AppState {
    payments: Mutex<HashMap<Vec<u8>, Vec<Payment>>>,
    counter: AtomicU64,
    /// Distinguishes ids across restarts.
    boot: u64,
}

fn problem(status: StatusCode, slug: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": format!("urn:payments:problem:{slug}"),
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// 401 without an API key, before anything else runs.
async fn require_api_key(req: Request, next: Next) -> Response {
    match req.headers().get(&API_KEY) {
        Some(v) if !v.is_empty() => next.run(req).await,
        _ => problem(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send your API key in the X-Api-Key header",
        ),
    }
}

fn tenant(headers: &HeaderMap) -> Vec<u8> {
    headers
        .get(&API_KEY)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default()
}

async fn create(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let new: NewPayment = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid-payment",
                &format!("the body must be {{\"amount\": integer, \"currency\": \"EUR\"}}: {e}"),
            );
        }
    };
    if new.amount <= 0 {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid-payment",
            "amount must be a positive integer (minor units)",
        );
    }
    if new.currency.len() != 3 || !new.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid-payment",
            "currency must be a three-letter ISO 4217 code, e.g. EUR",
        );
    }
    if new.delay_ms > 60_000 {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid-payment",
            "delay_ms must be at most 60000",
        );
    }
    // The "payment processor".
    tokio::time::sleep(Duration::from_millis(new.delay_ms)).await;
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    let payment = Payment {
        id: format!("pay_{:x}{:06x}", state.boot, n),
        amount: new.amount,
        currency: new.currency,
        created_at: rfc3339(SystemTime::now()),
    };
    state
        .payments
        .lock()
        .await
        .entry(tenant(&headers))
        .or_default()
        .push(payment.clone());
    (
        StatusCode::CREATED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        serde_json::to_string(&payment).unwrap_or_default(),
    )
        .into_response()
}

async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let all = state.payments.lock().await;
    let mine = all.get(&tenant(&headers)).cloned().unwrap_or_default();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        serde_json::to_string(&mine).unwrap_or_default(),
    )
        .into_response()
}

/// `2026-11-24T10:00:00Z` from a system time (UTC, whole seconds).
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// The service, on whichever idempotency backend.
fn app<B: Backend>(backend: B) -> Router {
    let state = Arc::new(AppState {
        // Distinguishes ids across restarts and replicas.
        boot: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        ..AppState::default()
    });
    let idempotency = IdempotencyLayer::new(
        backend,
        IdempotencyConfig::default().tenant(TenantSource::Header(API_KEY)),
    );
    Router::new()
        .route("/v1/payments", post(create).get(list))
        .layer(idempotency)
        .layer(middleware::from_fn(require_api_key))
        .with_state(state)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().map_err(|e| format!("payments: {e}"))?;
    let (app, store) = match &args.redis {
        Some(url) => {
            let backend = RedisBackend::connect(url, RedisConfig::default()).await?;
            eprintln!("idempotency keys in Redis at {url}");
            (app(backend), None)
        }
        None => {
            let store = Store::open(&args.data, Config::default())?;
            let report = store.recovery_report();
            eprintln!(
                "store {}: {} completed and {} in-flight keys recovered",
                args.data.display(),
                report.completed_live,
                report.pending_live
            );
            (app(Embedded(store.clone())), Some(store))
        }
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    if let Some(store) = store {
        store.close()?;
    }
    eprintln!("payments: stopped cleanly");
    Ok(())
}

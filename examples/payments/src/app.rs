//! The `payments` service itself: its routes and handlers, and the router
//! behind the idempotency layer. The `payments` binary (`main.rs`) serves it
//! with the timeouts and limits of `serve.rs` around it; the W6 bench
//! (`benches/src/http.rs`) serves the same handler bare ([`bare`]) and
//! behind the layer ([`app`]).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use idemstore_http::{
    Backend, FingerprintSpec, IdempotencyConfig, IdempotencyLayer, InFlightWork, TenantSource,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

mod pg;
pub use pg::app_pg;

/// The header carrying the caller's API key (the tenant).
pub const API_KEY: HeaderName = HeaderName::from_static("x-api-key");

#[derive(Clone, Serialize)]
pub(crate) struct Payment {
    pub(crate) id: String,
    pub(crate) amount: i64,
    /// Always upper case (ISO 4217), whichever case the client sent.
    pub(crate) currency: String,
    pub(crate) created_at: String,
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

/// A problem+json (RFC 9457) response of this service's own
/// (`urn:payments:problem:<slug>`); the layer's have `urn:idemstore:`.
pub fn problem(status: StatusCode, slug: &str, detail: &str) -> Response {
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
pub(crate) async fn require_api_key(req: Request, next: Next) -> Response {
    match req.headers().get(&API_KEY) {
        Some(v) if !v.is_empty() => next.run(req).await,
        _ => problem(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send your API key in the X-Api-Key header",
        ),
    }
}

pub(crate) fn tenant(headers: &HeaderMap) -> Vec<u8> {
    headers
        .get(&API_KEY)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default()
}

/// A new payment request, validated: the amount, the currency in upper
/// case, and how long the "payment processor" takes.
pub(crate) struct Valid {
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) delay: Duration,
}

/// Reads and checks a new payment's body; the 400 to answer if it is bad.
pub(crate) fn validate(body: &[u8]) -> Result<Valid, Box<Response>> {
    let new: NewPayment = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return Err(Box::new(problem(
                StatusCode::BAD_REQUEST,
                "invalid-payment",
                &format!("the body must be {{\"amount\": integer, \"currency\": \"EUR\"}}: {e}"),
            )));
        }
    };
    if new.amount <= 0 {
        return Err(Box::new(problem(
            StatusCode::BAD_REQUEST,
            "invalid-payment",
            "amount must be a positive integer (minor units)",
        )));
    }
    let Some(currency) = currency_code(&new.currency) else {
        return Err(Box::new(problem(
            StatusCode::BAD_REQUEST,
            "invalid-payment",
            "currency must be a three-letter ISO 4217 code, e.g. EUR or eur",
        )));
    };
    if new.delay_ms > 60_000 {
        return Err(Box::new(problem(
            StatusCode::BAD_REQUEST,
            "invalid-payment",
            "delay_ms must be at most 60000",
        )));
    }
    Ok(Valid {
        amount: new.amount,
        currency,
        delay: Duration::from_millis(new.delay_ms),
    })
}

async fn create(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let new = match validate(&body) {
        Ok(v) => v,
        Err(bad) => return *bad,
    };
    // The "payment processor".
    tokio::time::sleep(new.delay).await;
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

/// The ISO 4217 code in `s`, in upper case: three ASCII letters in either
/// case (Stripe's API takes and answers `"eur"`; ISO writes `"EUR"`).
/// Payments are stored and answered in upper case. The idempotency
/// fingerprint covers the body as sent, so `"eur"` and `"EUR"` under one key
/// are two different requests (422), even though they mean the same payment.
fn currency_code(s: &str) -> Option<String> {
    (s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic())).then(|| s.to_ascii_uppercase())
}

/// `2026-11-24T10:00:00Z` from a system time (UTC, whole seconds).
pub(crate) fn rfc3339(t: SystemTime) -> String {
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

/// The service without the idempotency layer: the API-key check, the
/// routes and their state. (The binary serves only [`app`]; the bench
/// serves both.)
pub fn bare() -> Router {
    routes(None::<IdempotencyLayer<idemstore::Store>>)
}

/// The service behind the idempotency layer on `backend`.
pub fn app<B: Backend>(backend: B) -> Router {
    app_with_work(backend).0
}

/// [`app`], and the work its idempotency layer runs for reserved keys (in
/// tasks that outlive their connections), which a shutdown waits for before
/// closing the store.
pub fn app_with_work<B: Backend>(backend: B) -> (Router, InFlightWork) {
    let layer = IdempotencyLayer::new(backend, idempotency_config());
    let work = layer.in_flight_work();
    (routes(Some(layer)), work)
}

/// The idempotency layer's configuration: the tenant is the `X-Api-Key`
/// header (so two API keys never share an idempotency key); the body, a
/// JSON document, is fingerprinted by its canonical form (a client that
/// re-serializes its retry with another key order is still sending the
/// same request, and a 422 names the members that differ); everything
/// else is the layer's default (the IETF draft's and Stripe's behaviour).
pub fn idempotency_config() -> IdempotencyConfig {
    IdempotencyConfig::new(TenantSource::Header(API_KEY)).fingerprint(FingerprintSpec::json())
}

/// `route` with the idempotency layer around its handlers, if there is a
/// backend.
///
/// `MethodRouter::route_layer` wraps only the handlers the route has: the
/// router's own 404 (no such path) and 405 (no such method on this path)
/// never reach the layer, so a key sent to the wrong path or with the wrong
/// method is not used up by a stored 404 or 405 (which every retry would
/// then replay, even to the right route). `Router::layer` would wrap both,
/// and `Router::route_layer` still wraps each route's 405 fallback (axum
/// 0.8): apply it here, to each route.
fn idempotent<B: Backend>(
    route: MethodRouter<Arc<AppState>>,
    layer: Option<IdempotencyLayer<B>>,
) -> MethodRouter<Arc<AppState>> {
    match layer {
        Some(layer) => route.route_layer(layer),
        None => route,
    }
}

fn routes<B: Backend>(backend: Option<IdempotencyLayer<B>>) -> Router {
    let state = Arc::new(AppState {
        // Distinguishes ids across restarts and replicas.
        boot: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        ..AppState::default()
    });
    Router::new()
        .route("/v1/payments", idempotent(post(create).get(list), backend))
        // Outside the routes: a 401 is never stored under a key either.
        .layer(middleware::from_fn(require_api_key))
        .with_state(state)
}

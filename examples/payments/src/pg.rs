//! The service on PostgreSQL (`payments --postgres URL`): payments are rows
//! of a `payments` table, the idempotency keys rows of idemstore-postgres's
//! table in the same database, and for a request with a key the payment row
//! and its stored response commit in one transaction
//! (`RoutePolicy::stored_by_handler`, `complete_in_handler`). A crash before
//! the commit leaves neither (the retry runs again, legitimately: nothing
//! happened); after it, both (the retry replays).

use crate::{Payment, idempotency_config, problem, require_api_key, rfc3339, tenant, validate};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use idemstore_http::{HeldKey, IdempotencyLayer, InFlightWork, RoutePolicy};
use idemstore_postgres::{PostgresBackend, PostgresLease, complete_in_handler};
use sqlx::Row;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

struct PgState {
    backend: PostgresBackend,
    counter: AtomicU64,
    /// Distinguishes ids across restarts and replicas.
    boot: u64,
}

/// The service on `backend`'s database: creates the `payments` table if
/// missing, and the router with the idempotency layer on it.
///
/// # Errors
///
/// When the table cannot be created.
pub async fn app_pg(backend: PostgresBackend) -> Result<(Router, InFlightWork), sqlx::Error> {
    // Replicas starting together: `CREATE TABLE IF NOT EXISTS` races with
    // itself (a unique violation in the catalog), so one at a time.
    let mut tx = backend.pool().begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(7461636564)")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS payments (
            id text PRIMARY KEY,
            tenant bytea NOT NULL,
            amount int8 NOT NULL,
            currency text NOT NULL,
            created_at text NOT NULL,
            idempotency_key text)",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let config =
        idempotency_config().route("/v1/payments", RoutePolicy::default().stored_by_handler());
    let layer = IdempotencyLayer::new(backend.clone(), config);
    let work = layer.in_flight_work();
    let state = Arc::new(PgState {
        backend,
        counter: AtomicU64::new(0),
        boot: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
    });
    let router = Router::new()
        .route("/v1/payments", post(create).get(list).route_layer(layer))
        .layer(middleware::from_fn(require_api_key))
        .with_state(state);
    Ok((router, work))
}

/// The 503 of a payment the database did not take (nothing was
/// committed); the key is freed (the lease taken and dropped) so that a
/// retry runs again instead of replaying this answer.
async fn failed(held: Option<&Extension<HeldKey<PostgresLease>>>, e: String) -> Response {
    if let Some(Extension(h)) = held {
        drop(h.take().await);
    }
    unavailable(&e)
}

fn unavailable(e: &dyn std::fmt::Display) -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "database-unavailable",
        &format!("the payment was not made (the database failed: {e}); retry with the same key"),
    )
}

async fn create(
    State(state): State<Arc<PgState>>,
    headers: HeaderMap,
    held: Option<Extension<HeldKey<PostgresLease>>>,
    body: Bytes,
) -> Response {
    let new = match validate(&body) {
        Ok(v) => v,
        Err(bad) => return *bad,
    };
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    let payment = Payment {
        id: format!("pay_{:x}{:06x}", state.boot, n),
        amount: new.amount,
        currency: new.currency,
        created_at: rfc3339(SystemTime::now()),
    };
    let json = Bytes::from(serde_json::to_vec(&payment).unwrap_or_default());
    let mut reply_headers = HeaderMap::new();
    reply_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut tx = match state.backend.pool().begin().await {
        Ok(tx) => tx,
        Err(e) => return failed(held.as_ref(), e.to_string()).await,
    };
    let inserted = sqlx::query(
        "INSERT INTO payments (id, tenant, amount, currency, created_at, idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&payment.id)
    .bind(tenant(&headers))
    .bind(payment.amount)
    .bind(&payment.currency)
    .bind(&payment.created_at)
    .bind(&key)
    .execute(&mut *tx)
    .await;
    if let Err(e) = inserted {
        return failed(held.as_ref(), e.to_string()).await;
    }
    // The "payment processor", while the transaction holds the payment
    // row: a crash now rolls the row back with the stored response.
    tokio::time::sleep(new.delay).await;
    // The stored response, in the same transaction as the payment row.
    let coupled = match &held {
        Some(Extension(held)) => {
            match complete_in_handler(held, &mut tx, StatusCode::CREATED, &reply_headers, &json)
                .await
            {
                Ok(c) => c,
                // Fenced (another request holds the key now) or the database
                // failed: the payment is rolled back with the transaction.
                Err(e) => return unavailable(&e),
            }
        }
        None => None,
    };
    if let Err(e) = tx.commit().await {
        return unavailable(&e);
    }
    if let Some(c) = coupled {
        c.committed();
    }
    (StatusCode::CREATED, reply_headers, json).into_response()
}

async fn list(State(state): State<Arc<PgState>>, headers: HeaderMap) -> Response {
    let rows = sqlx::query(
        "SELECT id, amount, currency, created_at FROM payments WHERE tenant = $1 ORDER BY id",
    )
    .bind(tenant(&headers))
    .fetch_all(state.backend.pool())
    .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    let mine: Vec<Payment> = rows
        .iter()
        .map(|r| Payment {
            id: r.get("id"),
            amount: r.get("amount"),
            currency: r.get("currency"),
            created_at: r.get("created_at"),
        })
        .collect();
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

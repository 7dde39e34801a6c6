//! The admin port (`--admin ADDR`), apart from the proxied traffic so that
//! probes and scrapers need no key and never reach the upstream:
//!
//! - `GET /metrics`: the layer's and the store's metrics, Prometheus text;
//! - `GET /healthz`: 200 while the process serves (a liveness probe);
//! - `GET /readyz`: 200 once the upstream accepts connections, else 503
//!   saying why (a readiness probe: no traffic is sent to a proxy whose
//!   service is not up yet).

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use idemstore::Store;
use std::time::Duration;

/// How long `/readyz` waits for the upstream to accept a connection.
const READY_CONNECT: Duration = Duration::from_secs(1);

/// The admin routes; `upstream` is `host:port`.
pub(crate) fn router(
    store: Option<Store>,
    upstream: String,
) -> Result<Router, Box<dyn std::error::Error>> {
    let metrics = idemstore_server::metrics::router(store)?;
    Ok(metrics
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let upstream = upstream.clone();
                async move {
                    let connect = tokio::net::TcpStream::connect(&upstream);
                    match tokio::time::timeout(READY_CONNECT, connect).await {
                        Ok(Ok(_)) => (StatusCode::OK, "ready\n".to_owned()),
                        Ok(Err(e)) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("the upstream {upstream} refuses connections: {e}\n"),
                        ),
                        Err(_) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                                "the upstream {upstream} did not accept a connection within {READY_CONNECT:?}\n"
                            ),
                        ),
                    }
                }
            }),
        ))
}

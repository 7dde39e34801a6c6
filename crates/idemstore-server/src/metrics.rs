//! `GET /metrics`: the idempotency layer's and the store's metrics in
//! Prometheus text, to be served outside the layer and any API-key check (a
//! scraper has no key). The recorder is metrics-exporter-prometheus's,
//! installed for the whole process; durations and batch sizes are
//! histograms with fixed buckets.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use idemstore::Store;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets of the seconds histograms: 100 µs to 10 s.
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Buckets of records per batch.
const RECORDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Installs the process's recorder and returns the `/metrics` route. With
/// the embedded `store`, each scrape first reads its size, so the gauges are
/// current.
pub fn router(store: Option<Store>) -> Result<Router, Box<dyn std::error::Error>> {
    let handle: PrometheusHandle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)?
        .set_buckets_for_metric(
            Matcher::Full(idemstore::metrics::BATCH_RECORDS.into()),
            RECORDS,
        )?
        .install_recorder()?;
    Ok(Router::new().route(
        "/metrics",
        get(move || {
            if let Some(s) = &store {
                let _ = s.stats();
            }
            handle.run_upkeep();
            let text = handle.render();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4"),
                    )],
                    text,
                )
                    .into_response()
            }
        }),
    ))
}

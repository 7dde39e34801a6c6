//! # idemstore-http
//!
//! A tower [`Layer`](tower::Layer) that gives any tower-based HTTP service
//! the server side of the `Idempotency-Key` header, on the embedded
//! [`idemstore`] engine or any [`Backend`]. The wrapped service receives
//! `http::Request<BoxBody>` and may answer with any `Bytes` body; the tests
//! run it in an axum router served by hyper. It needs a tokio runtime with
//! the time driver (for lease renewal and the in-flight wait).
//!
//! ```
//! use axum::{Router, routing::post};
//! use idemstore_http::{Embedded, IdempotencyConfig, IdempotencyLayer, TenantSource};
//! # let dir = tempfile::tempdir()?;
//! let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
//! let app: Router = Router::new()
//!     .route("/v1/payments", post(|| async { (axum::http::StatusCode::CREATED, "paid") }))
//!     .layer(IdempotencyLayer::new(
//!         Embedded(store),
//!         IdempotencyConfig::default()
//!             .tenant(TenantSource::Header(axum::http::HeaderName::from_static("x-api-key"))),
//!     ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! | request | answer |
//! | --- | --- |
//! | method not covered (default: all but POST, PATCH), or no key and the key is optional | passed through untouched |
//! | key required but missing | 400 `key-missing` |
//! | key malformed or out of bounds | 400 `key-malformed`, saying why |
//! | first request | handler runs; its response is stored, then sent |
//! | same key, same request, completed | the stored status, headers, body, plus `Idempotent-Replayed: true` |
//! | same key, same request, still running | 409 `request-in-flight` with `Retry-After` (or: wait, then replay) |
//! | same key, different request | 422 `request-mismatch` (also while the first still runs) |
//! | same key, other tenant | independent |
//! | store unavailable | 503 `store-unavailable`; the handler does not run |
//! | request body over the limit | 413 `request-too-large` |
//!
//! Every rejection is `application/problem+json` (RFC 9457) with a stable
//! `type` (`urn:idemstore:problem:<slug>`) and a `detail` telling the client
//! what to do. See [`IdempotencyConfig`] for every option.
//!
//! ## Layout
//!
//! - `config.rs`: every option; `key.rs`: reading the key header;
//!   `fingerprint.rs`: what makes two requests the same;
//!   `problem.rs`: every rejection and its status, in one place;
//!   `replay.rs`: stored records to and from HTTP responses;
//!   `backend.rs`: the async store trait and the embedded engine behind it;
//!   `core.rs`: the decisions, independent of tower;
//!   `service.rs`: the tower layer and service; `body.rs`: body plumbing.

pub mod backend;
pub mod body;
pub mod config;
pub mod core;
pub mod fingerprint;
#[doc(hidden)]
pub mod fuzzing;
pub mod key;
pub mod problem;
pub mod replay;
mod service;

pub use backend::{Backend, BackendError, Embedded, Lease, Outcome};
pub use config::{
    FingerprintSpec, IdempotencyConfig, InFlightPolicy, OversizeResponse, ReplayStatus,
    StorePolicy, TenantSource,
};
pub use problem::Problem;
pub use replay::REPLAYED;
pub use service::{ConfigError, IdempotencyLayer, IdempotencyService, ResponseFuture};

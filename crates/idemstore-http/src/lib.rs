//! # idemstore-http
//!
//! A tower [`Layer`](tower::Layer) that gives any tower-based HTTP service
//! the server side of the `Idempotency-Key` header, on the embedded
//! [`idemstore`] engine or any [`Backend`]. The wrapped service receives
//! `http::Request<BoxBody>` and may answer with any `Bytes` body; the tests
//! run it in an axum router served by hyper. It needs a tokio runtime with
//! the time driver (for lease renewal and the in-flight wait).
//!
//! Keys belong to a tenant, and the configuration must say where the tenant
//! comes from: best, the identity your authentication layer established,
//! read from a request extension. That layer must run *before* the
//! idempotency layer (in axum, `.layer` it outside the idempotency layer):
//!
//! ```
//! use axum::{Router, routing::post, extract::Request, middleware::{self, Next}};
//! use axum::http::{StatusCode, header::AUTHORIZATION};
//! use axum::response::{IntoResponse, Response};
//! use idemstore_http::{IdempotencyConfig, IdempotencyLayer, TenantSource};
//! use tower::ServiceExt;
//!
//! /// The account a request is for, as the auth layer established it.
//! #[derive(Clone)]
//! struct Account(String);
//!
//! async fn auth(mut req: Request, next: Next) -> Response {
//!     let token = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok())
//!         .and_then(|v| v.strip_prefix("Bearer "));
//!     match token {
//!         // A real service looks the token up; here the token names the account.
//!         Some(t) if !t.is_empty() => {
//!             let account = Account(format!("acct_{t}"));
//!             req.extensions_mut().insert(account);
//!             next.run(req).await
//!         }
//!         _ => StatusCode::UNAUTHORIZED.into_response(),
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! # let dir = tempfile::tempdir()?;
//! let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
//! let config = IdempotencyConfig::new(TenantSource::extension(|a: &Account| a.0.clone().into_bytes()));
//! let idempotency = IdempotencyLayer::new(store, config);
//! let app: Router = Router::new()
//!     // On the route's handlers (`MethodRouter::route_layer`): the router's
//!     // own 404 and 405 never reach the layer, so they are never stored under
//!     // a key (`Router::route_layer` still wraps each route's 405 in axum 0.8).
//!     .route(
//!         "/v1/payments",
//!         post(|| async { (StatusCode::CREATED, "paid") }).route_layer(idempotency),
//!     )
//!     // Outside the idempotency layer: runs first and sets `Account`.
//!     .layer(middleware::from_fn(auth));
//!
//! let pay = |token: &str| {
//!     axum::http::Request::post("/v1/payments")
//!         .header(AUTHORIZATION, format!("Bearer {token}"))
//!         .header("idempotency-key", "order-42")
//!         .body(axum::body::Body::empty())
//!         .unwrap()
//! };
//! let first = app.clone().oneshot(pay("alice")).await?;
//! assert_eq!(first.status(), StatusCode::CREATED);
//! let retry = app.clone().oneshot(pay("alice")).await?;
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! // Another account with the same key is independent: its handler runs.
//! let bob = app.clone().oneshot(pay("bob")).await?;
//! assert!(bob.headers().get("idempotent-replayed").is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
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
//! | same key, different request | 422 `request-mismatch` (also while the first still runs; with JSON fingerprints it names the body members that differ) |
//! | same key, other tenant | independent |
//! | store unavailable | 503 `store-unavailable` + `Retry-After`; the handler does not run |
//! | request body over the limit | 413 `request-too-large` |
//! | client disconnects or times out while the handler runs | the handler runs to completion in a task of its own and its response is stored; a retry gets 409, then the replay |
//! | handler's response marked [`Ran::Nothing`] (e.g. a proxy's upstream refused the connection) | sent unstored; the key is freed whatever the store policy |
//! | handler's response marked [`Ran::Unknown`] (e.g. a proxy's upstream connection broke after the request was sent) | stored whatever the store policy, and replayed: the request never runs a second time |
//! | handler panics, fails, or its response body fails | 500 `handler-failed`, then stored (and replayed) or the key freed, per [`StorePolicy`] like any 500 |
//! | store fails after the handler ran | 503 `response-not-stored` + `Retry-After`; the key stays reserved while the backend stores the response in the background, then retries get the replay |
//!
//! ## Once, whatever happens
//!
//! Once `begin` reserves a key, the handler, the reading of its response and
//! the storing run in a task of their own (`work.rs`): nothing the client
//! does cancels them, and only the store policy ever frees the key. A
//! response body that is all there when the handler returns (axum's usual
//! bodies) is stored before it is sent, so in `Sync` durability no success
//! leaves before its record is on disk. A body still being produced (a
//! stream) is sent as it comes while up to `max_response_bytes` of it are
//! kept, and stored when it ends; at the limit or after `capture_timeout`
//! the not-replayable notice is stored instead. The lease is renewed while
//! the work runs and no longer once it is stored or fenced.
//!
//! Every rejection is `application/problem+json` (RFC 9457) with a stable
//! `type` (`urn:idemstore:problem:<slug>`) and a `detail` telling the client
//! what to do. See [`IdempotencyConfig`] for every option.
//!
//! ## Layout
//!
//! Imports flow one way: the tower service on top, the driver below it, the
//! steps below that, the options, problems and bodies at the bottom.
//!
//! - `service.rs`: the tower layer and service;
//! - `drive.rs`: a keyed request from head to answer, as any framework's
//!   middleware drives it (the tower service and `idemstore-actix`);
//! - `work.rs`: the task that runs a reserved request to the end (handler,
//!   body, storing, streaming to the first client);
//! - `steps.rs`: the decisions, independent of tower (another framework's
//!   middleware drives the same steps), the self-renewing lease, and the
//!   count of running work;
//! - `backend.rs`: the async store trait, and the embedded engine behind it;
//! - `config.rs`: every option; `key.rs`: reading the key header;
//!   `fingerprint.rs`: what makes two requests the same; `json.rs`: the
//!   canonical form of a JSON body;
//!   `problem.rs`: every rejection and its status, in one place;
//!   `replay.rs`: stored records to and from HTTP responses; `headers.rs`:
//!   which response headers are stored, and the redaction hook; `body.rs`: body
//!   plumbing; `metrics.rs`: the metrics the layer records; `hooks.rs`: the
//!   application's hooks on stored and replayed records; `routes.rs`: a
//!   policy per route (path patterns); `message.rs`: the
//!   same "once" for message consumers ([`execute_or_replay`]); `ran.rs`: a
//!   handler's word that its request ran nothing, or may have run
//!   ([`Ran`]), which overrides the store policy.

pub mod backend;
mod body;
pub mod config;
pub mod drive;
pub mod fingerprint;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
mod held;
pub mod hooks;
mod json;
mod key;
pub mod message;
pub mod metrics;
pub mod problem;
mod ran;
mod replay;
mod routes;
mod service;
pub mod steps;
mod work;

pub use backend::{Backend, BackendError, Lease, Outcome, RECORD_ROOM};
pub use body::{BoxBody, BoxError};
pub use config::{
    FingerprintSpec, IdempotencyConfig, InFlightPolicy, JsonBody, OversizeResponse, Repeatability,
    ReplayStatus, RoutePolicy, StorePolicy, TenantSource,
};
pub use headers::{DEFAULT_NOT_REPLAYED, Redact, ResponseHeaders, ToStore};
pub use held::HeldKey;
pub use message::{Executed, OnceError, execute_or_replay};
pub use problem::Problem;
pub use ran::Ran;
pub use replay::{FIRST_REQUEST_ID, REPLAYED};
pub use routes::Pattern as RoutePattern;
pub use service::{ConfigError, IdempotencyLayer, IdempotencyService, ResponseFuture};
pub use steps::InFlightWork;

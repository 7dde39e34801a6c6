//! # idemstore-client
//!
//! The client side of the `Idempotency-Key` header, as the public APIs that
//! use it tell their clients to behave: give each logical request a key
//! once, send the same key with every retry, and retry with exponential
//! backoff on failures that may not have reached the server, or whose
//! answer was lost. A middleware for [`reqwest_middleware`]:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use idemstore_client::{IdempotentRetry, RetryPolicy};
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(IdempotentRetry::new(RetryPolicy::default()))
//!     .build();
//! let r = client
//!     .post("http://127.0.0.1:3000/v1/payments")
//!     .header("x-api-key", "sk_test_1")
//!     .body(r#"{"amount":100,"currency":"EUR"}"#)
//!     .send()
//!     .await?;
//! # let _ = r; Ok(()) }
//! ```
//!
//! - Retried, with the same key: connection errors and timeouts (the
//!   request may not have arrived, or the answer was lost on the way back:
//!   the server replays it), 409 (the first attempt still runs), 429 and
//!   503 (come back later), after the server's `Retry-After` when it sends
//!   one, else a random pause under a doubling ceiling ("full jitter").
//! - Never retried: 400 and 422 (the request is wrong, or the key was used
//!   for another request), and every other answer: it is the result.
//! - Bounded: [`RetryPolicy::max_attempts`] and
//!   [`RetryPolicy::max_elapsed`]; a `Retry-After` longer than
//!   [`RetryPolicy::max_retry_after`] ends the retries with that answer.
//! - A client that restarts: with a [`KeyStore`] (on the embedded store),
//!   a request named by a [`LogicalRequest`] extension keeps its key on
//!   disk, written before its first attempt and forgotten when it ends, so
//!   the same logical request sent after a restart resumes the same key.
//!
//! ## Layout
//!
//! `policy` ([`RetryPolicy`], what is retried, `Retry-After`), `keys`
//! ([`KeyKind`], [`LogicalRequest`], [`KeyStore`]), `middleware`
//! ([`IdempotentRetry`]).

mod keys;
mod middleware;
mod policy;

pub use keys::{KeyKind, KeyStore, LogicalRequest};
pub use middleware::{IDEMPOTENCY_KEY, IdempotentRetry};
pub use policy::RetryPolicy;

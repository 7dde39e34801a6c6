//! # idemstore-server
//!
//! What a server binary built on the idempotency layer needs around it, as
//! the `payments` example and `idemproxy` share it: an accept loop that
//! bounds every client in time and number and shuts down in bounded time
//! (`serve.rs`), the flags that pick and tune the backend and the limits
//! (`flags.rs`), the life from listening to a closed store (`lifecycle.rs`),
//! and `GET /metrics` in Prometheus text (`metrics.rs`).
//!
//! Imports flow one way: `lifecycle` uses `serve` and `flags`; `flags` uses
//! `serve`'s [`Limits`](serve::Limits); `metrics` stands alone.

pub mod flags;
pub mod lifecycle;
pub mod metrics;
pub mod serve;

//! The decisions, independent of tower: what a request needs, what the store
//! says, what gets stored. The tower service (`service.rs`) is a thin driver
//! of these steps; another framework's middleware can drive them the same way.
//!
//! 1. [`Idempotency::prepare`] looks at the request head: pass through,
//!    reject (400/401), or go on with a (tenant, key).
//! 2. The driver buffers the body (up to `max_request_bytes`, else 413) and
//!    computes [`fingerprint`](crate::fingerprint::fingerprint).
//! 3. [`Idempotency::begin`] asks the backend: run the handler with a lease,
//!    or answer now (replay, 409, 422, 503).
//! 4. The driver runs the handler under [`Idempotency::run_renewing`], reads
//!    its response body up to `max_response_bytes`, and hands it to
//!    [`Idempotency::finish`], which stores it or frees the key per policy.

use crate::backend::{Backend, BackendError, Lease, Outcome};
use crate::config::{IdempotencyConfig, InFlightPolicy, OversizeResponse, TenantSource};
use crate::key::parse_key;
use crate::problem::Problem;
use crate::replay::{to_replay, to_stored};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Response, StatusCode};
use idemstore::Fingerprint;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// The layer's shared state: backend and configuration.
pub struct Idempotency<B> {
    backend: Arc<B>,
    config: Arc<IdempotencyConfig>,
}

impl<B> Clone for Idempotency<B> {
    fn clone(&self) -> Self {
        Idempotency {
            backend: self.backend.clone(),
            config: self.config.clone(),
        }
    }
}

/// What a request head needs.
#[derive(Debug)]
pub enum Prepared {
    /// Not covered: hand it to the handler untouched.
    PassThrough,
    /// Refused before the handler.
    Reject(Problem),
    /// Covered, with this tenant and key.
    Keyed(Keyed),
}

/// A covered request's scope.
#[derive(Debug, Clone)]
pub struct Keyed {
    /// The tenant's identity (only its digest is stored).
    pub tenant: Vec<u8>,
    /// The idempotency key, decoded.
    pub key: String,
}

/// What the backend said.
pub enum Started<L> {
    /// Run the handler; complete or drop the lease after.
    Run(L),
    /// Answer with this; the handler does not run.
    Respond(Response<Bytes>),
}

/// A handler response body as the driver read it.
pub enum ResponseBody<'a> {
    /// All of it.
    Whole(&'a Bytes),
    /// More than `max_response_bytes`.
    TooLarge,
}

impl<B: Backend> Idempotency<B> {
    /// The layer's core over `backend` with `config`.
    pub fn new(backend: B, config: IdempotencyConfig) -> Self {
        Idempotency {
            backend: Arc::new(backend),
            config: Arc::new(config),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &IdempotencyConfig {
        &self.config
    }

    /// Step 1: classifies a request head.
    pub fn prepare(&self, parts: &Parts) -> Prepared {
        let c = &*self.config;
        if !c.methods.contains(&parts.method)
            || c.paths.as_ref().is_some_and(|f| !f(parts.uri.path()))
        {
            return Prepared::PassThrough;
        }
        let Some(value) = parts.headers.get(&c.header) else {
            return if c.key_required {
                Prepared::Reject(Problem::KeyMissing {
                    header: c.header.to_string(),
                })
            } else {
                Prepared::PassThrough
            };
        };
        if parts.headers.get_all(&c.header).iter().count() > 1 {
            return Prepared::Reject(Problem::KeyMalformed {
                reason: format!(
                    "the {} header was sent more than once; send exactly one key",
                    c.header
                ),
            });
        }
        let key = match parse_key(value, &c.key_len) {
            Ok(k) => k,
            Err(e) => return Prepared::Reject(Problem::KeyMalformed { reason: e.0 }),
        };
        let tenant = match &c.tenant {
            TenantSource::Single => Vec::new(),
            TenantSource::Header(h) => match parts.headers.get(h) {
                Some(v) if !v.is_empty() => v.as_bytes().to_vec(),
                _ => return Prepared::Reject(Problem::TenantMissing),
            },
            TenantSource::Extension(f) => match f(&parts.extensions) {
                Some(t) => t,
                None => return Prepared::Reject(Problem::TenantMissing),
            },
        };
        Prepared::Keyed(Keyed { tenant, key })
    }

    /// Step 3: asks the backend. Waits for an in-flight request when the
    /// policy says so.
    pub async fn begin(&self, keyed: &Keyed, fingerprint: Fingerprint) -> Started<B::Lease> {
        let deadline = match self.config.in_flight {
            InFlightPolicy::Wait(d) => Some(tokio::time::Instant::now() + d),
            InFlightPolicy::Conflict => None,
        };
        let mut pause = Duration::from_millis(5);
        loop {
            let outcome = self
                .backend
                .begin(&keyed.tenant, keyed.key.as_bytes(), fingerprint)
                .await;
            let problem = match outcome {
                Ok(Outcome::Reserved(lease)) => return Started::Run(lease),
                Ok(Outcome::Replay(stored)) => {
                    return Started::Respond(to_replay(&stored, self.config.replay_status));
                }
                Ok(Outcome::Mismatch)
                | Ok(Outcome::InFlight {
                    same_request: false,
                    ..
                }) => Problem::Mismatch,
                Ok(Outcome::InFlight { retry_after, .. }) => {
                    let now = tokio::time::Instant::now();
                    match deadline {
                        Some(d) if now < d => {
                            tokio::time::sleep(pause.min(d - now)).await;
                            pause = (pause * 2).min(Duration::from_millis(100));
                            continue;
                        }
                        _ => Problem::InFlight { retry_after },
                    }
                }
                Err(e) => backend_problem(&e),
            };
            return Started::Respond(problem.to_response());
        }
    }

    /// Step 4a: runs the handler future, renewing the lease every
    /// `renew_every` (at most a third of the backend's lease) while it runs. A failed renewal is not fatal: the handler
    /// finishes, and its completion is refused if the key was taken over.
    pub async fn run_renewing<F: Future>(&self, lease: &mut B::Lease, handler: F) -> F::Output {
        let every = match self.backend.lease() {
            Some(lease) => self.config.renew_every.min(lease / 3),
            None => self.config.renew_every,
        };
        let mut handler = pin!(handler);
        loop {
            let mut sleep = pin!(tokio::time::sleep(every));
            let renew_due = std::future::poll_fn(|cx| {
                if let Poll::Ready(out) = handler.as_mut().poll(cx) {
                    return Poll::Ready(Some(out));
                }
                sleep.as_mut().poll(cx).map(|()| None)
            })
            .await;
            match renew_due {
                Some(out) => return out,
                None => {
                    if let Err(e) = lease.renew().await {
                        tracing::warn!(error = %e, "idempotency lease renewal failed");
                    }
                }
            }
        }
    }

    /// Step 4b: stores the handler's response or frees the key, per policy.
    /// Returns whether it was stored. Store failures here are logged, not
    /// returned: the handler already ran, so the client gets its response.
    pub async fn finish(
        &self,
        lease: B::Lease,
        status: StatusCode,
        headers: &HeaderMap,
        body: ResponseBody<'_>,
    ) -> bool {
        let c = &*self.config;
        if !c.store.stores(status) {
            if let Err(e) = lease.abort().await {
                tracing::warn!(error = %e, "freeing an idempotency key failed");
            }
            return false;
        }
        let record = match body {
            ResponseBody::Whole(bytes) => to_stored(status, headers, bytes.clone()),
            ResponseBody::TooLarge => match c.oversize {
                OversizeResponse::Release => {
                    if let Err(e) = lease.abort().await {
                        tracing::warn!(error = %e, "freeing an idempotency key failed");
                    }
                    return false;
                }
                OversizeResponse::StoreNotice => notice(c.max_response_bytes),
            },
        };
        match lease.complete(record).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "storing an idempotent response failed; a retry may run the handler again");
                false
            }
        }
    }
}

/// The record stored in place of a response too large to store.
fn notice(limit: usize) -> idemstore::Response {
    let p = Problem::ResponseNotReplayable { limit }.to_response();
    to_stored(p.status(), p.headers(), p.body().clone())
}

/// The answer for a backend failure before the handler ran.
fn backend_problem(e: &BackendError) -> Problem {
    match e {
        BackendError::InvalidKey(m) => Problem::KeyMalformed { reason: m.clone() },
        BackendError::Collision => Problem::KeyCollision,
        other => {
            // The full message (paths, causes) goes to the log, not the client.
            tracing::error!(error = %other, "idempotency store unavailable; request refused");
            Problem::StoreUnavailable {
                reason: "the store could not be reached or written".into(),
            }
        }
    }
}

//! The decisions, independent of tower: what a request needs, what the store
//! says, what gets stored. The tower service (`service.rs`) and the task that
//! runs a reserved request (`work.rs`) drive these steps; another framework's
//! middleware can drive them the same way.
//!
//! 1. [`Idempotency::prepare`] looks at the request head: pass through,
//!    reject (400/401), or go on with a (tenant, key).
//! 2. The driver buffers the body (up to `max_request_bytes`, else 413) and
//!    computes [`fingerprint`](crate::fingerprint::fingerprint).
//! 3. [`Idempotency::begin`] asks the backend: run the handler with a lease,
//!    or answer now (replay, 409, 422, 503).
//! 4. The driver runs the handler and reads its response under a
//!    [`Renewing`] lease, in a task of its own, and hands the result to
//!    [`Idempotency::finish`], which stores it or frees the key per policy.

use crate::backend::{Backend, BackendError, Lease, Outcome};
use crate::config::{IdempotencyConfig, InFlightPolicy, OversizeResponse, TenantSource};
use crate::fingerprint::Members;
use crate::headers::ResponseHeaders;
use crate::hooks::{self, RecordEvent};
use crate::key::parse_key;
use crate::metrics;
use crate::problem::Problem;
use crate::replay::{BODY_MEMBERS, first_request_id, to_replay, to_stored};
use crate::routes::{Policies, Policy};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Response, StatusCode};
use idemstore::{Fingerprint, Key, StoredResponse, Tenant};
use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;

/// The layer's shared state: backend, configuration, recent durations, and
/// the work running for reserved keys.
pub struct Idempotency<B> {
    backend: Arc<B>,
    config: Arc<IdempotencyConfig>,
    policies: Arc<Policies>,
    durations: Arc<Durations>,
    work: InFlightWork,
}

impl<B> Clone for Idempotency<B> {
    fn clone(&self) -> Self {
        Idempotency {
            backend: self.backend.clone(),
            config: self.config.clone(),
            policies: self.policies.clone(),
            durations: self.durations.clone(),
            work: self.work.clone(),
        }
    }
}

/// The keyed requests in flight: from the moment their body is read (before
/// the key is reserved) until their reserved work (handler, response,
/// storing) is done, in tasks of their own that outlive their connections.
/// `max_in_flight` caps this count. A server
/// shutting down waits for [`InFlightWork::idle`] after its connections
/// close and before it closes the store, so no handler is cut short by the
/// shutdown. (A backend that retries failed completions in the background
/// has a wait of its own, e.g. `RedisBackend::settled`.)
#[derive(Clone, Default, Debug)]
pub struct InFlightWork(Arc<WorkCount>);

#[derive(Default, Debug)]
struct WorkCount {
    running: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

impl InFlightWork {
    /// How many are running now.
    pub fn count(&self) -> usize {
        self.0.running.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves once none is running.
    pub async fn idle(&self) {
        loop {
            let notified = self.0.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Counts one piece of work until the guard is dropped, unless `max`
    /// are running already.
    pub(crate) fn try_start(&self, max: usize) -> Option<WorkGuard> {
        use std::sync::atomic::Ordering;
        self.0
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| WorkGuard(self.clone()))
    }

    /// Counts one piece of work until the guard is dropped.
    pub(crate) fn start(&self) -> WorkGuard {
        self.0
            .running
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        WorkGuard(self.clone())
    }
}

/// Held by a running piece of work.
pub(crate) struct WorkGuard(InFlightWork);

impl Drop for WorkGuard {
    fn drop(&mut self) {
        let w = &(self.0).0;
        if w.running.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            w.idle.notify_waiters();
        }
    }
}

/// Paths whose request durations are tracked one by one; requests to other
/// paths share one figure (a path can hold ids, so the map is bounded).
const TRACKED_PATHS: usize = 256;

/// How long recent keyed requests took from reservation to stored response,
/// per path: an exponentially weighted mean (weight 1/4 for the newest).
#[derive(Default)]
struct Durations {
    by_path: Mutex<(HashMap<String, Duration>, Option<Duration>)>,
}

impl Durations {
    fn record(&self, path: &str, took: Duration) {
        let mut g = self.by_path.lock().unwrap_or_else(|p| p.into_inner());
        let blend = |old: Option<Duration>| match old {
            Some(o) => (o * 3 + took) / 4,
            None => took,
        };
        let (paths, other) = &mut *g;
        if let Some(d) = paths.get_mut(path) {
            *d = blend(Some(*d));
        } else if paths.len() < TRACKED_PATHS {
            paths.insert(path.to_owned(), took);
        } else {
            *other = Some(blend(*other));
        }
    }

    fn typical(&self, path: &str) -> Option<Duration> {
        let g = self.by_path.lock().unwrap_or_else(|p| p.into_inner());
        g.0.get(path).copied().or(g.1)
    }
}

/// The `Retry-After` for a duplicate of a request still running: its
/// expected rest (`typical - running_for`), at least 1 s, and never past
/// its lease (a holder that stops renewing can be taken over then). With no
/// figures for the path, 1 s.
pub fn retry_after_estimate(
    typical: Option<Duration>,
    running_for: Option<Duration>,
    lease_left: Duration,
) -> Duration {
    let one = Duration::from_secs(1);
    let rest = match typical {
        Some(t) => t.saturating_sub(running_for.unwrap_or_default()),
        None => one,
    };
    rest.min(lease_left).max(one)
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
    /// The request's path (for its `Retry-After` estimate).
    pub path: String,
    /// The request's id, kept with its stored response: its `X-Request-Id`,
    /// else its W3C `traceparent` (visible ASCII, at most 256 bytes).
    pub request_id: Option<String>,
    /// The digests of its JSON body's members, once fingerprinted (see
    /// [`crate::fingerprint::digest`]): stored with its record, and compared
    /// with the first request's on a mismatch.
    pub members: Option<Members>,
    /// The settings it is handled with (its route's).
    pub(crate) policy: Arc<Policy>,
    /// What the handler said of its response (a [`Ran`](crate::Ran)
    /// response extension), which overrides the store policy.
    pub ran: Option<crate::Ran>,
}

/// Longest request id kept with a record.
const MAX_REQUEST_ID: usize = 256;

/// The request id of a request head: `X-Request-Id`, else `traceparent`.
fn request_id(headers: &http::HeaderMap) -> Option<String> {
    ["x-request-id", "traceparent"].iter().find_map(|h| {
        let v = headers.get(*h)?.to_str().ok()?.trim();
        (!v.is_empty() && v.len() <= MAX_REQUEST_ID).then(|| v.to_owned())
    })
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
    /// Not replayable: more than `max_response_bytes`, or still streaming
    /// at the capture deadline.
    TooLarge,
}

/// What [`Idempotency::finish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// The response (or the not-replayable notice) is stored: retries
    /// replay it.
    Stored,
    /// Not stored, by policy: the key is free and a retry runs again.
    Freed,
    /// The lease was lost to a later request before the response could be
    /// stored: that request's result is the key's.
    Fenced,
    /// Not stored yet: the backend retries in the background and the key
    /// stays reserved. Tell the client to come back.
    NotStored,
}

impl<B: Backend> Idempotency<B> {
    /// The layer's core over `backend` with `config`.
    ///
    /// # Panics
    ///
    /// If a route pattern does not parse (a startup-time programming
    /// error; `IdempotencyLayer::try_new` says so as an error instead).
    pub fn new(backend: B, config: IdempotencyConfig) -> Self {
        let policies = Policies::new(&config).unwrap_or_else(|e| panic!("{e}"));
        Idempotency {
            backend: Arc::new(backend),
            config: Arc::new(config),
            policies: Arc::new(policies),
            durations: Arc::default(),
            work: InFlightWork::default(),
        }
    }

    /// The work running for reserved keys.
    pub fn in_flight_work(&self) -> &InFlightWork {
        &self.work
    }

    /// Notes how long a keyed request on `path` took to be stored.
    pub fn record_duration(&self, path: &str, took: Duration) {
        self.durations.record(path, took);
    }

    /// The expiry header for a response to `keyed` stored now, if one is
    /// configured and its retention is known (its route's, or the
    /// backend's).
    pub fn expiry_now(&self, keyed: &Keyed) -> Option<(http::HeaderName, http::HeaderValue)> {
        let name = self.config.expiry_header.clone()?;
        let retention = keyed
            .policy
            .retention
            .or_else(|| self.backend.retention())?;
        let at = std::time::SystemTime::now() + retention;
        Some((name, crate::replay::http_date(at)))
    }

    /// The configuration.
    pub fn config(&self) -> &IdempotencyConfig {
        &self.config
    }

    /// Step 1: classifies a request head. Counts a rejection (see
    /// [`crate::metrics`]).
    pub fn prepare(&self, parts: &Parts) -> Prepared {
        let prepared = self.classify(parts);
        if let Prepared::Reject(_) = prepared {
            metrics::request(metrics::Outcome::Rejected);
        }
        prepared
    }

    fn classify(&self, parts: &Parts) -> Prepared {
        let c = &*self.config;
        if !c.methods.contains(&parts.method)
            || c.paths.as_ref().is_some_and(|f| !f(parts.uri.path()))
        {
            return Prepared::PassThrough;
        }
        let policy = self.policies.for_path(parts.uri.path());
        let Some(value) = parts.headers.get(&policy.header) else {
            return if policy.key_required {
                Prepared::Reject(Problem::KeyMissing {
                    header: policy.header.to_string(),
                })
            } else {
                Prepared::PassThrough
            };
        };
        if parts.headers.get_all(&policy.header).iter().count() > 1 {
            return Prepared::Reject(Problem::KeyMalformed {
                reason: format!(
                    "the {} header was sent more than once; send exactly one key",
                    policy.header
                ),
            });
        }
        let key = match parse_key(value, &policy.key_len) {
            Ok(k) => k,
            Err(e) => return Prepared::Reject(Problem::KeyMalformed { reason: e.0 }),
        };
        if let Some(r) = &c.repeatability {
            let first_sent = parts
                .headers
                .get("repeatability-first-sent")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
            match first_sent {
                None => return Prepared::Reject(Problem::FirstSentInvalid),
                Some(t) if t + r.window < std::time::SystemTime::now() => {
                    return Prepared::Reject(Problem::RepeatabilityWindowPassed {
                        window: r.window,
                    });
                }
                Some(_) => {}
            }
        }
        let tenant = match &c.tenant {
            TenantSource::Single => Vec::new(),
            TenantSource::Header(h) => match parts.headers.get(h) {
                Some(_) if parts.headers.get_all(h).iter().count() > 1 => {
                    return Prepared::Reject(Problem::TenantAmbiguous {
                        header: h.to_string(),
                    });
                }
                Some(v) if !v.is_empty() => v.as_bytes().to_vec(),
                _ => return Prepared::Reject(Problem::TenantMissing),
            },
            TenantSource::Extension(f) => match f(&parts.extensions) {
                Some(t) => t,
                None => return Prepared::Reject(Problem::TenantMissing),
            },
        };
        Prepared::Keyed(Keyed {
            tenant,
            key,
            path: parts.uri.path().to_owned(),
            request_id: request_id(&parts.headers),
            members: None,
            policy: policy.clone(),
            ran: None,
        })
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
                .begin_with(
                    Tenant::new(&keyed.tenant),
                    Key::new(&keyed.key),
                    fingerprint,
                    keyed.policy.retention,
                )
                .await;
            let problem = match outcome {
                Ok(Outcome::Reserved(lease)) => {
                    metrics::request(metrics::Outcome::Executed);
                    tracing::Span::current().record("token", lease.token());
                    return Started::Run(lease);
                }
                Ok(Outcome::Replay(stored)) => {
                    metrics::request(metrics::Outcome::Replayed);
                    let first_request_id = first_request_id(&stored);
                    hooks::fire(
                        self.config.hooks.replayed.as_ref(),
                        &RecordEvent {
                            tenant: &keyed.tenant,
                            key: &keyed.key,
                            status: stored.response.status,
                            first_started_at: Some(stored.started_at),
                            stored_at: Some(stored.completed_at),
                            first_request_id,
                        },
                    );
                    tracing::info!(
                        first_request_id,
                        first_started_at_ms = stored.started_at.0,
                        stored_at_ms = stored.completed_at.0,
                        status = stored.response.status,
                        "replaying the response of the key's first execution"
                    );
                    return Started::Respond(to_replay(
                        &stored,
                        keyed.policy.replay_status,
                        &self.config.replayed_header,
                        self.config.expiry_header.as_ref(),
                    ));
                }
                Ok(Outcome::Expired { expired_at }) => Problem::KeyExpired {
                    expired_at: std::time::UNIX_EPOCH + Duration::from_millis(expired_at.0),
                },
                Ok(Outcome::Mismatch(stored)) => Problem::Mismatch {
                    members: differing_members(stored.as_deref(), keyed.members.as_ref()),
                },
                Ok(Outcome::InFlight {
                    same_request: false,
                    ..
                }) => Problem::Mismatch {
                    members: Vec::new(),
                },
                Ok(Outcome::InFlight {
                    lease_left,
                    running_for,
                    ..
                }) => {
                    let now = tokio::time::Instant::now();
                    match deadline {
                        Some(d) if now < d => {
                            tokio::time::sleep(pause.min(d - now)).await;
                            pause = (pause * 2).min(Duration::from_millis(100));
                            continue;
                        }
                        _ => Problem::InFlight {
                            retry_after: retry_after_estimate(
                                self.durations.typical(&keyed.path),
                                running_for,
                                lease_left,
                            ),
                        },
                    }
                }
                Err(e) => backend_problem(&e),
            };
            metrics::request(match problem {
                Problem::Mismatch { .. } => metrics::Outcome::Mismatch,
                Problem::KeyExpired { .. } => metrics::Outcome::Expired,
                Problem::InFlight { .. } => metrics::Outcome::Conflict,
                Problem::StoreUnavailable { .. } => metrics::Outcome::Unavailable,
                _ => metrics::Outcome::Rejected,
            });
            return Started::Respond(problem.to_response());
        }
    }

    /// How often a lease is renewed while its work runs: `renew_every`, and
    /// at least three times per backend lease.
    pub(crate) fn renew_interval(&self) -> Duration {
        match self.backend.lease() {
            Some(lease) => self.config.renew_every.min(lease / 3),
            None => self.config.renew_every,
        }
    }

    /// Step 4a: a lease that renews itself while the driver awaits.
    pub fn renewing(&self, lease: B::Lease) -> Renewing<B::Lease> {
        Renewing::new(lease, self.renew_interval())
    }

    /// Step 4b: stores the handler's response or frees the key, per policy.
    /// A response the backend cannot hold (headers past its record limit)
    /// stores the not-replayable notice instead: the key is never freed
    /// because of what the handler produced.
    pub async fn finish(
        &self,
        lease: Renewing<B::Lease>,
        keyed: &Keyed,
        status: StatusCode,
        headers: &HeaderMap,
        body: ResponseBody<'_>,
    ) -> Finished {
        let Some(lease) = lease.take() else {
            return Finished::Fenced;
        };
        let record = {
            let fits = |r: &idemstore::Response| lease.fits(r).is_ok();
            self.record_of(&fits, keyed, status, headers, body)
        };
        let Some(record) = record else {
            return free(lease).await;
        };
        match lease.complete(record).await {
            Ok(()) => Finished::Stored,
            Err(BackendError::Fenced(e)) => {
                tracing::warn!(error = %e, "idempotency lease lost before the response was stored; a later request holds the key");
                Finished::Fenced
            }
            Err(e) => {
                tracing::error!(error = %e, "storing an idempotent response failed; the key stays reserved and the store retries");
                Finished::NotStored
            }
        }
    }

    /// What a handler that stores the response itself
    /// (`RoutePolicy::stored_by_handler`) stores for `keyed`: the record
    /// [`record_of`](Self::record_of) builds of a whole body.
    pub(crate) fn recorder(&self, keyed: &Keyed) -> Arc<crate::held::Recorder> {
        let core = self.clone();
        let keyed = keyed.clone();
        Arc::new(
            move |lease: &dyn crate::held::Fits, status, headers: &HeaderMap, body: &Bytes| {
                let fits = |r: &idemstore::Response| lease.takes(r);
                // The same bound as on the layer's own path.
                let body = if body.len() > core.config.max_response_bytes {
                    ResponseBody::TooLarge
                } else {
                    ResponseBody::Whole(body)
                };
                core.record_of(&fits, &keyed, status, headers, body)
            },
        )
    }

    /// The record of a response, as [`finish`](Self::finish) stores it:
    /// `None` when the route's policy stores none of it, or the handler said
    /// it ran nothing (the key is then freed); every response the handler
    /// said may have run is stored; the not-replayable notice for a body too large, one the
    /// redaction hook failed on, or one the lease cannot take (`fits`).
    pub(crate) fn record_of(
        &self,
        fits: &dyn Fn(&idemstore::Response) -> bool,
        keyed: &Keyed,
        status: StatusCode,
        headers: &HeaderMap,
        body: ResponseBody<'_>,
    ) -> Option<idemstore::Response> {
        let c = &*self.config;
        let stores = match keyed.ran {
            Some(crate::Ran::Nothing) => false,
            Some(crate::Ran::Unknown) => true,
            None => keyed.policy.store.stores(status),
        };
        if !stores {
            return None;
        }
        let request_id = keyed.request_id.as_deref();
        let mut record = match body {
            ResponseBody::Whole(bytes) => match &c.redact {
                None => to_stored(
                    status,
                    headers,
                    bytes.clone(),
                    request_id,
                    &c.response_headers,
                ),
                Some(r) => match r.run(status, headers, bytes) {
                    Some((h, b)) => to_stored(status, &h, b, request_id, &c.response_headers),
                    None => notice(c.max_response_bytes, request_id),
                },
            },
            ResponseBody::TooLarge => match c.oversize {
                // A request that may have run is never freed.
                OversizeResponse::Release if keyed.ran != Some(crate::Ran::Unknown) => {
                    return None;
                }
                OversizeResponse::Release => notice(c.max_response_bytes, request_id),
                OversizeResponse::StoreNotice => {
                    notice(c.max_response_bytes, keyed.request_id.as_deref())
                }
            },
        };
        let with_members = |mut r: idemstore::Response| {
            if let Some(m) = &keyed.members {
                r.headers
                    .push((BODY_MEMBERS.to_owned(), m.encode().into_bytes()));
            }
            r
        };
        record = with_members(record);
        if !fits(&record) {
            tracing::warn!("response cannot be stored; storing the not-replayable notice");
            record = with_members(notice(c.max_response_bytes, request_id));
            if !fits(&record) {
                record = notice(c.max_response_bytes, request_id);
            }
        }
        Some(record)
    }
}

/// Frees the key of a response that is not stored.
async fn free<L: Lease>(lease: L) -> Finished {
    match lease.abort().await {
        Ok(()) => Finished::Freed,
        Err(BackendError::Fenced(_)) => Finished::Fenced,
        Err(e) => {
            // The key ends with its lease.
            tracing::warn!(error = %e, "freeing an idempotency key failed");
            Finished::Freed
        }
    }
}

/// A lease that is renewed every `every` while [`Renewing::run`] awaits,
/// until it is fenced. The schedule carries over from one `run` to the next.
/// Dropped before [`Idempotency::finish`] took it (the runtime is shutting
/// down under the work), it abandons the lease: the key stays reserved until
/// the lease ends, since the handler may have made its side effects.
pub struct Renewing<L: Lease> {
    lease: Option<L>,
    every: Duration,
    next: Instant,
    fenced: bool,
}

impl<L: Lease> Renewing<L> {
    /// `lease`, renewed every `every` while [`run`](Self::run) awaits.
    pub(crate) fn new(lease: L, every: Duration) -> Self {
        Renewing {
            lease: Some(lease),
            every,
            next: Instant::now() + every,
            fenced: false,
        }
    }

    /// Awaits `fut`, renewing the lease when due. A failed renewal is not
    /// fatal: the work goes on, and its completion is refused if the key was
    /// taken over (after which renewals stop).
    pub async fn run<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = pin!(fut);
        loop {
            if self.fenced {
                return fut.await;
            }
            let mut sleep = pin!(tokio::time::sleep_until(self.next));
            let due = std::future::poll_fn(|cx| {
                if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                    return Poll::Ready(Some(out));
                }
                sleep.as_mut().poll(cx).map(|()| None)
            })
            .await;
            if let Some(out) = due {
                return out;
            }
            self.next = Instant::now() + self.every;
            let Some(lease) = self.lease.as_mut() else {
                return fut.await;
            };
            match lease.renew().await {
                Ok(()) => {}
                Err(BackendError::Fenced(e)) => {
                    tracing::warn!(error = %e, "idempotency lease lost while the request ran");
                    self.fenced = true;
                }
                Err(e) => tracing::warn!(error = %e, "idempotency lease renewal failed"),
            }
        }
    }

    /// Whether the lease was found taken over.
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// The lease (a taken-over one too: its `complete` says so).
    pub(crate) fn take(mut self) -> Option<L> {
        self.lease.take()
    }
}

impl<L: Lease> Drop for Renewing<L> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.abandon();
        }
    }
}

/// The body members in which this request differs from the first, whose
/// record is `stored`: empty unless both bodies were fingerprinted as JSON
/// objects and the record kept its members' digests.
fn differing_members(stored: Option<&StoredResponse>, mine: Option<&Members>) -> Vec<String> {
    let theirs = stored.and_then(|s| {
        s.response
            .headers
            .iter()
            .find(|(n, _)| n == BODY_MEMBERS)
            .and_then(|(_, v)| Members::decode(v))
    });
    match (theirs, mine) {
        (Some(t), Some(m)) => t.differing(m),
        _ => Vec::new(),
    }
}

/// The record stored in place of a response too large to store.
fn notice(limit: usize, request_id: Option<&str>) -> idemstore::Response {
    let p = Problem::ResponseNotReplayable { limit }.to_response();
    // The layer's own response: its headers are stored whatever the policy.
    let all = ResponseHeaders::all_except([]);
    to_stored(p.status(), p.headers(), p.body().clone(), request_id, &all)
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

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn retry_after_is_the_expected_rest_at_least_a_second_and_never_past_the_lease() {
        // A 3 s call 1 s in: 2 s left, not the 60 s of lease left.
        assert_eq!(retry_after_estimate(Some(3 * S), Some(S), 60 * S), 2 * S);
        // Running longer than usual, or nothing known: come back in a second.
        assert_eq!(retry_after_estimate(Some(3 * S), Some(5 * S), 60 * S), S);
        assert_eq!(retry_after_estimate(None, Some(S), 60 * S), S);
        // Capped by the lease: a takeover is possible then.
        assert_eq!(retry_after_estimate(Some(90 * S), None, 10 * S), 10 * S);
        // A holder storing its response (no lease left): a second.
        assert_eq!(retry_after_estimate(Some(3 * S), None, Duration::ZERO), S);
    }

    #[test]
    fn durations_are_tracked_per_path_up_to_a_bound_then_shared() {
        let d = Durations::default();
        d.record("/a", 4 * S);
        d.record("/a", 8 * S);
        assert_eq!(d.typical("/a"), Some(5 * S), "weighted towards the older");
        assert_eq!(d.typical("/b"), None);
        // "/a" and 255 more fill the map.
        for i in 0..TRACKED_PATHS - 1 {
            d.record(&format!("/p{i}"), S);
        }
        d.record("/overflow", 2 * S);
        assert_eq!(d.typical("/another-untracked"), Some(2 * S));
        assert_eq!(d.typical("/a"), Some(5 * S));
    }
}

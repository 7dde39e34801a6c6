//! The tower `Layer` and `Service` (tower-http's layout: `IdempotencyLayer`
//! builds `IdempotencyService`; rejections are HTTP responses, never
//! `S::Error`).

use crate::backend::Backend;
use crate::body::{BoxBody, BoxError, boxed, full};
use crate::config::IdempotencyConfig;
use crate::fingerprint::digest;
use crate::held::HeldKey;
use crate::problem::{Problem, ProblemCode};
use crate::routes::{Policies, Policy};
use crate::steps::{Idempotency, Keyed, Prepared, Started};
use crate::work::{self, Holding};
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};
use tracing::Instrument;

/// Applies idempotency to every request of the wrapped service.
pub struct IdempotencyLayer<B> {
    core: Idempotency<B>,
}

impl<B> Clone for IdempotencyLayer<B> {
    fn clone(&self) -> Self {
        IdempotencyLayer {
            core: self.core.clone(),
        }
    }
}

impl<B: Backend> IdempotencyLayer<B> {
    /// A layer over `backend` (e.g. an [`idemstore::Store`]) with
    /// `config`.
    ///
    /// # Panics
    ///
    /// If the configuration cannot work with the backend (see
    /// [`try_new`](Self::try_new)); a startup-time programming error.
    pub fn new(backend: B, config: IdempotencyConfig) -> Self {
        match Self::try_new(backend, config) {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        }
    }

    /// A layer over `backend` with `config`, or why they do not fit together.
    pub fn try_new(backend: B, config: IdempotencyConfig) -> Result<Self, ConfigError> {
        let policies = Policies::new(&config).map_err(ConfigError)?;
        for p in policies.all() {
            check_policy(&backend, &config, p)?;
        }
        if let Some(max) = backend.max_response_body()
            && config.max_response_bytes > max
        {
            return Err(ConfigError(format!(
                "the layer stores response bodies up to {} bytes but the store's records hold \
                 bodies up to {max} (its record limit less room for the key and headers); \
                 lower max_response_bytes or raise the store's idemstore::Config::max_record_bytes",
                config.max_response_bytes
            )));
        }
        if config.capture_timeout.is_zero() {
            return Err(ConfigError(
                "capture_timeout must be longer than zero".into(),
            ));
        }
        if config.renew_every.is_zero()
            || backend
                .lease()
                .is_some_and(|l| l < Duration::from_millis(3))
        {
            return Err(ConfigError(
                "renew_every and the backend's lease must be longer than zero".into(),
            ));
        }
        Ok(IdempotencyLayer {
            core: Idempotency::new(backend, config),
        })
    }
}

impl<B: Backend> IdempotencyLayer<B> {
    /// The work running for reserved keys, in tasks that outlive their
    /// connections: a server shutting down waits for
    /// [`idle`](crate::InFlightWork::idle) before closing the store.
    pub fn in_flight_work(&self) -> crate::InFlightWork {
        self.core.in_flight_work().clone()
    }
}

/// A layer configuration that cannot work, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid idempotency layer configuration: {0}")]
pub struct ConfigError(pub String);

impl<S, B> Layer<S> for IdempotencyLayer<B> {
    type Service = IdempotencyService<S, B>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService {
            inner,
            core: self.core.clone(),
        }
    }
}

/// The service [`IdempotencyLayer`] produces.
pub struct IdempotencyService<S, B> {
    inner: S,
    core: Idempotency<B>,
}

impl<S: Clone, B> Clone for IdempotencyService<S, B> {
    fn clone(&self) -> Self {
        IdempotencyService {
            inner: self.inner.clone(),
            core: self.core.clone(),
        }
    }
}

/// The future of [`IdempotencyService`].
pub type ResponseFuture<E> = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, E>> + Send>>;

fn problem_response(p: &Problem) -> Response<BoxBody> {
    p.to_response().map(full)
}

/// Whether the settings of one route (or the layer's own) work with
/// `backend`.
fn check_policy<B: Backend>(
    backend: &B,
    config: &IdempotencyConfig,
    p: &Policy,
) -> Result<(), ConfigError> {
    if let Some(max) = backend.max_key_len()
        && *p.key_len.end() > max
    {
        return Err(ConfigError(format!(
            "the layer accepts keys up to {} bytes but the store only up to {max}; \
             raise the store's key length (idemstore::Config::key_len) or lower the layer's",
            p.key_len.end()
        )));
    }
    if p.key_len.start() > p.key_len.end() || *p.key_len.start() == 0 {
        return Err(ConfigError(format!(
            "key_len {:?} must be a non-empty range starting at 1 or more",
            p.key_len
        )));
    }
    if let Some(j) = &p.fingerprint.json
        && let Some(bad) = j
            .members
            .iter()
            .find(|m| !m.is_empty() && !m.starts_with('/'))
    {
        return Err(ConfigError(format!(
            "JSON pointer {bad:?} must be empty or start with '/' (RFC 6901), e.g. \"/amount\""
        )));
    }
    if let (Some(r), Some(lease)) = (p.retention, backend.lease())
        && r <= lease
    {
        return Err(ConfigError(format!(
            "a route's retention ({r:?}) must be longer than the backend's lease ({lease:?})"
        )));
    }
    if let (Some(r), Some(retention)) = (&config.repeatability, p.retention.or(backend.retention()))
        && r.window > retention
    {
        return Err(ConfigError(format!(
            "the repeatability window ({:?}) is longer than the backend keeps records ({retention:?}): \
             a repeat inside the window could find no record and run again; shorten the window \
             or raise the retention",
            r.window
        )));
    }
    Ok(())
}

/// The layer's answers to a repeatable request that are `accepted`
/// although they are problems (OASIS): the first request is still running
/// (409), or the request ran (its response could not be replayed or stored
/// yet, or the handler failed). Every other problem refused the request
/// before anything ran: `rejected`. The handler's answers and replays are
/// `accepted`.
const REPEATABILITY_ACCEPTED_PROBLEMS: [&str; 4] = [
    "request-in-flight",
    "response-not-replayable",
    "response-not-stored",
    "handler-failed",
];

/// Adds `Repeatability-Result` to the answer to a keyed request under the
/// OASIS profile (`repeatable`).
fn repeatability_result(repeatable: bool, r: &mut Response<BoxBody>) {
    if !repeatable {
        return;
    }
    let rejected = r
        .extensions()
        .get::<ProblemCode>()
        .is_some_and(|c| !REPEATABILITY_ACCEPTED_PROBLEMS.contains(&c.0));
    let v = if rejected { "rejected" } else { "accepted" };
    r.headers_mut()
        .insert("repeatability-result", http::HeaderValue::from_static(v));
}

impl<S, B, ReqB, ResB> Service<Request<ReqB>> for IdempotencyService<S, B>
where
    S: Service<Request<BoxBody>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Backend,
    ReqB: Body<Data = Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + Unpin + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // The clone that was driven to readiness serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let core = self.core.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let keyed = match core.prepare(&parts) {
                Prepared::PassThrough => {
                    let resp = inner.call(Request::from_parts(parts, boxed(body))).await?;
                    return Ok(resp.map(boxed));
                }
                Prepared::Reject(p) => {
                    let mut r = problem_response(&p);
                    repeatability_result(core.config().repeatability.is_some(), &mut r);
                    return Ok(r);
                }
                Prepared::Keyed(k) => k,
            };
            let span = request_span(&keyed);
            let repeatable = core.config().repeatability.is_some();
            let mut r = keyed_request(core, inner, parts, body, keyed)
                .instrument(span)
                .await?;
            repeatability_result(repeatable, &mut r);
            Ok(r)
        })
    }
}

/// The span of one keyed request: the tenant's digest (a prefix) and the
/// key's index digest (as the Redis backend names its hash), never the raw
/// tenant or key; `outcome` and `token` are recorded as they become known.
fn request_span(keyed: &Keyed) -> tracing::Span {
    // The digests cost a few hundred nanoseconds: only when someone listens.
    if !tracing::enabled!(tracing::Level::INFO) {
        return tracing::Span::none();
    }
    let tenant = idemstore::TenantDigest::of(&keyed.tenant);
    let ik = idemstore::internals::default_index_hash(&tenant, keyed.key.as_bytes());
    let t = &tenant.0;
    tracing::info_span!(
        "idempotency",
        tenant = format_args!("{:02x}{:02x}{:02x}{:02x}", t[0], t[1], t[2], t[3]),
        key = format_args!("{:016x}{:016x}", ik.hi, ik.lo),
        outcome = tracing::field::Empty,
        token = tracing::field::Empty,
    )
}

/// A keyed request after its head was read: its body, the backend, and the
/// handler in a task of its own when reserved.
async fn keyed_request<S, B, ReqB, ResB>(
    core: Idempotency<B>,
    mut inner: S,
    parts: http::request::Parts,
    body: ReqB,
    keyed: Keyed,
) -> Result<Response<BoxBody>, S::Error>
where
    S: Service<Request<BoxBody>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Backend,
    ReqB: Body<Data = Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + Unpin + 'static,
    ResB::Error: Into<BoxError>,
{
    let limit = core.config().max_request_bytes;
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            crate::metrics::request(crate::metrics::Outcome::Rejected);
            return Ok(problem_response(&Problem::RequestTooLarge { limit }));
        }
        Err(_) => {
            crate::metrics::request(crate::metrics::Outcome::Rejected);
            return Ok(problem_response(&Problem::RequestBodyFailed));
        }
    };
    let d = digest(&keyed.policy.fingerprint, &parts, &bytes);
    let fp = d.fingerprint;
    let mut keyed = keyed;
    keyed.members = d.members;
    // Counted from here, before the key is reserved: past the cap nothing
    // is reserved and nothing runs; a shutdown that waits for the work
    // cannot miss a task not yet polled.
    let running = match core.config().max_in_flight {
        Some(max) => match core.in_flight_work().try_start(max) {
            Some(g) => g,
            None => {
                crate::metrics::request(crate::metrics::Outcome::Overloaded);
                return Ok(problem_response(&Problem::Overloaded { limit: max }));
            }
        },
        None => core.in_flight_work().start(),
    };
    // From `begin` on, everything runs in a task of its own: a client that
    // goes away while the store reserves the key (its reply on the way)
    // cancels nothing, so no reservation is left without its holder; once
    // reserved, the handler, reading its response and storing it run to
    // the end and never free the key (see work.rs).
    let (reply, answer) = tokio::sync::oneshot::channel();
    let task = async move {
        let lease = match core.begin(&keyed, fp).await {
            Started::Respond(r) => {
                let _ = reply.send(Ok(r.map(full)));
                return;
            }
            Started::Run(lease) => lease,
        };
        let mut parts = parts;
        let holding = if keyed.policy.stored_by_handler {
            let held = HeldKey::new(lease, core.recorder(&keyed));
            parts.extensions.insert(held.clone());
            Holding::Handler(held)
        } else {
            Holding::Layer(lease)
        };
        let request = Request::from_parts(parts, boxed(Full::new(bytes)));
        // Called inside the task, where a panic of `call` itself is
        // caught like one of its future.
        let handler = async move { inner.call(request).await };
        work::run(core, holding, handler, keyed, reply, running).await;
    };
    tokio::spawn(task.instrument(tracing::Span::current()));
    match answer.await {
        Ok(result) => result,
        // The task ended without answering (a bug in the layer).
        Err(_) => Ok(problem_response(&Problem::HandlerFailed)),
    }
}

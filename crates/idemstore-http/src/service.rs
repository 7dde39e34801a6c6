//! The tower `Layer` and `Service` (tower-http's layout: `IdempotencyLayer`
//! builds `IdempotencyService`; rejections are HTTP responses, never
//! `S::Error`).

use crate::backend::Backend;
use crate::body::{BoxBody, BoxError, boxed};
use crate::config::IdempotencyConfig;
use crate::drive;
use crate::routes::{Policies, Policy};
use crate::steps::{Idempotency, Prepared};
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

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
    /// The framework-independent core the layer drives, for another
    /// framework's middleware (see [`crate::drive`]): built by
    /// [`try_new`](Self::try_new), so its configuration was checked.
    pub fn core(&self) -> Idempotency<B> {
        self.core.clone()
    }

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
                Prepared::Reject(p) => return Ok(drive::rejected(core.config(), &p)),
                Prepared::Keyed(k) => k,
            };
            let keyed = drive::keyed(core, parts, body, keyed, move |request| inner.call(request));
            match keyed.await {
                Ok((task, answer)) => {
                    tokio::spawn(task);
                    answer.await
                }
                Err(refused) => Ok(refused),
            }
        })
    }
}

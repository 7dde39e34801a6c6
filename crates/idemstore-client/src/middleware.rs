//! [`IdempotentRetry`]: the reqwest-middleware that gives a logical request
//! one key and retries it.

use crate::keys::{KeyKind, KeyStore, LogicalRequest};
use crate::policy::{RetryPolicy, retry_after, retryable};
use http::{Extensions, HeaderName, HeaderValue, Method};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next, Result};
use std::time::{Duration, Instant, SystemTime};

/// The key header sent (the IETF draft's and Stripe's name).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Gives each logical request (a `POST` or `PATCH` through the client) an
/// `Idempotency-Key` once, keeps it across every retry, and retries with
/// exponential backoff and full jitter on connection errors and timeouts,
/// 409, 429 and 503, honouring `Retry-After`; never 400 or 422, a replayed
/// answer (`Idempotent-Replayed`), nor any other answer (see
/// [`RetryPolicy`] for the bounds).
///
/// A request that already carries the key header keeps its key. With a
/// [`KeyStore`], a request named with a [`LogicalRequest`] extension gets
/// the key kept for that name (made and kept before its first attempt,
/// forgotten once it ends with an answer), so a client that restarts, or
/// a request given up with its outcome unknown, resumes it.
/// Requests whose body cannot be cloned (a stream) are sent once.
#[derive(Clone, Debug)]
pub struct IdempotentRetry {
    policy: RetryPolicy,
    kind: KeyKind,
    methods: Vec<Method>,
    header: HeaderName,
    keys: Option<KeyStore>,
}

impl Default for IdempotentRetry {
    fn default() -> Self {
        IdempotentRetry::new(RetryPolicy::default())
    }
}

impl IdempotentRetry {
    /// With `policy`, UUID v4 keys, for POST and PATCH, in `Idempotency-Key`.
    pub fn new(policy: RetryPolicy) -> IdempotentRetry {
        IdempotentRetry {
            policy,
            kind: KeyKind::V4,
            methods: vec![Method::POST, Method::PATCH],
            header: IDEMPOTENCY_KEY,
            keys: None,
        }
    }
    /// Fresh keys of `kind`.
    pub fn key_kind(mut self, kind: KeyKind) -> Self {
        self.kind = kind;
        self
    }
    /// The methods given a key (the others pass through untouched).
    pub fn methods(mut self, m: impl IntoIterator<Item = Method>) -> Self {
        self.methods = m.into_iter().collect();
        self
    }
    /// Another key header.
    pub fn header(mut self, h: HeaderName) -> Self {
        self.header = h;
        self
    }
    /// Keeps the keys of named logical requests in `keys`.
    pub fn keep_keys(mut self, keys: KeyStore) -> Self {
        self.keys = Some(keys);
        self
    }

    /// The key of `req`: its own, its name's kept one, or a fresh one. A
    /// key header that is not visible ASCII is refused, never replaced: a
    /// fresh key would make the server run the request again.
    async fn key_of(&self, req: &Request, ext: &Extensions) -> Result<String> {
        if let Some(v) = req.headers().get(&self.header) {
            return match v.to_str() {
                Ok(k) if !k.trim().is_empty() => Ok(k.to_owned()),
                _ => Err(reqwest_middleware::Error::middleware(KeepError(format!(
                    "the request's {} header is empty or not visible ASCII; send a key of \
                     visible ASCII characters, or none and one is chosen",
                    self.header
                )))),
            };
        }
        match (ext.get::<LogicalRequest>(), &self.keys) {
            (Some(name), Some(keys)) => {
                // The key store fsyncs: off the async threads.
                let (keys, name, kind) = (keys.clone(), name.0.clone(), self.kind);
                tokio::task::spawn_blocking(move || keys.key_for(&name, kind))
                    .await
                    .map_err(|e| KeepError(e.to_string()))
                    .and_then(|r| r.map_err(|e| KeepError(e.to_string())))
                    .map_err(reqwest_middleware::Error::middleware)
            }
            _ => Ok(self.kind.fresh()),
        }
    }

    /// The request ended (an answer that is not retried, or refused for
    /// good): its name's kept key goes.
    async fn ended(&self, ext: &Extensions) {
        if let (Some(name), Some(keys)) = (ext.get::<LogicalRequest>(), &self.keys) {
            let (keys, name) = (keys.clone(), name.0.clone());
            let forgot = tokio::task::spawn_blocking(move || {
                let r = keys.forget(&name);
                (name, r)
            })
            .await;
            if let Ok((name, Err(e))) = forgot {
                tracing::warn!(error = %e, request = %name, "forgetting a finished request's idempotency key failed");
            }
        }
    }
}

/// A key that could not be kept on disk, or a key header that cannot be
/// sent: the request was not sent.
#[derive(Debug)]
struct KeepError(String);

impl std::fmt::Display for KeepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the idempotency key could not be kept, so the request was not sent: {}",
            self.0
        )
    }
}

impl std::error::Error for KeepError {}

/// Whether a transport error is worth another attempt with the same key:
/// the request may not have arrived, or its answer was lost.
fn transient(e: &reqwest_middleware::Error) -> bool {
    match e {
        reqwest_middleware::Error::Reqwest(e) => {
            e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
        }
        reqwest_middleware::Error::Middleware(_) => false,
    }
}

/// Whether an error means the request never left (it could not be built).
fn never_sent(e: &reqwest_middleware::Error) -> bool {
    matches!(e, reqwest_middleware::Error::Reqwest(e) if e.is_builder())
}

#[async_trait::async_trait]
impl Middleware for IdempotentRetry {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        if !self.methods.contains(req.method()) {
            return next.run(req, extensions).await;
        }
        let key = self.key_of(&req, extensions).await?;
        let value = HeaderValue::from_str(&key)
            .map_err(|e| reqwest_middleware::Error::middleware(KeepError(e.to_string())))?;
        req.headers_mut().insert(self.header.clone(), value);
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            // A body that cannot be cloned is sent once.
            let Some(this) = req.try_clone() else {
                let r = next.run(req, extensions).await;
                if r.as_ref().map_or_else(never_sent, |_| true) {
                    self.ended(extensions).await;
                }
                return r;
            };
            let result = next.clone().run(this, extensions).await;
            let pause = match &result {
                Ok(resp) if retryable(resp.status(), resp.headers()) => {
                    match retry_after(resp.headers(), SystemTime::now()) {
                        Some(d) if d > self.policy.max_retry_after => None,
                        Some(d) => Some(d),
                        None => Some(self.policy.backoff_after(attempt)),
                    }
                }
                Ok(_) => {
                    self.ended(extensions).await;
                    return result;
                }
                Err(e) if transient(e) => Some(self.policy.backoff_after(attempt)),
                Err(e) => {
                    // Not retried. Unless it was never sent, its outcome is
                    // unknown: a named request keeps its key for the next try.
                    if never_sent(e) {
                        self.ended(extensions).await;
                    }
                    return result;
                }
            };
            let over = attempt >= self.policy.max_attempts
                || pause.is_none_or(|p| started.elapsed() + p > self.policy.max_elapsed);
            if over {
                // Out of attempts or time with the outcome still unknown:
                // a named request keeps its key for the next try.
                tracing::warn!(key = %key, attempts = attempt, "giving up on an idempotent request whose outcome is unknown; send it again with the same key");
                return result;
            }
            let pause = pause.unwrap_or(Duration::ZERO);
            tracing::debug!(key = %key, attempt, ?pause, "retrying an idempotent request with the same key");
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }
}

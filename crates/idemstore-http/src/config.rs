//! What the layer does, as configuration. Defaults follow the IETF draft
//! "The Idempotency-Key HTTP Header Field" and Stripe's documented
//! behaviour; every behaviour on which public idempotent APIs differ (key
//! header, covered methods, key lengths, which responses are stored, the
//! replay status, ...) is an option here. The one thing without a default is
//! where the tenant comes from: see [`IdempotencyConfig::new`].

use crate::headers::{Redact, ResponseHeaders, ToStore};
use crate::hooks::{Hooks, RecordEvent};
use http::{Extensions, HeaderName, Method};
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

/// Which handler responses are stored (and replayed to retries). A response
/// that is not stored frees the key: a retry runs the handler again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorePolicy {
    /// Every response, 5xx included ("including error responses").
    All,
    /// Everything but 5xx: a server error lets the client retry for real.
    NonServerErrors,
    /// Only 2xx ("only the first successful request").
    SuccessOnly,
}

impl StorePolicy {
    /// Whether a response with `status` is stored.
    pub fn stores(self, status: http::StatusCode) -> bool {
        match self {
            StorePolicy::All => true,
            StorePolicy::NonServerErrors => !status.is_server_error(),
            StorePolicy::SuccessOnly => status.is_success(),
        }
    }
}

/// The status a replay is sent with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayStatus {
    /// The stored status (Stripe, the draft).
    Original,
    /// Always this status, with the stored headers and body (e.g. 409:
    /// "Idempotent request - returning original response").
    Fixed(http::StatusCode),
}

/// What a request with the same key gets while the first is still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InFlightPolicy {
    /// 409 with `Retry-After`: an estimate of when the first request will
    /// be done, from how long it has run and how long this path's recent
    /// requests took, capped by its lease.
    Conflict,
    /// Wait up to this long for the first request to finish and replay its
    /// response; 409 if it is still running then.
    Wait(Duration),
}

/// What happens when the handler's response body exceeds
/// [`IdempotencyConfig::max_response_bytes`]. The first client always gets
/// the whole response, streamed; the layer never buffers more than the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OversizeResponse {
    /// Store a small problem+json record instead (409, type
    /// `response-not-replayable`): a retry is told the request ran and its
    /// response cannot be replayed; the handler never runs twice.
    StoreNotice,
    /// Store nothing and free the key: a retry runs the handler again.
    Release,
}

/// Reads a tenant identity from request extensions.
pub type TenantFromExtensions = Arc<dyn Fn(&Extensions) -> Option<Vec<u8>> + Send + Sync>;

/// How the tenant (whose keys these are) is found in a request. Keys are
/// per tenant: two callers sending the same key get independent records, so
/// this must name what tells callers apart.
///
/// Prefer [`TenantSource::Extension`] with the identity your authentication
/// layer established (the account, not a raw credential), with that layer
/// running *before* (outside) the idempotency layer; see the crate docs for
/// an example. [`TenantSource::Header`] trusts the header as sent.
#[derive(Clone)]
pub enum TenantSource {
    /// The value of a header, e.g. `X-Api-Key` (only its digest is stored).
    /// A request without it is 401; with it sent twice, 400.
    Header(HeaderName),
    /// A value an authentication layer put in the request extensions; a
    /// request without it is 401.
    Extension(TenantFromExtensions),
    /// One tenant for every request: only for a service with a single
    /// client, since every caller then shares one key space.
    Single,
}

impl TenantSource {
    /// Reads the tenant identity from an extension of type `T`, converted to
    /// bytes by `f`.
    pub fn extension<T: Send + Sync + 'static>(f: fn(&T) -> Vec<u8>) -> Self {
        TenantSource::Extension(Arc::new(move |ext: &Extensions| ext.get::<T>().map(f)))
    }
}

impl fmt::Debug for TenantSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantSource::Header(h) => write!(f, "Header({h})"),
            TenantSource::Extension(_) => f.write_str("Extension(..)"),
            TenantSource::Single => f.write_str("Single"),
        }
    }
}

/// What the request fingerprint covers. Two requests with one key and
/// different fingerprints are a mismatch (422), never a replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FingerprintSpec {
    /// The method.
    pub method: bool,
    /// The path and query.
    pub path_and_query: bool,
    /// The body bytes.
    pub body: bool,
    /// These headers' values (in this order; absent and empty differ).
    pub headers: Vec<HeaderName>,
    /// Fingerprint a JSON body by its canonical form instead of its bytes
    /// (default `None`: bytes). See [`JsonBody`].
    pub json: Option<JsonBody>,
}

impl Default for FingerprintSpec {
    fn default() -> Self {
        FingerprintSpec {
            method: true,
            path_and_query: true,
            body: true,
            headers: Vec::new(),
            json: None,
        }
    }
}

impl FingerprintSpec {
    /// The default spec with the body fingerprinted as JSON: key order,
    /// whitespace and string escapes do not matter; numbers count as
    /// written.
    pub fn json() -> Self {
        FingerprintSpec {
            json: Some(JsonBody::default()),
            ..FingerprintSpec::default()
        }
    }
}

/// How a JSON body is fingerprinted: by its canonical form (RFC 8259 JSON;
/// members sorted, no whitespace, strings unescaped, numbers as written),
/// the whole body or only chosen members. A body that is not strict JSON
/// (or nests deeper than 64, or repeats a member name) is fingerprinted as
/// bytes, so it still never matches another body.
///
/// Each member's digest is stored with the record (names and 64-bit
/// digests, never values), so that a 422 can name the top-level members
/// (or the chosen pointers) in which a request differs from the first.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct JsonBody {
    /// Only these members count, as JSON pointers (RFC 6901: `/amount`,
    /// `/customer/id`); an absent member counts as absent. Empty (the
    /// default): the whole body.
    pub members: Vec<String>,
}

/// Which requests the layer covers, beyond their method.
pub type PathFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What a route changes of the layer's configuration; `None` keeps the
/// layer's. Build it with the methods, e.g.
/// `RoutePolicy::default().retention(week).store(StorePolicy::SuccessOnly)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoutePolicy {
    /// The key header.
    pub header: Option<HeaderName>,
    /// Whether a covered request without a key is refused.
    pub key_required: Option<bool>,
    /// Accepted key lengths.
    pub key_len: Option<RangeInclusive<usize>>,
    /// Which responses are stored.
    pub store: Option<StorePolicy>,
    /// The replay status.
    pub replay_status: Option<ReplayStatus>,
    /// What the fingerprint covers.
    pub fingerprint: Option<FingerprintSpec>,
    /// How long the route's records are kept (default: the backend's).
    pub retention: Option<Duration>,
    /// The handler stores the response itself, inside its own transaction
    /// (default false); see [`RoutePolicy::stored_by_handler`].
    pub stored_by_handler: bool,
}

impl RoutePolicy {
    /// Another key header.
    pub fn header(mut self, h: HeaderName) -> Self {
        self.header = Some(h);
        self
    }
    /// Keys required, or not.
    pub fn key_required(mut self, yes: bool) -> Self {
        self.key_required = Some(yes);
        self
    }
    /// Other key bounds.
    pub fn key_len(mut self, r: RangeInclusive<usize>) -> Self {
        self.key_len = Some(r);
        self
    }
    /// Another store policy.
    pub fn store(mut self, s: StorePolicy) -> Self {
        self.store = Some(s);
        self
    }
    /// Another replay status.
    pub fn replay_status(mut self, s: ReplayStatus) -> Self {
        self.replay_status = Some(s);
        self
    }
    /// Another fingerprint.
    pub fn fingerprint(mut self, f: FingerprintSpec) -> Self {
        self.fingerprint = Some(f);
        self
    }
    /// Another retention: the route's records (reservations and stored
    /// responses) are kept this long. Longer than the backend's lease.
    pub fn retention(mut self, d: Duration) -> Self {
        self.retention = Some(d);
        self
    }
    /// The route's handler stores its response itself, in the same
    /// transaction as its own writes (with `idemstore-postgres`:
    /// `complete_in_handler`). The layer hands the reserved key to the
    /// handler as a [`HeldKey`](crate::HeldKey) request extension and renews
    /// its lease until the handler takes it (from then on, keep the
    /// handler's transaction well within the backend's lease). A handler that
    /// takes the key stores (or, rolling back, frees) it, and its response
    /// is sent as it is, stored by nobody else; one that does not take it
    /// leaves the storing to the layer, as on any route.
    pub fn stored_by_handler(mut self) -> Self {
        self.stored_by_handler = true;
        self
    }
}

/// Configuration of [`IdempotencyLayer`](crate::IdempotencyLayer).
#[derive(Clone)]
#[non_exhaustive]
pub struct IdempotencyConfig {
    /// The key header (default `Idempotency-Key`).
    pub header: HeaderName,
    /// Methods covered (default POST and PATCH). Others pass through untouched.
    pub methods: Vec<Method>,
    /// Only paths for which this returns true are covered (default: all).
    pub paths: Option<PathFilter>,
    /// A covered request without a key: `false` (default) passes it through,
    /// `true` answers 400.
    pub key_required: bool,
    /// Accepted key length in bytes (default 1..=255).
    pub key_len: RangeInclusive<usize>,
    /// Which responses are stored (default [`StorePolicy::All`]).
    pub store: StorePolicy,
    /// Replay status (default [`ReplayStatus::Original`]).
    pub replay_status: ReplayStatus,
    /// Same key while the first request runs (default
    /// [`InFlightPolicy::Conflict`]).
    pub in_flight: InFlightPolicy,
    /// What the fingerprint covers (default method, path and query, body).
    pub fingerprint: FingerprintSpec,
    /// Largest request body buffered for fingerprinting; larger → 413
    /// (default 1 MiB).
    pub max_request_bytes: usize,
    /// Largest response body stored (default 1 MiB); see [`OversizeResponse`].
    pub max_response_bytes: usize,
    /// What happens to a response over the limit (default
    /// [`OversizeResponse::StoreNotice`]).
    pub oversize: OversizeResponse,
    /// Where the tenant comes from (no default: see
    /// [`IdempotencyConfig::new`]).
    pub tenant: TenantSource,
    /// Renew the reservation's lease this often while the handler runs
    /// (default 20 s; never less often than three times per store lease).
    pub renew_every: Duration,
    /// How long the layer keeps reading a response body that streams (one
    /// still being produced when the handler returns) to store it (default
    /// 10 s). Past this, the not-replayable notice is stored in its place
    /// (the first client still gets the whole body), so a slow or endless
    /// body never holds its key or its memory for long.
    pub capture_timeout: Duration,
    /// Hooks called when a response is stored and when one is replayed
    /// (default none; see [`crate::hooks`]).
    pub hooks: Hooks,
    /// The header, set to `true`, that marks a replay (default
    /// `Idempotent-Replayed`, as Stripe names it; some clients expect
    /// `Idempotency-Replayed`).
    pub replayed_header: HeaderName,
    /// Most keyed requests in flight at once (from the body read to the
    /// response stored); past it, 503 `overloaded` + `Retry-After` without
    /// reserving the key or running the handler (default: no cap).
    pub max_in_flight: Option<usize>,
    /// A header telling when the key's record expires, as an HTTP-date, on
    /// replays (the stored expiry) and on a first response stored before it
    /// is sent (its completion time plus the backend's retention, by the
    /// layer's clock) (default none; e.g. `Idempotency-Key-Expires`). A
    /// first response whose body streams leaves before it is stored and
    /// carries none.
    pub expiry_header: Option<HeaderName>,
    /// Which response headers are stored and replayed (default: every
    /// end-to-end header but `Set-Cookie`, `Age` and `X-Request-Id`; see
    /// [`ResponseHeaders`]).
    pub response_headers: ResponseHeaders,
    /// Run on a handler's response before it is stored (default none; see
    /// [`Redact`]).
    pub redact: Option<Redact>,
    /// The OASIS Repeatable Requests checks and answer header (default
    /// none; see [`IdempotencyConfig::oasis_repeatable_requests`]).
    pub repeatability: Option<Repeatability>,
    /// Routes with a policy of their own: `(path pattern, changes)`, the
    /// first match winning (default none; see [`IdempotencyConfig::route`]).
    pub routes: Vec<(String, RoutePolicy)>,
}

/// The OASIS Repeatable Requests rules on top of the layer's: a request
/// with a repeatability id must say when it was first sent
/// (`Repeatability-First-Sent`, an HTTP-date), a request first sent longer
/// ago than `window` is refused with 412 (the server no longer vouches for
/// what it did then), and every keyed answer says `Repeatability-Result:
/// accepted` or `rejected`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repeatability {
    /// How long after its first sending a request may be repeated; at most
    /// the backend's retention (checked when the layer is built).
    pub window: Duration,
}

impl IdempotencyConfig {
    /// The defaults (IETF draft and Stripe: `Idempotency-Key`, POST and
    /// PATCH, keys of 1..=255 bytes, every response stored and replayed with
    /// its own status, 409 while the first request runs, 1 MiB limits), with
    /// keys scoped by `tenant`. There is deliberately no default tenant
    /// source: with one shared key space, one caller could be replayed
    /// another's response.
    pub fn new(tenant: TenantSource) -> Self {
        IdempotencyConfig {
            header: HeaderName::from_static("idempotency-key"),
            methods: vec![Method::POST, Method::PATCH],
            paths: None,
            key_required: false,
            key_len: 1..=255,
            store: StorePolicy::All,
            replay_status: ReplayStatus::Original,
            in_flight: InFlightPolicy::Conflict,
            fingerprint: FingerprintSpec::default(),
            max_request_bytes: 1 << 20,
            max_response_bytes: 1 << 20,
            oversize: OversizeResponse::StoreNotice,
            tenant,
            renew_every: Duration::from_secs(20),
            capture_timeout: Duration::from_secs(10),
            hooks: Hooks::default(),
            replayed_header: crate::REPLAYED,
            max_in_flight: None,
            expiry_header: None,
            response_headers: ResponseHeaders::default(),
            redact: None,
            repeatability: None,
            routes: Vec::new(),
        }
    }
}

impl IdempotencyConfig {
    /// A webhook receiver's profile, after the Standard Webhooks
    /// specification: the sender's `webhook-id` is the key (required: a
    /// delivery without one is 400); a redelivery (same id, same body; its
    /// `webhook-timestamp` and `webhook-signature` differ, and are not
    /// compared) replays the first response instead of processing the
    /// event again; only a 2xx is stored, so a delivery the receiver failed
    /// (its signature check included) is processed again when the sender
    /// retries; a redelivery while the first is still processed gets 409,
    /// which the sender retries later; the same id with another body is
    /// 422, and so is the id sent to another path (ids are per tenant: give
    /// each webhook endpoint a tenant of its own if one sender's events
    /// reach several). Verify signatures in a layer outside this one, or in
    /// the handler (a failed check answers 4xx, which is not stored).
    ///
    /// ```
    /// # use idemstore_http::*;
    /// let config = IdempotencyConfig::standard_webhooks(TenantSource::Single);
    /// assert_eq!(config.header, "webhook-id");
    /// assert!(config.key_required && config.store == StorePolicy::SuccessOnly);
    /// ```
    pub fn standard_webhooks(tenant: TenantSource) -> Self {
        IdempotencyConfig::new(tenant)
            .header(HeaderName::from_static("webhook-id"))
            .methods([Method::POST])
            .key_required(true)
            .store(StorePolicy::SuccessOnly)
            .fingerprint(FingerprintSpec {
                method: false,
                path_and_query: true,
                body: true,
                headers: Vec::new(),
                json: None,
            })
    }
}

impl IdempotencyConfig {
    /// The OASIS Repeatable Requests profile (as Azure services use it):
    /// the key is `Repeatability-Request-ID`, covering POST, PUT, PATCH and
    /// DELETE; a request with one must carry `Repeatability-First-Sent`
    /// (IMF-fixdate), else 400; one first sent more than `window` ago is
    /// 412, never executed; an executed or replayed request, and one told
    /// the first is still running (409), answer `Repeatability-Result:
    /// accepted`; a malformed id or date, a passed window and a reused id
    /// with another request (422) answer `Repeatability-Result: rejected`.
    /// A request without a repeatability id is processed as usual, with no
    /// such header. `window` must not exceed the backend's retention: a
    /// repeat inside the window then always finds the first request's
    /// record (the layer refuses to start otherwise).
    ///
    /// ```
    /// # use idemstore_http::*;
    /// # use std::time::Duration;
    /// let config = IdempotencyConfig::oasis_repeatable_requests(TenantSource::Single, Duration::from_secs(300));
    /// assert_eq!(config.header, "repeatability-request-id");
    /// assert_eq!(config.repeatability.map(|r| r.window), Some(Duration::from_secs(300)));
    /// ```
    pub fn oasis_repeatable_requests(tenant: TenantSource, window: Duration) -> Self {
        let mut c = IdempotencyConfig::new(tenant)
            .header(HeaderName::from_static("repeatability-request-id"))
            .methods([Method::POST, Method::PUT, Method::PATCH, Method::DELETE]);
        c.repeatability = Some(Repeatability { window });
        c
    }
}

impl fmt::Debug for IdempotencyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyConfig")
            .field("header", &self.header)
            .field("methods", &self.methods)
            .field("paths", &self.paths.as_ref().map(|_| ".."))
            .field("key_required", &self.key_required)
            .field("key_len", &self.key_len)
            .field("store", &self.store)
            .field("replay_status", &self.replay_status)
            .field("in_flight", &self.in_flight)
            .field("fingerprint", &self.fingerprint)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("oversize", &self.oversize)
            .field("tenant", &self.tenant)
            .field("renew_every", &self.renew_every)
            .field("capture_timeout", &self.capture_timeout)
            .field("hooks", &self.hooks)
            .field("replayed_header", &self.replayed_header)
            .field("max_in_flight", &self.max_in_flight)
            .field("expiry_header", &self.expiry_header)
            .field("response_headers", &self.response_headers)
            .field("redact", &self.redact)
            .field("repeatability", &self.repeatability)
            .field("routes", &self.routes)
            .finish()
    }
}

impl IdempotencyConfig {
    /// Sets the key header.
    ///
    /// ```
    /// # use axum::{Router, routing::any, body::Body, http::{HeaderName, Method, Request, StatusCode}};
    /// # use idemstore_http::*;
    /// # use http_body_util::BodyExt;
    /// # use tower::ServiceExt;
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering::SeqCst}};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
    /// # let runs = Arc::new(AtomicUsize::new(0));
    /// # let handler = { let runs = runs.clone(); move |req: Request<Body>| { let n = runs.fetch_add(1, SeqCst) + 1;
    /// #     let status = if req.uri().path().ends_with("/500") { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::CREATED };
    /// #     async move { (status, format!("run {n}")) } } };
    /// let config = IdempotencyConfig::new(TenantSource::Single)
    ///     .header(HeaderName::from_static("x-idempotency-key"));
    /// # let app = Router::new().route("/{*p}", any(handler)).layer(IdempotencyLayer::new(store, config));
    /// # let send = |method: Method, path: &str, headers: &[(&str, &str)], body: &'static str| {
    /// #     let mut b = Request::builder().method(method).uri(path);
    /// #     for (k, v) in headers { b = b.header(*k, *v); }
    /// #     let req = b.body(Body::from(body)).unwrap();
    /// #     let app = app.clone();
    /// #     async move { let r = app.oneshot(req).await.unwrap();
    /// #         let replayed = r.headers().contains_key(REPLAYED); let status = r.status();
    /// #         (status, replayed, r.into_body().collect().await.unwrap().to_bytes()) } };
    /// let key = [("x-idempotency-key", "k-1")];
    /// send(Method::POST, "/pay", &key, "{}").await;
    /// let (_, replayed, _) = send(Method::POST, "/pay", &key, "{}").await;
    /// assert!(replayed);
    /// // The standard header is not looked at: this request runs.
    /// let (_, replayed, _) = send(Method::POST, "/pay", &[("idempotency-key", "k-1")], "{}").await;
    /// assert!(!replayed);
    /// assert_eq!(runs.load(SeqCst), 2);
    /// # Ok(()) }
    /// ```
    pub fn header(mut self, name: HeaderName) -> Self {
        self.header = name;
        self
    }
    /// Sets the covered methods.
    ///
    /// ```
    /// # use axum::{Router, routing::any, body::Body, http::{HeaderName, Method, Request, StatusCode}};
    /// # use idemstore_http::*;
    /// # use http_body_util::BodyExt;
    /// # use tower::ServiceExt;
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering::SeqCst}};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
    /// # let runs = Arc::new(AtomicUsize::new(0));
    /// # let handler = { let runs = runs.clone(); move |req: Request<Body>| { let n = runs.fetch_add(1, SeqCst) + 1;
    /// #     let status = if req.uri().path().ends_with("/500") { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::CREATED };
    /// #     async move { (status, format!("run {n}")) } } };
    /// let config = IdempotencyConfig::new(TenantSource::Single)
    ///     .methods([Method::POST, Method::PUT, Method::DELETE]);
    /// # let app = Router::new().route("/{*p}", any(handler)).layer(IdempotencyLayer::new(store, config));
    /// # let send = |method: Method, path: &str, headers: &[(&str, &str)], body: &'static str| {
    /// #     let mut b = Request::builder().method(method).uri(path);
    /// #     for (k, v) in headers { b = b.header(*k, *v); }
    /// #     let req = b.body(Body::from(body)).unwrap();
    /// #     let app = app.clone();
    /// #     async move { let r = app.oneshot(req).await.unwrap();
    /// #         let replayed = r.headers().contains_key(REPLAYED); let status = r.status();
    /// #         (status, replayed, r.into_body().collect().await.unwrap().to_bytes()) } };
    /// let key = [("idempotency-key", "k-1")];
    /// send(Method::DELETE, "/card/1", &key, "").await;
    /// assert!(send(Method::DELETE, "/card/1", &key, "").await.1, "DELETE is covered");
    /// send(Method::PATCH, "/card/1", &[("idempotency-key", "k-2")], "").await;
    /// assert!(!send(Method::PATCH, "/card/1", &[("idempotency-key", "k-2")], "").await.1, "PATCH is not");
    /// # Ok(()) }
    /// ```
    pub fn methods(mut self, m: impl IntoIterator<Item = Method>) -> Self {
        self.methods = m.into_iter().collect();
        self
    }
    /// Covers only paths for which `f` returns true.
    pub fn paths(mut self, f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.paths = Some(Arc::new(f));
        self
    }
    /// Makes the key required on covered requests.
    ///
    /// ```
    /// # use axum::{Router, routing::any, body::Body, http::{HeaderName, Method, Request, StatusCode}};
    /// # use idemstore_http::*;
    /// # use http_body_util::BodyExt;
    /// # use tower::ServiceExt;
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering::SeqCst}};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
    /// # let runs = Arc::new(AtomicUsize::new(0));
    /// # let handler = { let runs = runs.clone(); move |req: Request<Body>| { let n = runs.fetch_add(1, SeqCst) + 1;
    /// #     let status = if req.uri().path().ends_with("/500") { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::CREATED };
    /// #     async move { (status, format!("run {n}")) } } };
    /// let config = IdempotencyConfig::new(TenantSource::Single).key_required(true);
    /// # let app = Router::new().route("/{*p}", any(handler)).layer(IdempotencyLayer::new(store, config));
    /// # let send = |method: Method, path: &str, headers: &[(&str, &str)], body: &'static str| {
    /// #     let mut b = Request::builder().method(method).uri(path);
    /// #     for (k, v) in headers { b = b.header(*k, *v); }
    /// #     let req = b.body(Body::from(body)).unwrap();
    /// #     let app = app.clone();
    /// #     async move { let r = app.oneshot(req).await.unwrap();
    /// #         let replayed = r.headers().contains_key(REPLAYED); let status = r.status();
    /// #         (status, replayed, r.into_body().collect().await.unwrap().to_bytes()) } };
    /// let (status, _, _) = send(Method::POST, "/pay", &[], "{}").await;
    /// assert_eq!(status, StatusCode::BAD_REQUEST);
    /// assert_eq!(runs.load(SeqCst), 0);
    /// # Ok(()) }
    /// ```
    pub fn key_required(mut self, yes: bool) -> Self {
        self.key_required = yes;
        self
    }
    /// Sets the accepted key length in bytes.
    ///
    /// ```
    /// # use axum::{Router, routing::any, body::Body, http::{HeaderName, Method, Request, StatusCode}};
    /// # use idemstore_http::*;
    /// # use http_body_util::BodyExt;
    /// # use tower::ServiceExt;
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering::SeqCst}};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
    /// # let runs = Arc::new(AtomicUsize::new(0));
    /// # let handler = { let runs = runs.clone(); move |req: Request<Body>| { let n = runs.fetch_add(1, SeqCst) + 1;
    /// #     let status = if req.uri().path().ends_with("/500") { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::CREATED };
    /// #     async move { (status, format!("run {n}")) } } };
    /// // The store must accept keys that long too (checked at startup).
    /// # drop(store);
    /// let store = idemstore::Store::open(dir.path(), idemstore::Config::default().key_len(1..=1024))?;
    /// let config = IdempotencyConfig::new(TenantSource::Single).key_len(10..=1024);
    /// # let app = Router::new().route("/{*p}", any(handler)).layer(IdempotencyLayer::new(store, config));
    /// # let send = |method: Method, path: &str, headers: &[(&str, &str)], body: &'static str| {
    /// #     let mut b = Request::builder().method(method).uri(path);
    /// #     for (k, v) in headers { b = b.header(*k, *v); }
    /// #     let req = b.body(Body::from(body)).unwrap();
    /// #     let app = app.clone();
    /// #     async move { let r = app.oneshot(req).await.unwrap();
    /// #         let replayed = r.headers().contains_key(REPLAYED); let status = r.status();
    /// #         (status, replayed, r.into_body().collect().await.unwrap().to_bytes()) } };
    /// let (status, _, _) = send(Method::POST, "/pay", &[("idempotency-key", "short")], "{}").await;
    /// assert_eq!(status, StatusCode::BAD_REQUEST, "5 bytes is under the 10 allowed");
    /// let (status, _, _) = send(Method::POST, "/pay", &[("idempotency-key", "long-enough-1")], "{}").await;
    /// assert_eq!(status, StatusCode::CREATED);
    /// # Ok(()) }
    /// ```
    pub fn key_len(mut self, r: RangeInclusive<usize>) -> Self {
        self.key_len = r;
        self
    }
    /// Sets which responses are stored.
    ///
    /// ```
    /// # use axum::{Router, routing::any, body::Body, http::{HeaderName, Method, Request, StatusCode}};
    /// # use idemstore_http::*;
    /// # use http_body_util::BodyExt;
    /// # use tower::ServiceExt;
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering::SeqCst}};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
    /// # let runs = Arc::new(AtomicUsize::new(0));
    /// # let handler = { let runs = runs.clone(); move |req: Request<Body>| { let n = runs.fetch_add(1, SeqCst) + 1;
    /// #     let status = if req.uri().path().ends_with("/500") { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::CREATED };
    /// #     async move { (status, format!("run {n}")) } } };
    /// let config = IdempotencyConfig::new(TenantSource::Single).store(StorePolicy::SuccessOnly);
    /// # let app = Router::new().route("/{*p}", any(handler)).layer(IdempotencyLayer::new(store, config));
    /// # let send = |method: Method, path: &str, headers: &[(&str, &str)], body: &'static str| {
    /// #     let mut b = Request::builder().method(method).uri(path);
    /// #     for (k, v) in headers { b = b.header(*k, *v); }
    /// #     let req = b.body(Body::from(body)).unwrap();
    /// #     let app = app.clone();
    /// #     async move { let r = app.oneshot(req).await.unwrap();
    /// #         let replayed = r.headers().contains_key(REPLAYED); let status = r.status();
    /// #         (status, replayed, r.into_body().collect().await.unwrap().to_bytes()) } };
    /// let key = [("idempotency-key", "k-1")];
    /// let (status, _, _) = send(Method::POST, "/pay/500", &key, "{}").await;
    /// assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    /// // Not stored: the retry runs the handler again.
    /// let (_, replayed, _) = send(Method::POST, "/pay/500", &key, "{}").await;
    /// assert!(!replayed);
    /// assert_eq!(runs.load(SeqCst), 2);
    /// # Ok(()) }
    /// ```
    pub fn store(mut self, p: StorePolicy) -> Self {
        self.store = p;
        self
    }
    /// Sets the replay status.
    ///
    /// ```
    /// # use axum::{Router, routing::any, body::Body, http::{HeaderName, Method, Request, StatusCode}};
    /// # use idemstore_http::*;
    /// # use http_body_util::BodyExt;
    /// # use tower::ServiceExt;
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering::SeqCst}};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
    /// # let runs = Arc::new(AtomicUsize::new(0));
    /// # let handler = { let runs = runs.clone(); move |req: Request<Body>| { let n = runs.fetch_add(1, SeqCst) + 1;
    /// #     let status = if req.uri().path().ends_with("/500") { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::CREATED };
    /// #     async move { (status, format!("run {n}")) } } };
    /// let config = IdempotencyConfig::new(TenantSource::Single)
    ///     .replay_status(ReplayStatus::Fixed(StatusCode::CONFLICT));
    /// # let app = Router::new().route("/{*p}", any(handler)).layer(IdempotencyLayer::new(store, config));
    /// # let send = |method: Method, path: &str, headers: &[(&str, &str)], body: &'static str| {
    /// #     let mut b = Request::builder().method(method).uri(path);
    /// #     for (k, v) in headers { b = b.header(*k, *v); }
    /// #     let req = b.body(Body::from(body)).unwrap();
    /// #     let app = app.clone();
    /// #     async move { let r = app.oneshot(req).await.unwrap();
    /// #         let replayed = r.headers().contains_key(REPLAYED); let status = r.status();
    /// #         (status, replayed, r.into_body().collect().await.unwrap().to_bytes()) } };
    /// let key = [("idempotency-key", "k-1")];
    /// let (first, _, body) = send(Method::POST, "/pay", &key, "{}").await;
    /// assert_eq!(first, StatusCode::CREATED);
    /// let (again, replayed, replay_body) = send(Method::POST, "/pay", &key, "{}").await;
    /// assert_eq!((again, replayed), (StatusCode::CONFLICT, true));
    /// assert_eq!(replay_body, body, "the original body, with the fixed status");
    /// # Ok(()) }
    /// ```
    pub fn replay_status(mut self, s: ReplayStatus) -> Self {
        self.replay_status = s;
        self
    }
    /// Sets the in-flight policy.
    ///
    /// ```
    /// # use axum::{Router, routing::any, body::Body, http::{HeaderName, Method, Request, StatusCode}};
    /// # use idemstore_http::*;
    /// # use http_body_util::BodyExt;
    /// # use tower::ServiceExt;
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering::SeqCst}};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
    /// # let runs = Arc::new(AtomicUsize::new(0));
    /// # let handler = { let runs = runs.clone(); move |req: Request<Body>| { let n = runs.fetch_add(1, SeqCst) + 1;
    /// #     let status = if req.uri().path().ends_with("/500") { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::CREATED };
    /// #     async move { (status, format!("run {n}")) } } };
    /// # use std::time::Duration;
    /// let config = IdempotencyConfig::new(TenantSource::Single)
    ///     .in_flight(InFlightPolicy::Wait(Duration::from_secs(5)));
    /// # let app = Router::new().route("/{*p}", any(handler)).layer(IdempotencyLayer::new(store, config));
    /// # let send = |method: Method, path: &str, headers: &[(&str, &str)], body: &'static str| {
    /// #     let mut b = Request::builder().method(method).uri(path);
    /// #     for (k, v) in headers { b = b.header(*k, *v); }
    /// #     let req = b.body(Body::from(body)).unwrap();
    /// #     let app = app.clone();
    /// #     async move { let r = app.oneshot(req).await.unwrap();
    /// #         let replayed = r.headers().contains_key(REPLAYED); let status = r.status();
    /// #         (status, replayed, r.into_body().collect().await.unwrap().to_bytes()) } };
    /// let key = [("idempotency-key", "k-1")];
    /// // Two at once: the second waits for the first and replays it.
    /// let (a, b) = tokio::join!(send(Method::POST, "/pay", &key, "{}"), send(Method::POST, "/pay", &key, "{}"));
    /// assert_eq!((a.0, b.0), (StatusCode::CREATED, StatusCode::CREATED));
    /// assert_eq!(a.2, b.2);
    /// assert_eq!(runs.load(SeqCst), 1);
    /// # Ok(()) }
    /// ```
    pub fn in_flight(mut self, p: InFlightPolicy) -> Self {
        self.in_flight = p;
        self
    }
    /// Sets what the fingerprint covers.
    ///
    /// ```
    /// # use axum::{Router, routing::any, body::Body, http::{HeaderName, Method, Request, StatusCode}};
    /// # use idemstore_http::*;
    /// # use http_body_util::BodyExt;
    /// # use tower::ServiceExt;
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering::SeqCst}};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
    /// # let runs = Arc::new(AtomicUsize::new(0));
    /// # let handler = { let runs = runs.clone(); move |req: Request<Body>| { let n = runs.fetch_add(1, SeqCst) + 1;
    /// #     let status = if req.uri().path().ends_with("/500") { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::CREATED };
    /// #     async move { (status, format!("run {n}")) } } };
    /// let config = IdempotencyConfig::new(TenantSource::Single).fingerprint(FingerprintSpec {
    ///     body: false,
    ///     ..FingerprintSpec::default()
    /// });
    /// # let app = Router::new().route("/{*p}", any(handler)).layer(IdempotencyLayer::new(store, config));
    /// # let send = |method: Method, path: &str, headers: &[(&str, &str)], body: &'static str| {
    /// #     let mut b = Request::builder().method(method).uri(path);
    /// #     for (k, v) in headers { b = b.header(*k, *v); }
    /// #     let req = b.body(Body::from(body)).unwrap();
    /// #     let app = app.clone();
    /// #     async move { let r = app.oneshot(req).await.unwrap();
    /// #         let replayed = r.headers().contains_key(REPLAYED); let status = r.status();
    /// #         (status, replayed, r.into_body().collect().await.unwrap().to_bytes()) } };
    /// let key = [("idempotency-key", "k-1")];
    /// send(Method::POST, "/pay", &key, r#"{"amount":1}"#).await;
    /// // The body is not compared: another body with the key replays.
    /// assert!(send(Method::POST, "/pay", &key, r#"{"amount":2}"#).await.1);
    /// // The path is: another path with the key is a mismatch (422).
    /// assert_eq!(send(Method::POST, "/other", &key, "{}").await.0, StatusCode::UNPROCESSABLE_ENTITY);
    /// # Ok(()) }
    /// ```
    pub fn fingerprint(mut self, f: FingerprintSpec) -> Self {
        self.fingerprint = f;
        self
    }
    /// Sets the request body limit.
    ///
    /// ```
    /// # use axum::{Router, routing::any, body::Body, http::{HeaderName, Method, Request, StatusCode}};
    /// # use idemstore_http::*;
    /// # use http_body_util::BodyExt;
    /// # use tower::ServiceExt;
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering::SeqCst}};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
    /// # let runs = Arc::new(AtomicUsize::new(0));
    /// # let handler = { let runs = runs.clone(); move |req: Request<Body>| { let n = runs.fetch_add(1, SeqCst) + 1;
    /// #     let status = if req.uri().path().ends_with("/500") { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::CREATED };
    /// #     async move { (status, format!("run {n}")) } } };
    /// let config = IdempotencyConfig::new(TenantSource::Single).max_request_bytes(8);
    /// # let app = Router::new().route("/{*p}", any(handler)).layer(IdempotencyLayer::new(store, config));
    /// # let send = |method: Method, path: &str, headers: &[(&str, &str)], body: &'static str| {
    /// #     let mut b = Request::builder().method(method).uri(path);
    /// #     for (k, v) in headers { b = b.header(*k, *v); }
    /// #     let req = b.body(Body::from(body)).unwrap();
    /// #     let app = app.clone();
    /// #     async move { let r = app.oneshot(req).await.unwrap();
    /// #         let replayed = r.headers().contains_key(REPLAYED); let status = r.status();
    /// #         (status, replayed, r.into_body().collect().await.unwrap().to_bytes()) } };
    /// let (status, _, _) = send(Method::POST, "/pay", &[("idempotency-key", "k-1")], "a body over 8 bytes").await;
    /// assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    /// assert_eq!(runs.load(SeqCst), 0);
    /// # Ok(()) }
    /// ```
    pub fn max_request_bytes(mut self, n: usize) -> Self {
        self.max_request_bytes = n;
        self
    }
    /// Sets the stored response body limit.
    pub fn max_response_bytes(mut self, n: usize) -> Self {
        self.max_response_bytes = n;
        self
    }
    /// Sets what happens to responses over the limit.
    ///
    /// ```
    /// # use axum::{Router, routing::any, body::Body, http::{HeaderName, Method, Request, StatusCode}};
    /// # use idemstore_http::*;
    /// # use http_body_util::BodyExt;
    /// # use tower::ServiceExt;
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering::SeqCst}};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
    /// # let runs = Arc::new(AtomicUsize::new(0));
    /// # let handler = { let runs = runs.clone(); move |req: Request<Body>| { let n = runs.fetch_add(1, SeqCst) + 1;
    /// #     let status = if req.uri().path().ends_with("/500") { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::CREATED };
    /// #     async move { (status, format!("run {n}")) } } };
    /// let config = IdempotencyConfig::new(TenantSource::Single)
    ///     .max_response_bytes(4)
    ///     .oversize(OversizeResponse::StoreNotice);
    /// # let app = Router::new().route("/{*p}", any(handler)).layer(IdempotencyLayer::new(store, config));
    /// # let send = |method: Method, path: &str, headers: &[(&str, &str)], body: &'static str| {
    /// #     let mut b = Request::builder().method(method).uri(path);
    /// #     for (k, v) in headers { b = b.header(*k, *v); }
    /// #     let req = b.body(Body::from(body)).unwrap();
    /// #     let app = app.clone();
    /// #     async move { let r = app.oneshot(req).await.unwrap();
    /// #         let replayed = r.headers().contains_key(REPLAYED); let status = r.status();
    /// #         (status, replayed, r.into_body().collect().await.unwrap().to_bytes()) } };
    /// let key = [("idempotency-key", "k-1")];
    /// let (_, _, body) = send(Method::POST, "/pay", &key, "{}").await;
    /// assert_eq!(body, "run 1", "the first client gets all of it");
    /// // A retry learns the request ran and that its response cannot be replayed.
    /// let (status, replayed, _) = send(Method::POST, "/pay", &key, "{}").await;
    /// assert_eq!((status, replayed), (StatusCode::CONFLICT, true));
    /// assert_eq!(runs.load(SeqCst), 1);
    /// # Ok(()) }
    /// ```
    pub fn oversize(mut self, o: OversizeResponse) -> Self {
        self.oversize = o;
        self
    }
    /// Sets where the tenant comes from.
    ///
    /// ```
    /// # use axum::{Router, routing::any, body::Body, http::{HeaderName, Method, Request, StatusCode}};
    /// # use idemstore_http::*;
    /// # use http_body_util::BodyExt;
    /// # use tower::ServiceExt;
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering::SeqCst}};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
    /// # let runs = Arc::new(AtomicUsize::new(0));
    /// # let handler = { let runs = runs.clone(); move |req: Request<Body>| { let n = runs.fetch_add(1, SeqCst) + 1;
    /// #     let status = if req.uri().path().ends_with("/500") { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::CREATED };
    /// #     async move { (status, format!("run {n}")) } } };
    /// let config = IdempotencyConfig::new(TenantSource::Single)
    ///     .tenant(TenantSource::Header(HeaderName::from_static("x-api-key")));
    /// # let app = Router::new().route("/{*p}", any(handler)).layer(IdempotencyLayer::new(store, config));
    /// # let send = |method: Method, path: &str, headers: &[(&str, &str)], body: &'static str| {
    /// #     let mut b = Request::builder().method(method).uri(path);
    /// #     for (k, v) in headers { b = b.header(*k, *v); }
    /// #     let req = b.body(Body::from(body)).unwrap();
    /// #     let app = app.clone();
    /// #     async move { let r = app.oneshot(req).await.unwrap();
    /// #         let replayed = r.headers().contains_key(REPLAYED); let status = r.status();
    /// #         (status, replayed, r.into_body().collect().await.unwrap().to_bytes()) } };
    /// let alice = [("idempotency-key", "k-1"), ("x-api-key", "alice")];
    /// let bob = [("idempotency-key", "k-1"), ("x-api-key", "bob")];
    /// send(Method::POST, "/pay", &alice, "{}").await;
    /// assert!(!send(Method::POST, "/pay", &bob, "{}").await.1, "Bob's key is his own");
    /// assert!(send(Method::POST, "/pay", &alice, "{}").await.1);
    /// assert_eq!(send(Method::POST, "/pay", &[("idempotency-key", "k-2")], "{}").await.0, StatusCode::UNAUTHORIZED);
    /// # Ok(()) }
    /// ```
    pub fn tenant(mut self, t: TenantSource) -> Self {
        self.tenant = t;
        self
    }
    /// Sets the lease renewal period.
    pub fn renew_every(mut self, d: Duration) -> Self {
        self.renew_every = d;
        self
    }
    /// Sets how long a streaming response body is read for storing.
    pub fn capture_timeout(mut self, d: Duration) -> Self {
        self.capture_timeout = d;
        self
    }
    /// Names the header that tells when a key's record expires (see the
    /// field).
    pub fn expiry_header(mut self, name: HeaderName) -> Self {
        self.expiry_header = Some(name);
        self
    }
    /// Caps the keyed requests in flight (see the field).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = Some(n);
        self
    }
    /// Sets the header that marks a replay.
    pub fn replayed_header(mut self, name: HeaderName) -> Self {
        self.replayed_header = name;
        self
    }
    /// Calls `f` each time a response is stored under its key.
    pub fn on_stored(mut self, f: impl Fn(&RecordEvent<'_>) + Send + Sync + 'static) -> Self {
        self.hooks.stored = Some(Arc::new(f));
        self
    }
    /// Calls `f` each time a stored response is replayed.
    pub fn on_replayed(mut self, f: impl Fn(&RecordEvent<'_>) + Send + Sync + 'static) -> Self {
        self.hooks.replayed = Some(Arc::new(f));
        self
    }
    /// Sets which response headers are stored and replayed.
    ///
    /// ```
    /// # use axum::{Router, routing::post, body::Body, http::{header, HeaderName, Method, Request, StatusCode}};
    /// # use idemstore_http::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
    /// let handler = || async {
    ///     ([(header::LOCATION, "/v1/payments/7"), (header::SET_COOKIE, "session=first-client"),
    ///       (HeaderName::from_static("x-internal"), "node-3")], "created")
    /// };
    /// let config = IdempotencyConfig::new(TenantSource::Single)
    ///     .response_headers(ResponseHeaders::only([header::LOCATION, header::CONTENT_TYPE]));
    /// let app = Router::new().route("/pay", post(handler)).layer(IdempotencyLayer::new(store, config));
    /// let send = |app: Router| async move {
    ///     let req = Request::post("/pay").header("idempotency-key", "k-1").body(Body::empty()).unwrap();
    ///     app.oneshot(req).await.unwrap()
    /// };
    /// let first = send(app.clone()).await;
    /// assert!(first.headers().contains_key(header::SET_COOKIE), "the first client gets it all");
    /// let replay = send(app).await;
    /// assert_eq!(replay.headers()[header::LOCATION], "/v1/payments/7");
    /// assert!(!replay.headers().contains_key(header::SET_COOKIE));
    /// assert!(!replay.headers().contains_key("x-internal"));
    /// # Ok(()) }
    /// ```
    pub fn response_headers(mut self, policy: ResponseHeaders) -> Self {
        self.response_headers = policy;
        self
    }
    /// Gives the requests whose path matches `pattern` a policy of their
    /// own: `policy`'s settings over the layer's. Patterns: `/v1/payouts`
    /// (that path), `/v1/accounts/{id}/payouts` (`{id}` or `*`: any one
    /// segment), `/v1/payouts/**` (that path and all below it); the first
    /// route added that matches wins, and other paths get the layer's
    /// settings. A route's retention keeps its records (reservations and
    /// stored responses) that long on the backend; it must exceed the
    /// backend's lease (checked when the layer is built, with the key
    /// bounds and the patterns).
    ///
    /// ```
    /// # use axum::{Router, routing::post, body::Body, http::{HeaderName, Request, StatusCode}};
    /// # use idemstore_http::*;
    /// # use tower::ServiceExt;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
    /// let week = Duration::from_secs(7 * 24 * 3600);
    /// let config = IdempotencyConfig::new(TenantSource::Single)
    ///     // Payouts: kept a week, only successes stored, keys required.
    ///     .route("/v1/payouts/**", RoutePolicy::default()
    ///         .retention(week).store(StorePolicy::SuccessOnly).key_required(true))
    ///     // A partner's route, with its own header.
    ///     .route("/partner/orders", RoutePolicy::default()
    ///         .header(HeaderName::from_static("x-partner-request-id")));
    /// let app = Router::new()
    ///     .route("/v1/payouts", post(|| async { (StatusCode::CREATED, "payout") }))
    ///     .route("/partner/orders", post(|| async { (StatusCode::CREATED, "order") }))
    ///     .layer(IdempotencyLayer::new(store, config));
    /// let send = |path: &'static str, header: &'static str| {
    ///     let app = app.clone();
    ///     async move {
    ///         let req = Request::post(path).header(header, "k-1").body(Body::empty()).unwrap();
    ///         app.oneshot(req).await.unwrap()
    ///     }
    /// };
    /// assert_eq!(send("/v1/payouts", "x-other").await.status(), StatusCode::BAD_REQUEST, "key required");
    /// send("/partner/orders", "x-partner-request-id").await;
    /// assert!(send("/partner/orders", "x-partner-request-id").await.headers().contains_key(REPLAYED));
    /// # Ok(()) }
    /// ```
    pub fn route(mut self, pattern: &str, policy: RoutePolicy) -> Self {
        self.routes.push((pattern.to_owned(), policy));
        self
    }
    /// Runs `f` on each response before it is stored (see [`Redact`]).
    ///
    /// ```
    /// # use axum::{Router, routing::post, body::{Body, Bytes}, http::{Request}};
    /// # use idemstore_http::*;
    /// # use http_body_util::BodyExt;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
    /// let handler = || async { r#"{"id":"key_1","secret":"sk_shown_once"}"# };
    /// let config = IdempotencyConfig::new(TenantSource::Single).redact(|r| {
    ///     *r.body = Bytes::from_static(br#"{"id":"key_1","secret":"(shown on the first response only)"}"#);
    /// });
    /// let app = Router::new().route("/keys", post(handler)).layer(IdempotencyLayer::new(store, config));
    /// let send = |app: Router| async move {
    ///     let req = Request::post("/keys").header("idempotency-key", "k-1").body(Body::empty()).unwrap();
    ///     app.oneshot(req).await.unwrap().into_body().collect().await.unwrap().to_bytes()
    /// };
    /// assert!(send(app.clone()).await.ends_with(b"\"sk_shown_once\"}"));
    /// assert!(!String::from_utf8(send(app).await.to_vec())?.contains("sk_shown_once"));
    /// # Ok(()) }
    /// ```
    pub fn redact(mut self, f: impl Fn(ToStore<'_>) + Send + Sync + 'static) -> Self {
        self.redact = Some(Redact::new(f));
        self
    }
}

//! # idemstore-actix
//!
//! actix-web middleware for the server side of the `Idempotency-Key`
//! header. It drives the same framework-independent core as the tower layer
//! ([`idemstore_http::drive`]), with the same [`IdempotencyConfig`] and any
//! [`Backend`]: every row of the behaviour table in `idemstore-http`'s docs
//! is answered the same way (`tests/table.rs` runs one suite against both).
//!
//! ```no_run
//! use actix_web::{App, HttpResponse, HttpServer, web};
//! use idemstore_actix::Idempotency;
//! use idemstore_http::{IdempotencyConfig, TenantSource};
//! use http::HeaderName;
//!
//! # #[actix_web::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = idemstore::Store::open("./idem-data", idemstore::Config::default())?;
//! let config = IdempotencyConfig::new(TenantSource::Header(HeaderName::from_static("x-api-key")));
//! let idempotency = Idempotency::new(store, config);
//! HttpServer::new(move || {
//!     App::new().service(
//!         web::resource("/v1/payments")
//!             .wrap(idempotency.clone())
//!             .route(web::post().to(|| async { HttpResponse::Created().body("paid") })),
//!     )
//! })
//! .bind("127.0.0.1:3000")?
//! .run()
//! .await?;
//! # Ok(()) }
//! ```
//!
//! Wrap the resources whose handlers it covers (`web::resource(..).wrap`),
//! as with axum's `route_layer`: then the router's own 404 and 405 never
//! reach it. To key requests by the account an authentication middleware
//! established, name the tenant with [`Idempotency::tenant_from_request`]
//! and [`request_tenant`], with that middleware outside this one.
//!
//! An actix handler is not `Send`, so the work of a reserved key runs on the
//! worker's own thread (`actix_web::rt::spawn`), in a task of its own as
//! with tower: a client that goes away mid-handler neither cuts it short
//! nor frees the key. A response body that is all there when the handler
//! returns is stored before it is sent; one that streams is pumped from the
//! handler's body (on the worker) to the layer, and sent as it comes.
//!
//! Unlike a tokio server that waits for [`InFlightWork::idle`], an actix
//! server that stops drops its workers' runtimes, and with them the work of
//! reserved keys whose clients already left: such a handler is cut short at
//! an `.await` and its key stays reserved until its lease ends, as after a
//! crash (then a retry runs it again). Keep actix's `shutdown_timeout`
//! longer than the slowest handler, so that stopping waits for the
//! connections still being answered.
//!
//! ## Layout
//!
//! - `lib.rs`: the middleware (actix's `Transform` and `Service`);
//! - `convert.rs`: requests, responses and bodies between actix's types
//!   (http 0.2) and the core's (http 1).

mod convert;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::{HttpMessage, HttpRequest};
pub use convert::{Outgoing, mark};
use convert::{PayloadBody, head_parts, to_actix, to_http};
use idemstore_http::steps::{Idempotency as Core, Prepared};
use idemstore_http::{
    Backend, ConfigError, HeldKey, IdempotencyConfig, IdempotencyLayer, InFlightWork, TenantSource,
    drive,
};
use std::cell::RefCell;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

/// The tenant [`Idempotency::tenant_from_request`] found, as the core reads
/// it (a request extension of the core's request).
#[derive(Clone, Debug)]
pub struct RequestTenant(pub Vec<u8>);

/// The tenant source that reads what [`Idempotency::tenant_from_request`]
/// found: give it to [`IdempotencyConfig::new`].
pub fn request_tenant() -> TenantSource {
    TenantSource::extension(|t: &RequestTenant| t.0.clone())
}

/// Finds the tenant of an actix request.
type TenantOf = Arc<dyn Fn(&HttpRequest) -> Option<Vec<u8>> + Send + Sync>;

/// The middleware: `.wrap(Idempotency::new(backend, config))`.
pub struct Idempotency<B> {
    core: Core<B>,
    tenant: Option<TenantOf>,
}

impl<B> Clone for Idempotency<B> {
    fn clone(&self) -> Self {
        Idempotency {
            core: self.core.clone(),
            tenant: self.tenant.clone(),
        }
    }
}

impl<B: Backend> Idempotency<B> {
    /// The middleware over `backend` with `config`.
    ///
    /// # Panics
    ///
    /// If the configuration cannot work with the backend (see
    /// [`try_new`](Self::try_new)); a startup-time programming error.
    pub fn new(backend: B, config: IdempotencyConfig) -> Self {
        match Self::try_new(backend, config) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    /// The middleware over `backend` with `config`, or why they do not fit
    /// together (the tower layer's checks).
    ///
    /// # Errors
    ///
    /// As [`IdempotencyLayer::try_new`].
    pub fn try_new(backend: B, config: IdempotencyConfig) -> Result<Self, ConfigError> {
        Ok(Idempotency {
            core: IdempotencyLayer::try_new(backend, config)?.core(),
            tenant: None,
        })
    }

    /// Finds each request's tenant with `f` (e.g. in the extensions an
    /// authentication middleware set), for a configuration whose tenant
    /// source is [`request_tenant`]. A request for which `f` finds none is
    /// 401.
    pub fn tenant_from_request(
        mut self,
        f: impl Fn(&HttpRequest) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        self.tenant = Some(Arc::new(f));
        self
    }

    /// The work running for reserved keys: a server shutting down waits for
    /// [`InFlightWork::idle`] before closing the store.
    pub fn in_flight_work(&self) -> InFlightWork {
        self.core.in_flight_work().clone()
    }
}

impl<S, RB, B> Transform<S, ServiceRequest> for Idempotency<B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<RB>, Error = actix_web::Error> + 'static,
    RB: MessageBody + 'static,
    B: Backend,
{
    type Response = ServiceResponse<EitherBody<RB, Outgoing>>;
    type Error = actix_web::Error;
    type Transform = IdempotencyMiddleware<S, B>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(IdempotencyMiddleware {
            service: Rc::new(service),
            core: self.core.clone(),
            tenant: self.tenant.clone(),
        }))
    }
}

/// The service [`Idempotency`] wraps around a resource's.
pub struct IdempotencyMiddleware<S, B> {
    service: Rc<S>,
    core: Core<B>,
    tenant: Option<TenantOf>,
}

impl<S, RB, B> Service<ServiceRequest> for IdempotencyMiddleware<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<RB>, Error = actix_web::Error> + 'static,
    RB: MessageBody + 'static,
    B: Backend,
{
    type Response = ServiceResponse<EitherBody<RB, Outgoing>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = self.service.clone();
        let core = self.core.clone();
        let tenant = self.tenant.as_ref().and_then(|f| f(req.request()));
        Box::pin(async move {
            let parts = head_parts(req.request(), tenant.map(RequestTenant));
            let keyed = match core.prepare(&parts) {
                Prepared::PassThrough => {
                    return Ok(service.call(req).await?.map_into_left_body());
                }
                Prepared::Reject(p) => {
                    let r = to_actix(drive::rejected(core.config(), &p));
                    return Ok(req.into_response(r).map_into_right_body());
                }
                Prepared::Keyed(k) => k,
            };
            // The request has one owner at a time: actix's routing needs
            // it unshared (`Rc::get_mut`) while the inner service runs, so
            // the handler takes it from here and puts it back with the
            // response.
            let (http_req, payload) = req.into_parts();
            let slot = Rc::new(RefCell::new(Some(http_req)));
            let for_handler = slot.clone();
            let handler = move |request: http::Request<idemstore_http::BoxBody>| {
                let (parts, body) = request.into_parts();
                async move {
                    use http_body_util::BodyExt;
                    let Some(http_req) = for_handler.borrow_mut().take() else {
                        return Err(actix_web::error::ErrorInternalServerError(
                            "the request was handed to its handler twice",
                        ));
                    };
                    if let Some(held) = parts.extensions.get::<HeldKey<B::Lease>>() {
                        http_req.extensions_mut().insert(held.clone());
                    }
                    // The body the core buffered (and fingerprinted).
                    let bytes = body
                        .collect()
                        .await
                        .map(http_body_util::Collected::to_bytes)
                        .unwrap_or_default();
                    let sreq =
                        ServiceRequest::from_parts(http_req, actix_web::dev::Payload::from(bytes));
                    let (http_req, response) = service.call(sreq).await?.into_parts();
                    for_handler.borrow_mut().replace(http_req);
                    Ok::<_, actix_web::Error>(to_http(response))
                }
            };
            let body = PayloadBody::new(payload);
            let answer = match drive::keyed(core, parts, body, keyed, handler).await {
                Err(refused) => refused,
                Ok((task, answer)) => {
                    actix_web::rt::spawn(task);
                    answer.await?
                }
            };
            let response = to_actix(answer);
            match slot.borrow_mut().take() {
                Some(http_req) => {
                    Ok(ServiceResponse::new(http_req, response).map_into_right_body())
                }
                // The handler panicked with the request: answer without it.
                None => Err(actix_web::error::InternalError::from_response(
                    "the handler failed",
                    response.map_into_boxed_body(),
                )
                .into()),
            }
        })
    }
}

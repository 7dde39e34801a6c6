//! A keyed request from its head to its answer, for any framework's
//! middleware: the tower service (`service.rs`) and `idemstore-actix` both
//! call [`keyed`], so both answer every row of the behaviour table the same
//! way. The framework supplies the request head and body, calls its own
//! next handler when asked, and spawns the task [`keyed`] returns: tower on
//! the runtime (`tokio::spawn`), actix on its worker (`spawn_local`), since
//! an actix handler is not `Send`.
//!
//! The task reads the body (up to `max_request_bytes`), fingerprints it,
//! counts itself against `max_in_flight`, begins, and once the key is
//! reserved runs the handler, reads and stores its response (`work.rs`).
//! Nothing the client does cancels it: a client that goes away while the
//! store reserves the key leaves no reservation without its holder, and one
//! that goes away mid-handler neither cuts the handler short nor frees the
//! key.

use crate::backend::Backend;
use crate::body::{BoxBody, BoxError, boxed, full};
use crate::config::IdempotencyConfig;
use crate::fingerprint::digest;
use crate::held::HeldKey;
use crate::problem::{Problem, ProblemCode};
use crate::steps::{Idempotency, Keyed, Started};
use crate::work::{self, Holding};
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use std::future::Future;
use tracing::Instrument;

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

/// A request extension the handler of a reserved key finds: its response
/// will be stored (or the key freed) per the route's policy. A proxy reads
/// it to know which responses to read whole before answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserved;

/// The answer to a request [`Idempotency::prepare`] rejected.
pub fn rejected(config: &IdempotencyConfig, p: &Problem) -> Response<BoxBody> {
    let mut r = p.to_response().map(full);
    repeatability_result(config.repeatability.is_some(), &mut r);
    r
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

/// A keyed request (what [`Idempotency::prepare`] made of its head): reads
/// `body` (up to `max_request_bytes`), fingerprints it and counts it against
/// `max_in_flight`; then either the answer at once (413, 400, 503
/// `overloaded`), or the task to spawn, which begins and, once the key is
/// reserved, calls `handler` with the request (its body buffered), reads and
/// stores the response; and the answer for the client, which resolves when
/// the task has one. The task is counted in [`crate::InFlightWork`] from
/// before it is spawned, so a shutdown waiting for the work cannot miss it;
/// it is `Send` when `handler` and its future are.
pub async fn keyed<B, ReqB, H, Fut, ResB, E>(
    core: Idempotency<B>,
    parts: http::request::Parts,
    body: ReqB,
    mut keyed: Keyed,
    handler: H,
) -> Result<
    (
        impl Future<Output = ()> + 'static,
        impl Future<Output = Result<Response<BoxBody>, E>> + 'static,
    ),
    Response<BoxBody>,
>
where
    B: Backend,
    ReqB: Body<Data = Bytes>,
    ReqB::Error: Into<BoxError>,
    H: FnOnce(Request<BoxBody>) -> Fut + 'static,
    Fut: Future<Output = Result<Response<ResB>, E>>,
    ResB: Body<Data = Bytes> + Send + Unpin + 'static,
    ResB::Error: Into<BoxError>,
    E: 'static,
{
    let span = request_span(&keyed);
    let span_outer = span.clone();
    async move {
        let repeatable = core.config().repeatability.is_some();
        let refuse = |p: Problem, outcome| {
            crate::metrics::request(outcome);
            let mut r = p.to_response().map(full);
            repeatability_result(repeatable, &mut r);
            r
        };
        let limit = core.config().max_request_bytes;
        let bytes = match Limited::new(body, limit).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                return Err(refuse(
                    Problem::RequestTooLarge { limit },
                    crate::metrics::Outcome::Rejected,
                ));
            }
            Err(_) => {
                return Err(refuse(
                    Problem::RequestBodyFailed,
                    crate::metrics::Outcome::Rejected,
                ));
            }
        };
        let d = digest(&keyed.policy.fingerprint, &parts, &bytes);
        let fp = d.fingerprint;
        keyed.members = d.members;
        // Counted from here, before the key is reserved: past the cap nothing
        // is reserved and nothing runs.
        let running = match core.config().max_in_flight {
            Some(max) => match core.in_flight_work().try_start(max) {
                Some(g) => g,
                None => {
                    return Err(refuse(
                        Problem::Overloaded { limit: max },
                        crate::metrics::Outcome::Overloaded,
                    ));
                }
            },
            None => core.in_flight_work().start(),
        };
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
            parts.extensions.insert(Reserved);
            let holding = if keyed.policy.stored_by_handler {
                let held = HeldKey::new(lease, core.recorder(&keyed));
                parts.extensions.insert(held.clone());
                Holding::Handler(held)
            } else {
                Holding::Layer(lease)
            };
            let request = Request::from_parts(parts, boxed(Full::new(bytes)));
            // Called inside the task, where a panic of the call itself is
            // caught like one of its future.
            let handler = async move { handler(request).await };
            work::run(core, holding, handler, keyed, reply, running).await;
        }
        .instrument(span.clone());
        let answer = async move {
            let mut r = match answer.await {
                Ok(result) => result?,
                // The task ended without answering (a bug in the layer).
                Err(_) => Problem::HandlerFailed.to_response().map(full),
            };
            repeatability_result(repeatable, &mut r);
            Ok(r)
        }
        .instrument(span);
        Ok((task, answer))
    }
    .instrument(span_outer)
    .await
}

//! The task that runs a reserved request: the handler, reading its response,
//! storing it, and streaming the response to the first client.
//!
//! It is spawned the moment `begin` reserves the key, so nothing the client
//! does cancels it: a client that times out or disconnects mid-handler does
//! not cut the handler short at an `.await`, and does not free the key. A
//! retry meanwhile gets 409 (or waits), then the stored response.
//!
//! Invariants:
//! - the lease is renewed while the task waits for the handler or the body,
//!   and no longer once it is stored, freed or fenced;
//! - every way the task ends finishes the lease (stored, freed by policy, or
//!   left to the backend's retry when storing failed); a panic of the handler
//!   or of its body is caught and becomes a 500 that the store policy judges;
//! - a body that is all there when the handler returns (the usual `Full`
//!   body) is stored *before* the response is sent, so in `Sync` mode no
//!   success leaves before its record is durable, and a failed store answers
//!   503 instead; a body still being produced (a stream) is sent as it comes
//!   while up to `max_response_bytes` of it are kept, and stored when it ends
//!   (or the not-replayable notice at the limit or at `capture_timeout`);
//! - the task stops reading the body once nobody needs it: no client reads it
//!   and nothing more will be stored.

use crate::backend::Backend;
use crate::body::{BoxBody, BoxError, Prefixed, boxed, full};
use crate::held::HeldKey;
use crate::problem::Problem;
use crate::steps::{Finished, Idempotency, Keyed, Renewing, ResponseBody, WorkGuard};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Frames buffered between the task and a client reading a streamed body.
const STREAM_FRAMES: usize = 16;

/// Where the task sends the response head (or the service's error).
pub(crate) type Reply<E> = oneshot::Sender<Result<Response<BoxBody>, E>>;

/// Who stores the response of a reserved request.
pub(crate) enum Holding<L> {
    /// The layer (every route but those below).
    Layer(L),
    /// The handler, if it takes the key from this request extension
    /// (`RoutePolicy::stored_by_handler`); else the layer.
    Handler(HeldKey<L>),
}

/// Runs a reserved request to the end. `handler` is the inner service's
/// future for it.
pub(crate) async fn run<B, F, ResB, E>(
    core: Idempotency<B>,
    holding: Holding<B::Lease>,
    handler: F,
    keyed: Keyed,
    reply: Reply<E>,
    running: WorkGuard,
) where
    B: Backend,
    F: Future<Output = Result<Response<ResB>, E>>,
    ResB: Body<Data = Bytes> + Send + Unpin + 'static,
    ResB::Error: Into<BoxError>,
{
    let _running = running;
    let mut work = Work {
        core,
        keyed,
        started: Instant::now(),
    };
    let outcome = match holding {
        Holding::Layer(lease) => {
            let mut lease = work.core.renewing(lease);
            let outcome = lease.run(catch_unwind(handler)).await;
            (Some(lease), outcome)
        }
        // Renewed by the layer until the handler takes it.
        Holding::Handler(held) => {
            let every = work.core.renew_interval();
            let outcome = tokio::select! {
                o = catch_unwind(handler) => o,
                () = held.keep_renewed(every) => unreachable!("keep_renewed never resolves"),
            };
            (held.take().await.map(|l| work.core.renewing(l)), outcome)
        }
    };
    let (Some(mut lease), outcome) = outcome else {
        // The handler took the key and stored (or freed) it itself, in its
        // own transaction: its response goes out as it is.
        let _ = reply.send(match outcome.1 {
            Ok(Ok(r)) => Ok(r.map(boxed)),
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(Problem::HandlerFailed.to_response().map(full)),
        });
        return;
    };
    let response = match outcome {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!("the service behind the idempotency layer failed; storing a 500");
            work.failed(lease).await;
            let _ = reply.send(Err(e));
            return;
        }
        Err(panic) => {
            tracing::error!(
                panic = panic_message(&panic),
                "handler panicked; answering 500"
            );
            return work.failed_reply(lease, reply).await;
        }
    };
    work.keyed.ran = response.extensions().get::<crate::Ran>().copied();
    let (parts, body) = response.into_parts();
    let mut body = boxed(body);
    let max = work.core.config().max_response_bytes;
    let mut buf = BytesMut::new();
    // While the body is all there, read it and store it before sending.
    loop {
        let step = lease.run(catch_unwind(ReadyFrame(&mut body))).await;
        match step {
            Ok(Some(Some(Ok(frame)))) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                    if buf.len() > max {
                        let fin = work
                            .finish(lease, parts.status, &parts.headers, ResponseBody::TooLarge)
                            .await;
                        let rest = boxed(Prefixed::new(buf.freeze(), body));
                        let _ = reply.send(Ok(answer(
                            &work.core,
                            &work.keyed,
                            fin,
                            Response::from_parts(parts, rest),
                        )));
                        return;
                    }
                }
            }
            Ok(Some(None)) => {
                let whole = buf.freeze();
                let fin = work
                    .finish(
                        lease,
                        parts.status,
                        &parts.headers,
                        ResponseBody::Whole(&whole),
                    )
                    .await;
                let _ = reply.send(Ok(answer(
                    &work.core,
                    &work.keyed,
                    fin,
                    Response::from_parts(parts, full(whole)),
                )));
                return;
            }
            Ok(Some(Some(Err(e)))) => {
                tracing::warn!(error = %e, "handler response body failed; answering 500");
                return work.failed_reply(lease, reply).await;
            }
            Err(panic) => {
                tracing::error!(
                    panic = panic_message(&panic),
                    "handler response body panicked; answering 500"
                );
                return work.failed_reply(lease, reply).await;
            }
            // Still being produced: stream it.
            Ok(None) => break,
        }
    }
    let (status, headers) = (parts.status, parts.headers.clone());
    let (tx, rx) = mpsc::channel(STREAM_FRAMES);
    let prefix = buf.clone().freeze();
    let to_client = if prefix.is_empty() {
        boxed(Channel(rx))
    } else {
        boxed(Prefixed::new(prefix, Channel(rx)))
    };
    let client = reply
        .send(Ok(Response::from_parts(parts, to_client)))
        .is_ok()
        .then_some(tx);
    work.stream(lease, status, &headers, body, buf, client)
        .await;
}

/// The parts of a run shared by its steps.
struct Work<B> {
    core: Idempotency<B>,
    keyed: Keyed,
    started: Instant,
}

impl<B: Backend> Work<B> {
    /// Stores (or frees, per policy) and notes how long the request took
    /// (for `Retry-After` estimates, and the handler-seconds metric).
    async fn finish(
        &mut self,
        lease: Renewing<B::Lease>,
        status: StatusCode,
        headers: &HeaderMap,
        body: ResponseBody<'_>,
    ) -> Finished {
        let fin = self
            .core
            .finish(lease, &self.keyed, status, headers, body)
            .await;
        crate::metrics::handler(self.started.elapsed());
        if fin == Finished::Stored {
            self.core
                .record_duration(&self.keyed.path, self.started.elapsed());
            crate::hooks::fire(
                self.core.config().hooks.stored.as_ref(),
                &crate::hooks::RecordEvent {
                    tenant: &self.keyed.tenant,
                    key: &self.keyed.key,
                    status: status.as_u16(),
                    first_started_at: None,
                    stored_at: None,
                    first_request_id: self.keyed.request_id.as_deref(),
                },
            );
        }
        fin
    }

    /// The handler failed (panic, service error, body error): a 500, judged
    /// by the store policy like any 500. Returns what the client gets.
    async fn failed(&mut self, lease: Renewing<B::Lease>) -> Response<BoxBody> {
        let p = Problem::HandlerFailed.to_response();
        let fin = self
            .finish(
                lease,
                p.status(),
                p.headers(),
                ResponseBody::Whole(p.body()),
            )
            .await;
        answer(&self.core, &self.keyed, fin, p.map(full))
    }

    /// [`failed`](Self::failed), answered to the first client.
    async fn failed_reply<E>(&mut self, lease: Renewing<B::Lease>, reply: Reply<E>) {
        let answer = self.failed(lease).await;
        let _ = reply.send(Ok(answer));
    }

    /// Sends a body that is still being produced to `client` (if it still
    /// listens) as it comes, while keeping up to `max_response_bytes` of it
    /// to store.
    async fn stream(
        mut self,
        mut lease: Renewing<B::Lease>,
        status: StatusCode,
        headers: &HeaderMap,
        mut body: BoxBody,
        mut kept: BytesMut,
        mut client: Option<mpsc::Sender<Result<Frame<Bytes>, BoxError>>>,
    ) {
        let max = self.core.config().max_response_bytes;
        let deadline = Instant::now() + self.core.config().capture_timeout;
        // Until the record is decided: read, keep, forward.
        let pending = loop {
            let next = tokio::select! {
                f = lease.run(catch_unwind(body.frame())) => f,
                () = tokio::time::sleep_until(deadline) => {
                    self.finish(lease, status, headers, ResponseBody::TooLarge).await;
                    break None;
                }
            };
            let frame = match next {
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => {
                    let whole = kept.freeze();
                    self.finish(lease, status, headers, ResponseBody::Whole(&whole))
                        .await;
                    // The client's body ends (`client` dropped) once stored.
                    return;
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "streamed response body failed");
                    // Stored first; the client (if it still reads) then sees
                    // its body fail, without waiting on a client that does
                    // not read.
                    self.failed(lease).await;
                    if let Some(tx) = &client {
                        let _ = tx.try_send(Err(e));
                    }
                    return;
                }
                Err(panic) => {
                    tracing::error!(
                        panic = panic_message(&panic),
                        "streamed response body panicked"
                    );
                    self.failed(lease).await;
                    if let Some(tx) = &client {
                        let _ = tx.try_send(Err("response body panicked".into()));
                    }
                    return;
                }
            };
            if let Some(data) = frame.data_ref() {
                kept.extend_from_slice(data);
                if kept.len() > max {
                    self.finish(lease, status, headers, ResponseBody::TooLarge)
                        .await;
                    break Some(frame);
                }
            }
            let Some(tx) = &client else { continue };
            // A slow client: its lease is renewed while the frame waits.
            let gone = tokio::select! {
                permit = lease.run(tx.reserve()) => match permit {
                    Ok(p) => {
                        p.send(Ok(frame));
                        false
                    }
                    Err(_) => true,
                },
                () = tokio::time::sleep_until(deadline) => {
                    self.finish(lease, status, headers, ResponseBody::TooLarge).await;
                    break Some(frame);
                }
            };
            if gone {
                client = None;
            }
        };
        // Decided: only the first client still needs the rest.
        let Some(tx) = client else { return };
        if let Some(frame) = pending
            && tx.send(Ok(frame)).await.is_err()
        {
            return;
        }
        loop {
            let item = tokio::select! {
                item = catch_unwind(body.frame()) => match item {
                    Ok(Some(item)) => item,
                    Ok(None) => return,
                    Err(_) => Err("response body panicked".into()),
                },
                // The client left while the body stalls: stop now.
                () = tx.closed() => return,
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    }
}

/// What the first client gets once the record is settled: the response, or
/// 503 when it could not be stored yet (in `Sync` no success leaves before
/// its record is durable; the retry gets 409, then the replay). A fenced
/// holder's response is sent unstored: a later request took the key over
/// after this one's lease ended, and its result is the key's.
fn answer<B: Backend>(
    core: &Idempotency<B>,
    keyed: &Keyed,
    fin: Finished,
    mut response: Response<BoxBody>,
) -> Response<BoxBody> {
    match fin {
        Finished::Stored => {
            if let Some((name, value)) = core.expiry_now(keyed) {
                response.headers_mut().insert(name, value);
            }
            response
        }
        Finished::Freed | Finished::Fenced => response,
        Finished::NotStored => Problem::ResponseNotStored {
            retry_after: Duration::from_secs(1),
        }
        .to_response()
        .map(full),
    }
}

pin_project_lite::pin_project! {
    /// A future whose panic is caught and returned (it is not polled again).
    struct Catch<F> {
        #[pin]
        f: F,
    }
}

/// Catches a panic of `f`.
fn catch_unwind<F>(f: F) -> Catch<F> {
    Catch { f }
}

impl<F: Future> Future for Catch<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let f = self.project().f;
        match std::panic::catch_unwind(AssertUnwindSafe(|| f.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// Polls a body once: `Some(frame or end)` when ready, `None` when the body
/// is still being produced.
struct ReadyFrame<'a, B>(&'a mut B);

type FrameResult = Option<Result<Frame<Bytes>, BoxError>>;

impl<B> Future for ReadyFrame<'_, B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Option<FrameResult>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut *self.0).poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(Some(f.map(|r| r.map_err(Into::into)))),
            Poll::Pending => Poll::Ready(None),
        }
    }
}

/// The body a client reads while the task streams to it.
struct Channel(mpsc::Receiver<Result<Frame<Bytes>, BoxError>>);

impl Body for Channel {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A panic payload's message, if it has one.
fn panic_message(p: &(dyn Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

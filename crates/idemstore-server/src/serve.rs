//! Serving the router over TCP as a production service must: every client
//! is bounded in time and in number, and a shutdown ends in bounded time.
//!
//! Outermost first, a request meets:
//!
//! 1. the connection cap (`--max-connections`): at the cap the accept loop
//!    waits, so further connections queue in the kernel's listen backlog;
//! 2. hyper's header read timeout (`--header-timeout`): a connection whose
//!    request head is not complete in time (slowloris) is closed, and so is
//!    a keep-alive connection left idle that long;
//! 3. the concurrency limit (`--max-concurrency`): a request beyond it gets
//!    503 problem+json with `Retry-After` at once, and never reaches the
//!    idempotency layer, so that 503 is not stored under its key;
//! 4. the body deadline (`--body-timeout`): the whole request body must
//!    arrive within it, counted from the head's arrival (a deadline, not an
//!    idle timeout: dripping a byte at a time does not extend it); a body still
//!    incomplete then fails the read, which the idempotency layer (reading
//!    the body for its fingerprint) answers with 400 `request-body-failed`,
//!    leaving the key free;
//! 5. the application's router (its routes and the idempotency layer).
//!
//! On shutdown the listener is closed at once, idle keep-alive connections
//! are closed, and requests in flight may finish for up to
//! `--shutdown-timeout`; connections still open then (a hung client, one
//! that never reads its response) are dropped. A handler never runs on a
//! connection: the idempotency layer runs it in a task of its own, which
//! the binary waits for (within the same timeout) before closing the store.
//! Work still running at the timeout is cut off when the process exits; its
//! key stays reserved until its lease ends (its side effects may have
//! happened), then a retry runs it again. Make the timeout longer than the
//! slowest handler (and the orchestrator's grace period, e.g. Kubernetes'
//! 30 s, longer still).

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::timeout::RequestBodyDeadlineLayer;

/// The bounds a client cannot push the server past (the flags of
/// [`crate::flags::LimitArgs`]).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest a client may take to send a request head.
    pub header_timeout: Duration,
    /// Longest a client may take to send a request body, after its head.
    pub body_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: NonZeroUsize,
    /// Most requests being handled at once.
    pub max_concurrency: NonZeroUsize,
    /// Longest the requests in flight at shutdown may take to finish.
    pub shutdown_timeout: Duration,
}

/// The address of the client a request came from (a request extension
/// [`serve`] sets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub std::net::SocketAddr);

/// How [`serve`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every connection finished within the shutdown timeout.
    Drained,
    /// This many connections were still open at the shutdown timeout and
    /// were dropped.
    Cut(usize),
}

/// 503 problem+json for a request beyond `--max-concurrency` (it reached
/// no handler and no idempotency layer, so nothing was reserved).
async fn overloaded(_: tower::BoxError) -> Response {
    let body = serde_json::json!({
        "type": "urn:idemstore:problem:overloaded",
        "code": "overloaded",
        "title": "Too many requests in flight",
        "status": 503,
        "detail": "The request was not processed: the server is handling as many requests as it may. Retry after a second, with the same idempotency key.",
    });
    let mut response = Response::new(axum::body::Body::from(body.to_string()));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes,
/// then drains (see the module docs). Returns once no connection task is
/// left, so no handler runs after it returns: the caller may close the
/// store.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    // One stack for the whole server (not `Router::layer`, which would
    // give each route a limit of its own).
    let service = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .concurrency_limit(limits.max_concurrency.get())
        .layer(RequestBodyDeadlineLayer::new(limits.body_timeout))
        .service(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);

    // A permit per open connection, held by its task.
    let slots = Arc::new(Semaphore::new(limits.max_connections.get()));
    let graceful = GracefulShutdown::new();
    // Every connection task; finished ones are reaped on each accept.
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: wait a little rather than spin.
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(service.clone().map_request(
            move |mut r: axum::http::Request<hyper::body::Incoming>| {
                r.extensions_mut().insert(Peer(peer));
                r
            },
        ));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            // An error here is the client's (it went away, or was too slow
            // with its head): nothing for the server to do.
            let _ = connection.await;
            drop(slot);
        });
    }
    // Stop accepting: new connections are refused from now on.
    drop(listener);
    let drained = tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown()).await;
    while connections.try_join_next().is_some() {}
    let open = connections.len();
    // Aborts the connections still open and waits for every task to end
    // (the layer's work for reserved keys runs on in tasks of its own).
    connections.shutdown().await;
    match drained {
        Ok(()) => Stopped::Drained,
        Err(_) => Stopped::Cut(open),
    }
}

/// A future that resolves on SIGTERM or Ctrl-C. The handlers are installed
/// when this is called, not when the future is first polled: a signal sent
/// right after "listening" is printed must shut the server down cleanly.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let ctrl_c = tokio::signal::ctrl_c();
    async move {
        match term {
            Some(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            None => {
                let _ = ctrl_c.await;
            }
        }
    }
}

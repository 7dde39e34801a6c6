//! [`HeldKey`]: a reserved key handed to the handler of a route whose
//! handler stores the response itself (`RoutePolicy::stored_by_handler`),
//! in the same transaction as its own writes.

use crate::backend::Lease;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// What the layer would store of a response: `None` when the route stores
/// none of it.
pub(crate) type Recorder =
    dyn Fn(&dyn Fits, StatusCode, &HeaderMap, &Bytes) -> Option<idemstore::Response> + Send + Sync;

/// The part of a lease the recorder asks: whether it takes a record.
pub(crate) trait Fits {
    fn takes(&self, r: &idemstore::Response) -> bool;
}

impl<L: Lease> Fits for L {
    fn takes(&self, r: &idemstore::Response) -> bool {
        self.fits(r).is_ok()
    }
}

/// The reserved key of this request, for a handler that stores the
/// response itself: a request extension on routes with
/// [`RoutePolicy::stored_by_handler`](crate::RoutePolicy::stored_by_handler)
/// (axum: `Extension<HeldKey<L>>`).
///
/// The handler [`take`](HeldKey::take)s the lease, writes its own rows and
/// the record ([`record`](HeldKey::record) builds it as the layer would)
/// in one transaction (`idemstore_postgres::complete_in_handler` does all
/// of it), and returns its response, which the layer then sends as it is.
/// A handler that never takes the lease leaves the storing to the layer.
/// A lease taken and dropped without completing is aborted: the key is
/// free, and the retry runs. Until the handler takes it, the layer renews
/// the lease as on any route, so a handler may run past the backend's
/// lease before it takes the key; once taken, renewing it is the
/// handler's (keep its transaction well within the lease).
pub struct HeldKey<L> {
    lease: Arc<Mutex<Option<L>>>,
    /// Notified when the handler wants the lease: a renewal under way
    /// gives way (it is cut short) instead of making the handler wait for
    /// a backend round trip, which on PostgreSQL could wait in turn for a
    /// pool connection the handler's own transaction holds.
    wanted: Arc<tokio::sync::Notify>,
    recorder: Arc<Recorder>,
}

impl<L> Clone for HeldKey<L> {
    fn clone(&self) -> Self {
        HeldKey {
            lease: self.lease.clone(),
            wanted: self.wanted.clone(),
            recorder: self.recorder.clone(),
        }
    }
}

impl<L> std::fmt::Debug for HeldKey<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldKey").finish_non_exhaustive()
    }
}

impl<L: Lease> HeldKey<L> {
    pub(crate) fn new(lease: L, recorder: Arc<Recorder>) -> HeldKey<L> {
        HeldKey {
            lease: Arc::new(Mutex::new(Some(lease))),
            wanted: Arc::new(tokio::sync::Notify::new()),
            recorder,
        }
    }

    /// Takes the reserved key's lease; `None` once taken. From then on the
    /// handler stores or frees the key, and the layer stores nothing. A
    /// renewal the layer has under way is cut short.
    pub async fn take(&self) -> Option<L> {
        self.wanted.notify_one();
        self.lease.lock().await.take()
    }

    /// Renews the lease every `every` until it is taken or fenced; never
    /// resolves (the layer drops it once the handler returns).
    pub(crate) async fn keep_renewed(&self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let mut held = self.lease.lock().await;
            let Some(lease) = held.as_mut() else {
                break;
            };
            let renewed = tokio::select! {
                r = lease.renew() => r,
                // The handler takes it: the renewal gives way, and is the
                // last (a cut renewal may or may not have extended the
                // lease, which the handler's own completion settles).
                () = self.wanted.notified() => break,
            };
            match renewed {
                Ok(()) => {}
                Err(crate::BackendError::Fenced(_)) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "renewing a held idempotency lease failed; retrying");
                }
            }
        }
        std::future::pending::<()>().await;
    }

    /// The record the layer would store for this response under the
    /// route's policy (replayed headers, redaction, body member digests,
    /// the not-replayable notice for a record `lease` cannot take); `None`
    /// when the route's store policy stores no response of `status` (then
    /// abort the lease: the key is freed, as the layer would).
    pub fn record(
        &self,
        lease: &L,
        status: StatusCode,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Option<idemstore::Response> {
        (self.recorder)(lease, status, headers, body)
    }
}

//! "Once" beyond HTTP: a message consumer, a webhook receiver or any job
//! keyed by an id runs its work at most once per id while the record lives,
//! and a redelivery gets the first run's result back, on every [`Backend`]
//! ([`execute_or_replay`]).

use crate::backend::{Backend, BackendError, Lease, Outcome};
use crate::steps::Renewing;
use idemstore::{Fingerprint, Key, Response, Tenant};
use std::future::Future;
use std::time::Duration;

/// What [`execute_or_replay`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executed {
    /// The work ran now; its result is stored (as durably as the backend
    /// promises) and is what every redelivery gets.
    Ran(Vec<u8>),
    /// The work ran before, for a message with the same id and payload:
    /// its stored result.
    Replayed(Vec<u8>),
}

/// Why [`execute_or_replay`] did not run the work, or ran it without a
/// result to keep.
#[derive(Debug, thiserror::Error)]
pub enum OnceError<E> {
    /// The work for this id is running elsewhere (another consumer, or one
    /// that died within its lease): redeliver after `retry_after`.
    #[error("the work for this id is running elsewhere; redeliver after {retry_after:?}")]
    InFlight {
        /// Until the holder's lease ends, at least 100 ms.
        retry_after: Duration,
    },
    /// The id was used for a message with another payload: a producer bug,
    /// or an id reused too soon. Not run.
    #[error("this id was used for a message with another payload; not run")]
    Mismatch,
    /// The id's record expired, and the backend refuses the id for a
    /// while after that (`refuse_expired_keys_for`): whether the work ran
    /// is no longer known here. Not run.
    #[error("this id's record expired and the id is refused for now; not run")]
    Expired,
    /// The work ran before, and its result was too large to store (that
    /// run's caller got it), or the record is not one this function wrote:
    /// it is not run again.
    #[error("the work for this id ran before and its result was not kept; not run again")]
    NotReplayable,
    /// The work returned an error: nothing is stored and the id is free,
    /// so a redelivery runs it again. Return `Err` only when the work did
    /// nothing that must not happen twice.
    #[error("the work failed (the id is free again): {0}")]
    Failed(E),
    /// The work ran, and its result is not stored yet (a full disk, Redis
    /// unreachable): the backend keeps it and stores it later, and the id
    /// stays reserved meanwhile, so the work never runs twice.
    #[error("the work ran; its result is not stored yet, and the id stays reserved: {0}")]
    NotStored(BackendError),
    /// The work ran past its lease while the id was taken over: its result
    /// was not stored (the other run's will be).
    #[error("the lease ran out while the work ran and another run took the id over: {0}")]
    Fenced(BackendError),
    /// The backend could not be asked (or refused the id); nothing ran.
    #[error("the idempotency store cannot be used; nothing ran: {0}")]
    Unavailable(BackendError),
}

/// The status the stored records of this function carry: a result.
const RESULT: u16 = 200;
/// The status of a record kept in place of a result too large to store.
const NOT_KEPT: u16 = 507;

/// Runs `work` for the message `id` of `scope` (a tenant, a queue, a
/// webhook sender: ids are per scope) at most once while the id's record
/// lives, and stores the bytes it returns as the id's result; a
/// redelivery (same id, same `payload`) gets those bytes back instead of
/// running `work` again.
///
/// While the work runs, its lease is renewed (every third of the
/// backend's lease). If this future is dropped mid-work (the consumer shuts
/// down), the id stays reserved until the lease ends, as the HTTP layer
/// does for a handler cut short: a redelivery meanwhile is told
/// [`OnceError::InFlight`], and runs the work again only after the lease.
///
/// ```
/// use idemstore_http::{execute_or_replay, Executed};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let store = idemstore::Store::open(dir.path(), idemstore::Config::default())?;
/// let payload = br#"{"order":"o-7","action":"ship"}"#;
/// let ship = || async { Ok::<_, std::io::Error>(b"shipment s-1".to_vec()) };
/// let first = execute_or_replay(&store, b"orders-queue", "msg-123", payload, ship).await?;
/// assert_eq!(first, Executed::Ran(b"shipment s-1".to_vec()));
/// // Redelivered: not shipped twice.
/// let never = || async { Ok::<_, std::io::Error>(b"shipped again!".to_vec()) };
/// let again = execute_or_replay(&store, b"orders-queue", "msg-123", payload, never).await?;
/// assert_eq!(again, Executed::Replayed(b"shipment s-1".to_vec()));
/// # Ok(()) }
/// ```
pub async fn execute_or_replay<B, F, Fut, E>(
    backend: &B,
    scope: &[u8],
    id: &str,
    payload: &[u8],
    work: F,
) -> Result<Executed, OnceError<E>>
where
    B: Backend,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Vec<u8>, E>>,
{
    let fingerprint = Fingerprint::of_parts([&b"message"[..], payload]);
    let outcome = backend
        .begin(Tenant::new(scope), Key::new(id), fingerprint)
        .await
        .map_err(OnceError::Unavailable)?;
    let lease = match outcome {
        Outcome::Reserved(lease) => lease,
        Outcome::Replay(s) if s.response.status == RESULT => {
            return Ok(Executed::Replayed(s.response.body));
        }
        Outcome::Replay(_) => return Err(OnceError::NotReplayable),
        Outcome::Mismatch(_) => return Err(OnceError::Mismatch),
        Outcome::Expired { .. } => return Err(OnceError::Expired),
        Outcome::InFlight { lease_left, .. } => {
            return Err(OnceError::InFlight {
                retry_after: lease_left.max(Duration::from_millis(100)),
            });
        }
    };
    let every = backend.lease().map_or(Duration::from_secs(20), |l| {
        (l / 3).max(Duration::from_millis(10))
    });
    let mut renewing = Renewing::new(lease, every);
    let result = renewing.run(work()).await;
    let Some(lease) = renewing.take() else {
        return Err(OnceError::Fenced(BackendError::Fenced(
            "the lease was lost while the work ran".into(),
        )));
    };
    let bytes = match result {
        Ok(bytes) => bytes,
        Err(e) => {
            // The work says it did nothing: free the id for a redelivery.
            let _ = lease.abort().await;
            return Err(OnceError::Failed(e));
        }
    };
    let mut record = Response::new(RESULT, bytes.clone());
    let fits = lease.fits(&record).is_ok();
    if !fits {
        // Ran, and cannot be kept: keep that it ran, so it never runs again.
        record = Response::new(NOT_KEPT, Vec::new());
    }
    match lease.complete(record).await {
        // Too large to keep: this caller still gets it; redeliveries are
        // told it ran.
        Ok(()) => Ok(Executed::Ran(bytes)),
        Err(e @ BackendError::Fenced(_)) => Err(OnceError::Fenced(e)),
        Err(e) => Err(OnceError::NotStored(e)),
    }
}

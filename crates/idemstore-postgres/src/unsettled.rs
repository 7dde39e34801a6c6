//! Begins that failed without an answer: the statement may have reserved
//! the key (its reply was what was lost) or may still run (a paused server
//! resumes it). Each is known by its key digest and nonce, and freed by one
//! batched statement a background task runs every [`EVERY`] while any is
//! listed, until the reservation it could make is freed or its lease would
//! have ended anyway. One task and one statement per round, however many
//! begins failed during an outage.
//!
//! Invariant: an entry stays listed until the statement freed its row, or
//! its lease would have ended (then the row is free for a takeover anyway).

use crate::sql;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How often the listed begins are freed.
pub(crate) const EVERY: Duration = Duration::from_millis(250);

/// Most entries in one statement (the oldest first).
const BATCH: usize = 4096;

/// The failed begins to free, shared with the task.
#[derive(Default)]
pub(crate) struct Unsettled {
    /// (key digest, nonce) -> when the reservation would end anyway.
    listed: Mutex<HashMap<(Vec<u8>, i64), Instant>>,
    wake: Notify,
}

impl Unsettled {
    /// Lists a begin whose reply was lost, until `lease` from now.
    pub(crate) fn add(&self, digest: Vec<u8>, nonce: i64, lease: Duration) {
        self.lock().insert((digest, nonce), Instant::now() + lease);
        self.wake.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(Vec<u8>, i64), Instant>> {
        // Plain inserts and removals: a panic mid-way leaves a usable map.
        self.listed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many are listed.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// The entries to try this round, the oldest first, after dropping
    /// those whose lease would have ended.
    fn round(&self) -> (Vec<Vec<u8>>, Vec<i64>) {
        let now = Instant::now();
        let mut listed = self.lock();
        listed.retain(|_, until| *until > now);
        let mut entries: Vec<_> = listed.iter().map(|(k, until)| (*until, k)).collect();
        entries.sort_unstable_by_key(|(until, _)| *until);
        entries
            .into_iter()
            .take(BATCH)
            .map(|(_, (d, n))| (d.clone(), *n))
            .unzip()
    }

    fn settled(&self, rows: Vec<(Vec<u8>, i64)>) {
        let mut listed = self.lock();
        for k in rows {
            listed.remove(&k);
        }
    }
}

/// The task: while anything is listed, one batched statement per round.
pub(crate) async fn free_forever(pool: PgPool, unsettled: Arc<Unsettled>, timeout: Duration) {
    loop {
        if unsettled.len() == 0 {
            unsettled.wake.notified().await;
        }
        let (digests, nonces) = unsettled.round();
        if !digests.is_empty() {
            let q = sqlx::query_as::<_, (Vec<u8>, i64)>(sql::ABORT_BY_NONCES)
                .bind(&digests)
                .bind(&nonces);
            match tokio::time::timeout(timeout, q.fetch_all(&pool)).await {
                Ok(Ok(freed)) => unsettled.settled(freed),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "freeing begins whose reply was lost failed; retried");
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}

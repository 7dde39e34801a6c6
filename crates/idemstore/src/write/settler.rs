//! Settling written batches: publishing their completions in the index and
//! waking their callers — on the settler thread, while the writer fsyncs the
//! next batch.
//!
//! With the writer doing it all, the disk sat idle while it woke a batch's
//! callers: at 64 callers a round was append ~60-100 µs, fsync ~200-260 µs,
//! waking ~55-100 µs (measured here). The settler takes the waking off the
//! writer's path: the writer hands each batch over the moment its fsync
//! returns and goes on to the next. (Handing the fsync to another thread
//! instead did worse on two cores: the writer, woken after every fsync,
//! then waited for a CPU behind the callers that batch had just woken.)
//!
//! Invariants:
//! - a batch reaches the settler only once it is as durable as the mode
//!   promises (or failed), so a completion is published and acknowledged
//!   only then;
//! - batches are settled in the order the writer wrote them, each once: the
//!   writer settles a batch itself only when none handed over is unsettled
//!   (it does when nothing else waits to be appended, as handing over would
//!   only add a thread's wake-up to the callers' wait);
//! - without a settler thread (it could not be started) the writer settles
//!   every batch itself: same results, later.

use crate::commit::Settlement;
use crate::doorbell::Doorbell;
use crate::error::Result;
use crate::index::Slot;
use crate::pipeline::Append;
use crate::shared::{Shared, spawn_guarded};
use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Every record of a written batch, with where it was written (`None`:
/// elided, expired or failed, so not in the file).
pub(crate) type Placed = Vec<(Append, Option<Slot>)>;

/// A batch to settle, and how its write went.
pub(crate) struct Job {
    placed: Placed,
    result: Result<()>,
}

/// The settler thread's inbox.
#[derive(Default)]
struct Queue {
    bell: Doorbell,
    /// Jobs handed over and not yet settled.
    unsettled: AtomicUsize,
}

/// The writer's end of the settler thread.
pub(crate) struct Settler {
    tx: Sender<Job>,
    inbox: Arc<Queue>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Settler {
    /// Starts the settler thread; `None` if it cannot be started (the
    /// writer then settles itself).
    pub(crate) fn start(shared: &Arc<Shared>) -> Option<Settler> {
        let inbox = Arc::new(Queue::default());
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = {
            let inbox = inbox.clone();
            spawn_guarded(shared, "settler", None, move |shared| {
                run(&shared, &inbox, &rx);
            })
            .ok()?
        };
        Some(Settler {
            tx,
            inbox,
            thread: Some(thread),
        })
    }

    /// Settles `placed` with `result`: on the settler thread when `busy`
    /// (the writer has more to append) or when earlier batches are still
    /// being settled there (to keep the order); here otherwise, which is
    /// sooner than a hand-over.
    pub(crate) fn settle(&self, shared: &Shared, placed: Placed, result: Result<()>, busy: bool) {
        if !busy && self.inbox.unsettled.load(Ordering::Acquire) == 0 {
            return settle(shared, placed, result);
        }
        self.inbox.unsettled.fetch_add(1, Ordering::AcqRel);
        match self.tx.send(Job { placed, result }) {
            Ok(()) => self.inbox.bell.ring(),
            // The settler thread panicked: settle here.
            Err(crossbeam_channel::SendError(job)) => {
                self.inbox.unsettled.fetch_sub(1, Ordering::AcqRel);
                settle(shared, job.placed, job.result);
            }
        }
    }

    /// Stops the settler once it has settled every batch handed over.
    pub(crate) fn stop(mut self) {
        drop(self.tx);
        self.inbox.bell.ring();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The settler thread's loop, until the writer drops its end of `rx`.
fn run(shared: &Shared, inbox: &Queue, rx: &Receiver<Job>) {
    while let Ok(job) = inbox.bell.recv(rx, None) {
        settle(shared, job.placed, job.result);
        inbox.unsettled.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Settles a batch: on success publishes its completions in the index and
/// acknowledges every record; on failure fails every record (after a failed
/// fsync the keys stay reserved: the store is poisoned).
pub(crate) fn settle(shared: &Shared, placed: Placed, result: Result<()>) {
    let mut s = Settlement::default();
    for (a, slot) in placed {
        if result.is_ok()
            && let Some(inst) = &a.install
        {
            shared.publish(inst, slot);
        }
        if let Some(d) = a.done {
            s.add(d, result.clone());
        }
    }
    s.finish();
}

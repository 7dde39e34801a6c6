//! Waiting for the writer: a one-shot result that a plain thread can block on
//! and async code can `.await` without blocking its executor.
//!
//! Blocked threads do not each get their own wake-up call: the writer settles
//! every ticket of a batch (no system call), then wakes all blocked waiters
//! with one `notify_all` on the store's shared [`Notifier`]. parking_lot
//! requeues them onto the mutex, so each woken thread wakes the next and the
//! cost of waking a batch is spread over the callers' threads instead of being
//! paid serially by the writer (it was the writer's largest cost at 64
//! callers). Async waiters are woken through their `Waker`s.
//!
//! Invariant: every [`Completer`] settles its ticket exactly once. If the
//! writer drops one unsettled (it panicked, or the store shut down with the
//! request still queued), `Drop` settles it with an error, so no waiter hangs.

use crate::error::{Error, Result};
use parking_lot::{Condvar, Mutex};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

/// Where threads blocked in [`Commit::wait`] sleep. One per store.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    lock: Mutex<()>,
    settled: Condvar,
}

impl Notifier {
    /// Wakes every blocked waiter (each re-checks its own ticket).
    pub(crate) fn notify_all(&self) {
        // Holding the lock orders this after any waiter's check-then-sleep.
        let _g = self.lock.lock();
        self.settled.notify_all();
    }
}

#[derive(Debug)]
struct Ticket {
    result: OnceLock<Result<()>>,
    wakers: Mutex<Vec<Waker>>,
    notifier: Arc<Notifier>,
}

impl Ticket {
    /// Records the result and wakes async waiters; blocked threads are woken
    /// by the caller's `Notifier::notify_all`. Returns false if already settled.
    fn set(&self, result: Result<()>) -> bool {
        if self.result.set(result).is_err() {
            return false;
        }
        let wakers = std::mem::take(&mut *self.wakers.lock());
        for w in wakers {
            w.wake();
        }
        true
    }
}

/// The writer's end of a ticket.
#[derive(Debug)]
pub(crate) struct Completer(Option<Arc<Ticket>>);

impl Completer {
    /// A fresh ticket: the completer for the writer, the [`Commit`] for the
    /// caller, who will sleep on `notifier`.
    pub(crate) fn new(notifier: &Arc<Notifier>) -> (Completer, Commit) {
        let t = Arc::new(Ticket {
            result: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
            notifier: notifier.clone(),
        });
        (Completer(Some(t.clone())), Commit(t))
    }

    /// Settles the ticket without waking blocked threads: the writer settles
    /// a whole batch, then calls `Notifier::notify_all` once.
    pub(crate) fn settle_quietly(mut self, result: Result<()>) {
        if let Some(t) = self.0.take() {
            t.set(result);
        }
    }

    /// Settles the ticket and wakes its waiters.
    pub(crate) fn settle(mut self, result: Result<()>) {
        if let Some(t) = self.0.take()
            && t.set(result)
        {
            t.notifier.notify_all();
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        if let Some(t) = self.0.take()
            && t.set(Err(Error::Poisoned {
                cause: "the writer thread stopped before this write was done".into(),
            }))
        {
            t.notifier.notify_all();
        }
    }
}

/// A pending write. [`Commit::wait`] blocks the thread until the write is as
/// durable as the store's [`Durability`](crate::Durability) says; `.await`
/// does the same without blocking an async executor.
#[derive(Debug, Clone)]
#[must_use = "a Commit does nothing unless waited on; the write is not known to be durable before"]
pub struct Commit(Arc<Ticket>);

impl Commit {
    /// A commit that is already settled (used for early errors).
    pub(crate) fn ready(result: Result<()>) -> Commit {
        let (c, commit) = Completer::new(&Arc::new(Notifier::default()));
        c.settle_quietly(result);
        commit
    }

    /// Blocks until the write is done.
    pub fn wait(self) -> Result<()> {
        if let Some(r) = self.0.result.get() {
            return r.clone();
        }
        let n = &self.0.notifier;
        let mut g = n.lock.lock();
        loop {
            if let Some(r) = self.0.result.get() {
                return r.clone();
            }
            n.settled.wait(&mut g);
        }
    }

    /// True once the outcome is known (`wait` would not block).
    pub fn is_settled(&self) -> bool {
        self.0.result.get().is_some()
    }
}

impl Future for Commit {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Some(r) = self.0.result.get() {
            return Poll::Ready(r.clone());
        }
        let mut wakers = self.0.wakers.lock();
        // Re-check under the lock: `set` stores the result before taking it.
        if let Some(r) = self.0.result.get() {
            return Poll::Ready(r.clone());
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn wait_returns_the_settled_result_from_another_thread() {
        let n = Arc::new(Notifier::default());
        let (c, commit) = Completer::new(&n);
        let h = std::thread::spawn(move || commit.wait());
        std::thread::sleep(std::time::Duration::from_millis(5));
        c.settle(Ok(()));
        assert!(h.join().unwrap().is_ok());
    }

    #[test]
    fn a_batch_settled_quietly_wakes_every_waiter_with_one_notify() {
        let n = Arc::new(Notifier::default());
        let (completers, waiters): (Vec<_>, Vec<_>) = (0..16)
            .map(|_| {
                let (c, commit) = Completer::new(&n);
                (c, std::thread::spawn(move || commit.wait()))
            })
            .unzip();
        std::thread::sleep(std::time::Duration::from_millis(5));
        for c in completers {
            c.settle_quietly(Ok(()));
        }
        n.notify_all();
        for w in waiters {
            assert!(w.join().unwrap().is_ok());
        }
    }

    #[test]
    fn poll_registers_a_waker_and_is_woken() {
        let n = Arc::new(Notifier::default());
        let (c, mut commit) = Completer::new(&n);
        let flag = Arc::new(Flag(Default::default()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut commit).poll(&mut cx).is_pending());
        c.settle_quietly(Ok(()));
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(matches!(
            Pin::new(&mut commit).poll(&mut cx),
            Poll::Ready(Ok(()))
        ));
    }

    #[test]
    fn dropped_completer_settles_with_an_error_instead_of_hanging() {
        let n = Arc::new(Notifier::default());
        let (c, commit) = Completer::new(&n);
        let h = std::thread::spawn(move || commit.wait());
        std::thread::sleep(std::time::Duration::from_millis(5));
        drop(c);
        assert!(matches!(h.join().unwrap(), Err(Error::Poisoned { .. })));
    }
}

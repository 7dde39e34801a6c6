//! Waiting for the writer: a one-shot result that a plain thread can block on
//! and async code can `.await` without blocking its executor.
//!
//! Waking a batch's blocked callers is the writer's largest cost on a small
//! machine (each wake-up is a system call, and in a VM an interrupt to another
//! CPU). So the writer does not wake them one by one: it settles every ticket
//! of the batch, hands the batch's parked threads a shared list, and unparks
//! only the first. Each woken thread unparks two more (its children in a
//! binary tree over the list), so a batch of `n` wakes in `log2(n)` rounds
//! spread over the callers' own CPUs, and nobody is woken who is not done.
//! Async waiters are woken through their `Waker`s.
//!
//! Invariants:
//! - every [`Completer`] settles its ticket exactly once; one dropped
//!   unsettled (the writer panicked, or the store shut down with the request
//!   still queued) settles it with an error, so no waiter hangs;
//! - a ticket's wake list is set before its result, so a waiter that sees its
//!   result also sees the list it must propagate to;
//! - every result of a batch is set before the first thread is unparked.

use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;

#[derive(Debug, Default)]
struct Waiters {
    threads: Vec<Thread>,
    wakers: Vec<Waker>,
    /// The writer has taken the threads: a late waiter must not park.
    collected: bool,
}

#[derive(Debug, Default)]
struct Ticket {
    result: OnceLock<Result<()>>,
    waiters: Mutex<Waiters>,
    /// The batch's parked threads, in tree order.
    wake_list: OnceLock<Arc<[Thread]>>,
}

impl Ticket {
    /// Wakes this thread's children in the batch's wake tree.
    fn propagate(&self) {
        let Some(list) = self.wake_list.get() else {
            return;
        };
        let me = std::thread::current().id();
        if let Some(i) = list.iter().position(|t| t.id() == me) {
            for child in [2 * i + 1, 2 * i + 2] {
                if let Some(t) = list.get(child) {
                    t.unpark();
                }
            }
        }
    }
}

/// Settles many tickets and wakes their waiters with one unpark.
#[derive(Default)]
pub(crate) struct Settlement {
    items: Vec<(Arc<Ticket>, Result<()>)>,
}

impl Settlement {
    pub(crate) fn add(&mut self, mut c: Completer, result: Result<()>) {
        if let Some(t) = c.0.take() {
            self.items.push((t, result));
        }
    }

    pub(crate) fn finish(self) {
        let mut threads = Vec::new();
        let mut wakers = Vec::new();
        for (t, _) in &self.items {
            let mut w = t.waiters.lock();
            w.collected = true;
            threads.append(&mut w.threads);
            wakers.append(&mut w.wakers);
        }
        let list: Arc<[Thread]> = threads.into();
        for (t, r) in self.items {
            if !list.is_empty() {
                let _ = t.wake_list.set(list.clone());
            }
            let _ = t.result.set(r);
        }
        if let Some(root) = list.first() {
            root.unpark();
        }
        for w in wakers {
            w.wake();
        }
    }
}

/// The writer's end of a ticket.
#[derive(Debug)]
pub(crate) struct Completer(Option<Arc<Ticket>>);

impl Completer {
    /// A fresh ticket: the completer for the writer, the [`Commit`] for the
    /// caller.
    pub(crate) fn new() -> (Completer, Commit) {
        let t = Arc::new(Ticket::default());
        (Completer(Some(t.clone())), Commit(t))
    }

    /// Settles this one ticket and wakes its waiters.
    pub(crate) fn settle(self, result: Result<()>) {
        let mut s = Settlement::default();
        s.add(self, result);
        s.finish();
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        if self.0.is_some() {
            let c = Completer(self.0.take());
            c.settle(Err(Error::Poisoned {
                cause: "the writer thread stopped before this write was done".into(),
            }));
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
        let t = Ticket::default();
        let _ = t.result.set(result);
        Commit(Arc::new(t))
    }

    /// Blocks until the write is done.
    pub fn wait(self) -> Result<()> {
        if let Some(r) = self.0.result.get() {
            return r.clone();
        }
        // Only a thread that put itself in the wake list may park: the writer
        // unparks exactly the threads it collected.
        let listed = {
            let mut w = self.0.waiters.lock();
            if !w.collected {
                w.threads.push(std::thread::current());
            }
            !w.collected
        };
        loop {
            if let Some(r) = self.0.result.get() {
                self.0.propagate();
                return r.clone();
            }
            if listed {
                std::thread::park();
            } else {
                // Collected before we could register: the writer is between
                // collecting and setting the result, moments away.
                std::thread::yield_now();
            }
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
        let mut w = self.0.waiters.lock();
        if w.collected {
            drop(w);
            // Being settled right now: poll again shortly.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if !w.wakers.iter().any(|x| x.will_wake(cx.waker())) {
            w.wakers.push(cx.waker().clone());
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
        let (c, commit) = Completer::new();
        let h = std::thread::spawn(move || commit.wait());
        std::thread::sleep(std::time::Duration::from_millis(5));
        c.settle(Ok(()));
        assert!(h.join().unwrap().is_ok());
    }

    #[test]
    fn a_settlement_wakes_every_waiter_of_the_batch_through_the_tree() {
        for n in [1usize, 2, 3, 7, 64] {
            let (completers, waiters): (Vec<_>, Vec<_>) = (0..n)
                .map(|_| {
                    let (c, commit) = Completer::new();
                    (c, std::thread::spawn(move || commit.wait()))
                })
                .unzip();
            std::thread::sleep(std::time::Duration::from_millis(10));
            let mut s = Settlement::default();
            for c in completers {
                s.add(c, Ok(()));
            }
            s.finish();
            for w in waiters {
                assert!(w.join().unwrap().is_ok());
            }
        }
    }

    #[test]
    fn two_threads_waiting_on_one_ticket_both_wake() {
        let (c, commit) = Completer::new();
        let a = {
            let commit = commit.clone();
            std::thread::spawn(move || commit.wait())
        };
        let b = std::thread::spawn(move || commit.wait());
        std::thread::sleep(std::time::Duration::from_millis(5));
        c.settle(Err(Error::Closed));
        assert!(matches!(a.join().unwrap(), Err(Error::Closed)));
        assert!(matches!(b.join().unwrap(), Err(Error::Closed)));
    }

    #[test]
    fn poll_registers_a_waker_and_is_woken() {
        let (c, mut commit) = Completer::new();
        let flag = Arc::new(Flag(Default::default()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut commit).poll(&mut cx).is_pending());
        c.settle(Ok(()));
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(matches!(
            Pin::new(&mut commit).poll(&mut cx),
            Poll::Ready(Ok(()))
        ));
    }

    #[test]
    fn dropped_completer_settles_with_an_error_instead_of_hanging() {
        let (c, commit) = Completer::new();
        let h = std::thread::spawn(move || commit.wait());
        std::thread::sleep(std::time::Duration::from_millis(5));
        drop(c);
        assert!(matches!(h.join().unwrap(), Err(Error::Poisoned { .. })));
    }
}

//! Waiting for the writer: a one-shot result that a plain thread can block on
//! and async code can `.await` without blocking its executor.
//!
//! Invariant: every [`Completer`] settles its ticket exactly once. If the
//! writer thread drops one unsettled (it panicked, or the store shut down
//! with the request still queued), `Drop` settles it with an error, so no
//! waiter can hang.

use crate::error::{Error, Result};
use parking_lot::{Condvar, Mutex};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
struct State {
    result: Option<Result<()>>,
    wakers: Vec<Waker>,
}

#[derive(Debug, Default)]
pub(crate) struct Ticket {
    state: Mutex<State>,
    settled: Condvar,
}

impl Ticket {
    fn settle(&self, result: Result<()>) {
        let wakers = {
            let mut s = self.state.lock();
            if s.result.is_some() {
                return;
            }
            s.result = Some(result);
            std::mem::take(&mut s.wakers)
        };
        self.settled.notify_all();
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

    pub(crate) fn settle(mut self, result: Result<()>) {
        if let Some(t) = self.0.take() {
            t.settle(result);
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.settle(Err(Error::Poisoned {
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
        let t = Arc::new(Ticket::default());
        t.settle(result);
        Commit(t)
    }

    /// Blocks until the write is done.
    pub fn wait(self) -> Result<()> {
        let mut s = self.0.state.lock();
        loop {
            if let Some(r) = &s.result {
                return r.clone();
            }
            self.0.settled.wait(&mut s);
        }
    }

    /// True once the outcome is known (`wait` would not block).
    pub fn is_settled(&self) -> bool {
        self.0.state.lock().result.is_some()
    }
}

impl Future for Commit {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut s = self.0.state.lock();
        if let Some(r) = &s.result {
            return Poll::Ready(r.clone());
        }
        if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            s.wakers.push(cx.waker().clone());
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
        c.settle(Ok(()));
        assert!(h.join().unwrap().is_ok());
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
        drop(c);
        assert!(matches!(commit.wait(), Err(Error::Poisoned { .. })));
    }
}

//! Waking the writer thread without spinning.
//!
//! crossbeam's blocking `recv` spins and calls `sched_yield` before it
//! sleeps. On a two-core machine the writer's spinning takes the CPU from
//! the very callers that would send it work (measured: 12% of all CPU under
//! 64 async callers). The writer instead polls with `try_recv` and parks;
//! senders ring the bell after each send.
//!
//! No lost wake-up: the writer announces `sleeping` and then looks at the
//! channel again; a sender puts its message in the channel and then looks at
//! `sleeping`. With a SeqCst fence on both sides between the write and the
//! read, at least one of them sees the other's write: either the writer
//! finds the message, or the sender sees `sleeping` and unparks it (an unpark
//! before the park is kept by the thread's token). The writer also never
//! sleeps longer than `MAX_NAP`, so even a wake-up lost by a bug here would
//! only cost latency.
//!
//! Reservation records need no prompt wake-up, only one within
//! `pending_write_delay`. While the store is busy the writer never sleeps
//! longer than that (a *nap*), and [`Doorbell::nudge`] leaves a napping
//! writer alone: it finds the side queue when it wakes, usually because a
//! completion woke it. Only a writer in a *deep* sleep (idle for a while, no
//! deadline near) is unparked by a nudge, with the same fence argument over
//! the side queue instead of the channel. Under load this saves a system
//! call and a writer wake-up per request (measured: ring from `begin` was
//! 2.75% of all CPU behind the HTTP layer).

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Longest single sleep of the writer.
const MAX_NAP: Duration = Duration::from_millis(100);

#[derive(Default)]
pub(crate) struct Doorbell {
    sleeping: AtomicBool,
    /// The sleep is deep: a nudge must wake it.
    deep: AtomicBool,
    thread: OnceLock<Thread>,
    /// Waits begun (`recv` and `recv_deep` calls), for tests that check the
    /// writer does not spin.
    #[cfg(test)]
    pub(crate) waits: std::sync::atomic::AtomicU64,
}

impl Doorbell {
    /// Called by a sender after it put a message in the channel.
    pub(crate) fn ring(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed)
            && self.sleeping.swap(false, Ordering::AcqRel)
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
    }

    /// Called after a record was put in the side queue: wakes the writer
    /// only from a deep sleep (a nap ends within `pending_write_delay`).
    pub(crate) fn nudge(&self) {
        fence(Ordering::SeqCst);
        if self.deep.load(Ordering::Relaxed) {
            self.ring();
        }
    }

    /// Called by the writer: the next message, waiting until `deadline`
    /// (forever if `None`). A nap (only senders wake it).
    pub(crate) fn recv<T>(
        &self,
        rx: &Receiver<T>,
        deadline: Option<Instant>,
    ) -> Result<T, RecvTimeoutError> {
        self.wait(rx, deadline, None)
    }

    /// Like `recv`, but a deep sleep: a nudge wakes it too, and it returns
    /// `Timeout` at once if `queued()` says the side queue holds records.
    pub(crate) fn recv_deep<T>(
        &self,
        rx: &Receiver<T>,
        deadline: Option<Instant>,
        queued: &dyn Fn() -> bool,
    ) -> Result<T, RecvTimeoutError> {
        self.wait(rx, deadline, Some(queued))
    }

    fn wait<T>(
        &self,
        rx: &Receiver<T>,
        deadline: Option<Instant>,
        queued: Option<&dyn Fn() -> bool>,
    ) -> Result<T, RecvTimeoutError> {
        let _ = self.thread.set(std::thread::current());
        #[cfg(test)]
        self.waits.fetch_add(1, Ordering::Relaxed);
        loop {
            match rx.try_recv() {
                Ok(m) => return Ok(m),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            self.deep.store(queued.is_some(), Ordering::Relaxed);
            self.sleeping.store(true, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            let again = rx.try_recv();
            if !matches!(again, Err(TryRecvError::Empty)) {
                self.sleeping.store(false, Ordering::Relaxed);
                return again.map_err(|_| RecvTimeoutError::Disconnected);
            }
            if queued.is_some_and(|q| q()) {
                self.sleeping.store(false, Ordering::Relaxed);
                return Err(RecvTimeoutError::Timeout);
            }
            let nap = match deadline {
                None => MAX_NAP,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.sleeping.store(false, Ordering::Relaxed);
                        return Err(RecvTimeoutError::Timeout);
                    }
                    left.min(MAX_NAP)
                }
            };
            std::thread::park_timeout(nap);
            self.sleeping.store(false, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_message_wakes_the_receiver_and_none_is_lost() {
        let bell = Arc::new(Doorbell::default());
        let (tx, rx) = crossbeam_channel::unbounded::<u32>();
        let n = 20_000;
        let senders: Vec<_> = (0..4)
            .map(|s| {
                let (tx, bell) = (tx.clone(), bell.clone());
                std::thread::spawn(move || {
                    for i in 0..n / 4 {
                        tx.send(s * n + i).unwrap();
                        bell.ring();
                        if i % 64 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let start = Instant::now();
        let mut got = 0;
        while bell.recv(&rx, None).is_ok() {
            got += 1;
        }
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(got, n);
        // Not a timing assertion on the fast path: a lost wake-up would cost
        // MAX_NAP each time; thousands of them would take minutes.
        assert!(start.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn a_nudge_wakes_a_deep_sleep() {
        let bell = Arc::new(Doorbell::default());
        let (_tx, rx) = crossbeam_channel::unbounded::<u32>();
        let queued = Arc::new(AtomicBool::new(false));
        let rounds = 200;
        let nudger = {
            let (bell, queued) = (bell.clone(), queued.clone());
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    // Wait until the sleeper took the last record.
                    while queued.load(Ordering::SeqCst) {
                        std::thread::yield_now();
                    }
                    queued.store(true, Ordering::SeqCst);
                    bell.nudge();
                }
            })
        };
        let start = Instant::now();
        for _ in 0..rounds {
            let r = bell.recv_deep(&rx, None, &|| queued.load(Ordering::SeqCst));
            assert!(matches!(r, Err(RecvTimeoutError::Timeout)));
            queued.store(false, Ordering::SeqCst);
        }
        nudger.join().unwrap();
        // Not a timing assertion on the fast path: a lost nudge costs
        // MAX_NAP (100 ms); 200 of them would take 20 s.
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn an_idle_writer_sleeps_until_a_queued_records_deadline() {
        use crate::storage::MemStorage;
        use crate::{Begin, Config, Fingerprint, Store};
        let delay = Duration::from_millis(300);
        let store = Store::open_with_storage(
            Arc::new(MemStorage::new()),
            Config::default().pending_write_delay(delay),
        )
        .unwrap();
        // Idle: past the writer's active period, in a deep sleep.
        std::thread::sleep(Duration::from_millis(250));
        let bell = &store.shared().doorbell;
        let before = bell.waits.load(Ordering::Relaxed);
        let Begin::Reserved(r) = store
            .begin(
                crate::Tenant::new("t"),
                crate::Key::new("k"),
                Fingerprint::of(b"x"),
            )
            .unwrap()
        else {
            panic!("fresh key")
        };
        let persisted = r.persisted();
        std::thread::sleep(delay + Duration::from_millis(150));
        let waits = bell.waits.load(Ordering::Relaxed) - before;
        assert!(persisted.is_settled(), "written by its deadline");
        // The record wakes the deep sleep; the writer then naps until the
        // deadline, writes, and naps or sleeps again: a handful of waits. A
        // writer polling until the deadline makes thousands.
        assert!(waits < 20, "{waits} waits for one queued record");
        drop(r);
        store.close().unwrap();
    }

    #[test]
    fn a_deadline_ends_the_wait() {
        let bell = Doorbell::default();
        let (_tx, rx) = crossbeam_channel::unbounded::<u32>();
        let r = bell.recv(&rx, Some(Instant::now() + Duration::from_millis(5)));
        assert!(matches!(r, Err(RecvTimeoutError::Timeout)));
    }
}

//! When a write is acknowledged and what survives: group commit shares
//! fsyncs, a commit can be awaited without blocking the executor, a dead disk
//! gets clear errors, periodic and no-fsync modes survive a clean restart, a
//! reservation reaches the disk within the pending-write delay (or is elided
//! when completed in the same batch), and close never leaves a caller waiting.

#![allow(clippy::unwrap_used)]

mod common;

use common::{clock, config, fp, replay, reserve, response};
use idemstore::storage::{MemStorage, Storage};
use idemstore::{Begin, Config, Durability, Error, Response, Store};
use idemstore::{Key, Tenant};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn group_commit_shares_fsyncs_between_concurrent_callers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let per_thread = 50;
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let Begin::Reserved(r) = store
                        .begin(Tenant::new("t"), Key::new(&format!("{t}-{i}")), fp("a"))
                        .unwrap()
                    else {
                        panic!("fresh key")
                    };
                    r.complete(Response::new(200, vec![7u8; 512])).unwrap();
                    // Whichever thread settled the batch, it published the
                    // completion before acknowledging it.
                    assert!(matches!(
                        store
                            .begin(Tenant::new("t"), Key::new(&format!("{t}-{i}")), fp("a"))
                            .unwrap(),
                        Begin::Replay(_)
                    ));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = store.stats();
    assert_eq!(s.completed, 16 * per_thread);
    // Each cycle's reservation record is written or elided (superseded by its
    // completion in the same batch).
    assert_eq!(s.records_written + s.records_elided, 2 * 16 * per_thread);
    // Not a timing assertion: with 16 callers waiting at once, batches must
    // hold more than one record on average.
    assert!(s.batches < s.records_written, "{s:?}");
    assert!(s.fsyncs <= s.batches * 2, "{s:?}");
}

/// A gate the writer's fsyncs wait at while it is closed, until it is
/// opened or `GATE_TIMEOUT` passes (so that a test whose code under test
/// never opens it fails instead of hanging).
#[derive(Debug, Default)]
struct Gate {
    closed: parking_lot::Mutex<bool>,
    changed: parking_lot::Condvar,
    /// An fsync waited at the gate and the timeout opened it.
    timed_out: std::sync::atomic::AtomicBool,
}

const GATE_TIMEOUT: Duration = Duration::from_secs(10);

impl Gate {
    fn close(&self) {
        *self.closed.lock() = true;
    }
    fn open(&self) {
        *self.closed.lock() = false;
        self.changed.notify_all();
    }
    fn pass(&self) {
        let mut closed = self.closed.lock();
        let deadline = std::time::Instant::now() + GATE_TIMEOUT;
        while *closed {
            if self.changed.wait_until(&mut closed, deadline).timed_out() {
                self.timed_out
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                *closed = false;
            }
        }
    }
}

/// `MemStorage` whose `sync_data` calls wait at a [`Gate`].
#[derive(Debug, Clone)]
struct GatedSyncs(MemStorage, Arc<Gate>);

#[derive(Debug)]
struct GatedFile(Arc<dyn idemstore::storage::StorageFile>, Arc<Gate>);

impl idemstore::storage::StorageFile for GatedFile {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, off)
    }
    fn write_all_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        self.0.write_all_at(buf, off)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.1.pass();
        self.0.sync_data()
    }
}

impl Storage for GatedSyncs {
    fn location(&self) -> std::path::PathBuf {
        self.0.location()
    }
    fn lock(&self) -> std::io::Result<idemstore::storage::LockOutcome> {
        self.0.lock()
    }
    fn list(&self) -> std::io::Result<Vec<String>> {
        self.0.list()
    }
    fn create(&self, name: &str) -> std::io::Result<Arc<dyn idemstore::storage::StorageFile>> {
        Ok(Arc::new(GatedFile(self.0.create(name)?, self.1.clone())))
    }
    fn open(&self, name: &str) -> std::io::Result<Arc<dyn idemstore::storage::StorageFile>> {
        Ok(Arc::new(GatedFile(self.0.open(name)?, self.1.clone())))
    }
    fn remove(&self, name: &str) -> std::io::Result<()> {
        self.0.remove(name)
    }
    fn sync_dir(&self) -> std::io::Result<()> {
        self.0.sync_dir()
    }
}

#[test]
fn commit_can_be_awaited_without_blocking_the_executor() {
    // A single-threaded executor runs two tasks: awaiting a commit, and a
    // ticker that opens the gate the writer's fsync waits at only after it
    // has run several times. If polling the commit blocked until the write
    // was durable, the ticker could never run: the gate would open only by
    // its timeout.
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let gate = Arc::new(Gate::default());
    let st = GatedSyncs(MemStorage::new(), gate.clone());
    let c = clock();
    let store = Store::open_with_storage(Arc::new(st), config(&c)).unwrap();
    let r = reserve(&store, "t", "k", fp("a"));
    gate.close();
    let commit = r.complete_async(response("async"));
    let ticks = std::cell::Cell::new(0u32);
    let done = std::cell::Cell::new(false);
    let ticks_before_done = std::cell::Cell::new(None);
    let mut awaiting: Pin<Box<dyn Future<Output = ()>>> = Box::pin(async {
        commit.await.unwrap();
        ticks_before_done.set(Some(ticks.get()));
        done.set(true);
    });
    let mut ticker: Pin<Box<dyn Future<Output = ()>>> = Box::pin(std::future::poll_fn(|cx| {
        if done.get() {
            return Poll::Ready(());
        }
        ticks.set(ticks.get() + 1);
        if ticks.get() == 5 {
            gate.open();
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }));
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let (mut a_done, mut t_done) = (false, false);
    while !(a_done && t_done) {
        a_done = a_done || awaiting.as_mut().poll(&mut cx).is_ready();
        t_done = t_done || ticker.as_mut().poll(&mut cx).is_ready();
        std::thread::park_timeout(Duration::from_millis(1));
    }
    assert!(
        !gate.timed_out.load(std::sync::atomic::Ordering::SeqCst),
        "the ticker never ran while the commit was pending: polling it blocked"
    );
    // The commit settled only after the ticker had opened the gate.
    assert!(
        ticks_before_done.get().is_some_and(|t| t >= 5),
        "{:?}",
        ticks_before_done.get()
    );
    assert_eq!(replay(&store, "t", "k", fp("a")).body, b"async");
}

#[test]
fn a_dead_disk_gets_clear_errors_and_never_hangs() {
    let st = MemStorage::new();
    let c = clock();
    let store = Store::open_with_storage(Arc::new(st.clone()), config(&c)).unwrap();
    reserve(&store, "t", "before", fp("a"))
        .complete(response("kept"))
        .unwrap();
    let after_crash = st.crash(0); // every later I/O on `st` fails
    let r = reserve(&store, "t", "k", fp("a"));
    let e = r.complete(response("lost")).unwrap_err();
    assert!(matches!(e, Error::Deferred { .. }), "{e}");
    assert!(e.to_string().contains("retry later"), "{e}");
    // The key whose request ran stays reserved: it never runs twice.
    assert!(matches!(
        store
            .begin(Tenant::new("t"), Key::new("k"), fp("a"))
            .unwrap(),
        Begin::InFlight(_)
    ));
    // New requests are refused with the write's error, which says what to do
    // (full-disk and fsync cases: tests/faults.rs).
    let e = store
        .begin(Tenant::new("t"), Key::new("k2"), fp("a"))
        .unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(e.to_string().contains("writes again by itself"), "{e}");
    assert!(e.is_unavailable());
    drop(store);
    // Reopening the disk as the crash left it serves what was acknowledged.
    let store = Store::open_with_storage(Arc::new(after_crash), config(&c)).unwrap();
    assert_eq!(replay(&store, "t", "before", fp("a")).body, b"kept");
}

#[test]
fn close_makes_later_calls_say_closed_and_releases_the_lock() {
    // That close joins the threads is tests/threads.rs (alone in its binary).
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let r = reserve(&store, "t", "k", fp("a"));
    store.close().unwrap();
    assert!(matches!(
        store.begin(Tenant::new("t"), Key::new("k"), fp("a")),
        Err(Error::Closed)
    ));
    assert!(matches!(r.complete(response("x")), Err(Error::Closed)));
    store.close().unwrap(); // idempotent
    // The lock is released: the directory opens again at once.
    Store::open(dir.path(), Config::default()).unwrap();
}

#[test]
fn periodic_and_none_durability_acknowledge_and_survive_a_clean_restart() {
    for d in [
        Durability::Periodic(Duration::from_millis(5)),
        Durability::None,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let c = clock();
        let store = Store::open(dir.path(), config(&c).durability(d)).unwrap();
        for i in 0..50 {
            reserve(&store, "t", &format!("k{i}"), fp("a"))
                .complete(response("v"))
                .unwrap();
        }
        assert_eq!(store.stats().completed, 50);
        store.close().unwrap();
        let store = Store::open(dir.path(), config(&c).durability(d)).unwrap();
        assert_eq!(store.recovery_report().completed_live, 50, "{d:?}");
    }
}

#[test]
fn a_reservation_reaches_the_disk_within_the_pending_write_delay() {
    // Sync mode, MemStorage: a crash keeps exactly what was fsynced.
    let c = clock();
    let st = MemStorage::new();
    let cfg = config(&c).pending_write_delay(Duration::from_millis(5));
    let store = Store::open_with_storage(Arc::new(st.clone()), cfg.clone()).unwrap();
    let slow = reserve(&store, "t", "slow-handler", fp("a"));
    let waited = reserve(&store, "t", "waited", fp("a"));
    waited.persisted().wait().unwrap();
    // Without waiting, the writer still writes it within the delay.
    for _ in 0..2000 {
        if slow.persisted().is_settled() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        slow.persisted().is_settled(),
        "not written within the delay"
    );
    let after = st.crash(0);
    std::mem::forget((slow, waited)); // the process died mid-handler
    let _ = store.close();
    let store = Store::open_with_storage(Arc::new(after), cfg).unwrap();
    assert_eq!(store.recovery_report().pending_live, 2);
    for k in ["slow-handler", "waited"] {
        assert!(
            matches!(
                store.begin(Tenant::new("t"), Key::new(k), fp("a")).unwrap(),
                Begin::InFlight(_)
            ),
            "{k}"
        );
    }
    c.advance(Duration::from_secs(60));
    assert!(matches!(
        store
            .begin(Tenant::new("t"), Key::new("waited"), fp("a"))
            .unwrap(),
        Begin::Reserved(_)
    ));
}

#[test]
fn reservations_completed_within_one_batch_cost_no_disk_record() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    // A long delay: the completion always arrives before the reservation is due.
    let store = Store::open(
        dir.path(),
        config(&c).pending_write_delay(Duration::from_secs(5)),
    )
    .unwrap();
    for i in 0..10 {
        reserve(&store, "t", &format!("k{i}"), fp("a"))
            .complete(response("v"))
            .unwrap();
    }
    let s = store.stats();
    assert_eq!((s.records_written, s.records_elided), (10, 10));
}

#[test]
fn closing_while_callers_complete_never_leaves_one_waiting() {
    // Every complete/flush racing a close must return (Ok or Closed), never
    // hang: nothing may be queued behind the writer's shutdown.
    for round in 0..20u64 {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Config::default()).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for t in 0..8 {
            let store = store.clone();
            let done_tx = done_tx.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let r =
                        match store.begin(Tenant::new("t"), Key::new(&format!("{t}-{i}")), fp("a"))
                        {
                            Ok(Begin::Reserved(r)) => r,
                            Ok(other) => panic!("fresh key: {other:?}"),
                            Err(_) => break,
                        };
                    let res = if i % 7 == 0 {
                        store.flush().and(r.complete(response("v")))
                    } else {
                        r.complete(response("v"))
                    };
                    if res.is_err() {
                        break;
                    }
                }
                done_tx.send(()).unwrap();
            });
        }
        std::thread::sleep(Duration::from_millis(round % 5));
        store.close().unwrap();
        for _ in 0..8 {
            done_rx
                .recv_timeout(Duration::from_secs(20))
                .expect("a caller was left waiting after close");
        }
    }
}

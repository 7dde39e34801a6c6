//! The ceiling, closed loop, and the OS-thread floor: group commit with no
//! store at all (callers queue and park, one thread writes their records
//! into preallocated space and fdatasyncs, another wakes them).

use super::threads;
use std::sync::Arc;
use std::time::Duration;

/// Group commit with nothing else, for callers that are OS threads blocking
/// until their write is fsynced. At 64 callers the CPUs are the limit and
/// this is what parking and waking the threads costs without any store
/// work; at a few callers it is no ceiling (each batch takes an extra
/// thread hop here that idemstore's writer avoids when idle). `callers`
/// threads each queue themselves and park; a committer thread sleeps until
/// the queue is non-empty, takes it, writes the batch's bytes (640 B per
/// caller, as [`raw`](super::raw)) into preallocated space and fdatasyncs
/// (so no sync journals a size change); a third thread unparks the batch
/// meanwhile, so waking overlaps the next fsync (as idemstore's settler
/// does). No index, no encoding, no records.
pub fn run(callers: usize, secs: f64) -> f64 {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Condvar, Mutex};
    /// A parked caller and the flag that releases it.
    type Waiting = (std::thread::Thread, Arc<AtomicBool>);
    let queue: Arc<(Mutex<Vec<Waiting>>, Condvar)> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<Vec<Waiting>>();
    let waker = std::thread::spawn(move || {
        for batch in rx {
            for (t, done) in batch {
                done.store(true, Ordering::Release);
                t.unpark();
            }
        }
    });
    let mut space = super::raw::Space::new(64 << 20);
    let committer = {
        let (queue, stop) = (queue.clone(), stop.clone());
        std::thread::spawn(move || {
            let record = vec![0x5au8; super::raw::RECORD];
            while !stop.load(Ordering::Relaxed) {
                let batch = {
                    let mut q = queue.0.lock().expect("queue");
                    if q.is_empty() {
                        // Bounded, so that `stop` is seen.
                        q = queue
                            .1
                            .wait_timeout(q, Duration::from_millis(1))
                            .expect("queue")
                            .0;
                    }
                    std::mem::take(&mut *q)
                };
                if batch.is_empty() {
                    continue;
                }
                space.write_and_sync(&record.repeat(batch.len()));
                tx.send(batch).expect("waker");
            }
        })
    };
    let rate = threads(callers, secs, move |_, _| {
        let done = Arc::new(AtomicBool::new(false));
        {
            let mut q = queue.0.lock().expect("queue");
            q.push((std::thread::current(), done.clone()));
            if q.len() == 1 {
                queue.1.notify_one();
            }
        }
        while !done.load(Ordering::Acquire) {
            std::thread::park();
        }
    });
    stop.store(true, Ordering::Relaxed);
    let _ = committer.join();
    let _ = waker.join();
    rate
}

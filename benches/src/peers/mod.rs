//! The report's peers for W1, one module each, each written the way a
//! competent user would build an idempotency store on it (see the `report`
//! binary's docs for the list), and the two load drivers they share:
//! [`threads`] for blocking peers and [`tasks`] for async ones.

pub mod postgres;
pub mod raw;
pub mod redb;
pub mod redis;
pub mod sled;
pub mod sqlite;
pub mod thread_floor;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The body of every W1 completion, in bytes.
pub const BODY: usize = 512;

/// Runs `op(thread, i)` from `callers` threads for about `secs`; returns ops/s.
pub fn threads(callers: usize, secs: f64, op: impl Fn(usize, u64) + Send + Sync + 'static) -> f64 {
    let op = Arc::new(op);
    let barrier = Arc::new(Barrier::new(callers + 1));
    let deadline = Arc::new(std::sync::OnceLock::<Instant>::new());
    let handles: Vec<_> = (0..callers)
        .map(|t| {
            let (op, barrier, deadline) = (op.clone(), barrier.clone(), deadline.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let end = *deadline.get().expect("set before release");
                let mut n = 0u64;
                while Instant::now() < end {
                    op(t, n);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let start = Instant::now();
    let _ = deadline.set(start + Duration::from_secs_f64(secs));
    barrier.wait();
    let total: u64 = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

/// Runs `op(task, i)` from `callers` tokio tasks for about `secs`; returns
/// ops/s (the async twin of [`threads`]).
pub async fn tasks<F, Fut>(callers: usize, secs: f64, op: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let handles: Vec<_> = (0..callers)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    op(t, n).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.await.expect("task");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

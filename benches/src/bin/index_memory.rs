//! Index bytes per key: fills a store with N completed keys (default 1M),
//! reopens it, and measures the heap the reopened store holds, with a
//! counting allocator (and the store's own estimate beside it).
//!
//! `cargo run --release -p idemstore-benches --bin index_memory -- [N]`

use idemstore::{Config, Durability, Store};
use idemstore_benches::durable_cycles;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only
// counts the sizes; see ARCHITECTURE.md ("unsafe").
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: `p` was allocated by `System` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = || Config::default().durability(Durability::None);
    let t = Instant::now();
    {
        let store = Store::open(dir.path(), cfg()).expect("open");
        durable_cycles(&store, 8, n, 0, 64);
        store.close().expect("close");
    }
    let fill = t.elapsed();
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let t = Instant::now();
    let store = Store::open(dir.path(), cfg()).expect("reopen");
    let open = t.elapsed();
    let held = LIVE.load(Ordering::Relaxed) - before;
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let stats = store.stats();
    let n = stats.live_keys;
    println!("keys: {n}");
    println!(
        "fill (Durability::None, 8 threads, 64 B bodies): {:.2} s",
        fill.as_secs_f64()
    );
    println!(
        "open (rebuild index from segments): {:.2} s",
        open.as_secs_f64()
    );
    println!(
        "heap held by the open store: {held} B = {:.1} B/key (store's index estimate: {:.1} B/key)",
        held as f64 / n as f64,
        stats.index_bytes as f64 / n as f64
    );
    println!(
        "peak extra heap during open: {:.1} B/key",
        peak as f64 / n as f64
    );
    println!(
        "disk: {} B = {:.1} B/key",
        stats.disk_bytes,
        stats.disk_bytes as f64 / n as f64
    );
}

//! W4 and W5: open time, index memory and disk bytes for a store holding `n`
//! live keys, and the space given back once their TTL passes.
//!
//! The store is filled through the public API (`Durability::None`, 8
//! threads, fresh keys, in tenths whose rates are kept), closed, then opened three ways: from its hint files
//! (three times: the first, right after the fill, ran up to twice as slow
//! as later ones here, so the figure is the median and the first is shown),
//! from its segments alone (hints deleted), and with the clock moved past
//! the retention (then one compaction pass).

use crate::{alloc, durable_cycles};
use idemstore::{Clock, Config, Durability, ManualClock, Store, SystemClock};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What [`measure`] found.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Live keys after the fill.
    pub keys: u64,
    /// Seconds to fill.
    pub fill_secs: f64,
    /// Keys per second while filling the first tenth, and the last.
    pub fill_rates: (f64, f64),
    /// Seconds to open from hint files: the median of three opens.
    pub open_hints_secs: f64,
    /// Seconds the first of those opens took, right after the fill.
    pub open_hints_first_secs: f64,
    /// Seconds to open from the segments (no hint files).
    pub open_scan_secs: f64,
    /// Heap held by the opened store, per key (counting allocator; 0 when
    /// the binary does not install it).
    pub heap_per_key: f64,
    /// The store's own index estimate, per key.
    pub index_estimate_per_key: f64,
    /// Peak extra heap while opening, per key.
    pub open_peak_per_key: f64,
    /// Bytes of the completed records themselves (FORMAT.md's record layout).
    pub record_bytes: u64,
    /// Bytes in segment files.
    pub segment_bytes: u64,
    /// Bytes in hint files.
    pub hint_bytes: u64,
    /// Bytes the compactor freed once the retention passed.
    pub freed_bytes: u64,
    /// Bytes left in the directory after that.
    pub left_bytes: u64,
}

/// (segment bytes, hint bytes) in `dir`.
fn dir_bytes(dir: &Path) -> (u64, u64) {
    let (mut seg, mut hint) = (0, 0);
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
        match e.path().extension().and_then(|x| x.to_str()) {
            Some("seg") => seg += len,
            Some("hint") => hint += len,
            _ => {}
        }
    }
    (seg, hint)
}

/// Bytes of one completed record as FORMAT.md lays it out: head (44 + key +
/// 8 token), fingerprint and three timestamps (56), status and header count
/// (4), the one `content-type: application/json` header (2 + 12 + 4 + 16),
/// body length and body.
fn record_len(key_len: usize, body: usize) -> u64 {
    (44 + key_len + 8 + 56 + 4 + (2 + 12 + 4 + 16) + 4 + body) as u64
}

/// Fills a store with `n` keys (`body`-byte responses) and measures it.
pub fn measure(n: u64, body: usize) -> Figures {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let clock = ManualClock::new(SystemClock.now());
    let retention = Duration::from_secs(24 * 3600);
    let cfg = || {
        Config::default()
            .durability(Durability::None)
            .clock(Arc::new(clock.clone()))
            .retention(retention)
    };
    let callers = 8;
    let t = Instant::now();
    // In tenths, each timed: the last tenth's rate against the first's says
    // whether a store filling up slows down.
    let chunks = n.clamp(1, 10);
    let per_chunk = n.div_ceil(chunks);
    let mut rates = Vec::new();
    {
        let store = Store::open(dir.path(), cfg()).expect("open");
        for run in 0..chunks {
            let took = durable_cycles(&store, callers, per_chunk, run, body);
            rates.push(per_chunk as f64 / took.as_secs_f64());
        }
        store.close().expect("close");
    }
    let fill_secs = t.elapsed().as_secs_f64();
    // The keys durable_cycles used: r{run}-t{t}-{i}.
    let per = per_chunk.div_ceil(callers as u64);
    let mut record_bytes = 0;
    for run in 0..chunks {
        for t in 0..callers {
            for i in 0..per {
                record_bytes += record_len(format!("r{run}-t{t}-{i}").len(), body);
            }
        }
    }
    let (segment_bytes, hint_bytes) = dir_bytes(dir.path());

    let before = alloc::live();
    alloc::reset_peak();
    let t = Instant::now();
    let store = Store::open(dir.path(), cfg()).expect("open from hints");
    let open_hints_secs = t.elapsed().as_secs_f64();
    let held = alloc::live().saturating_sub(before);
    let peak = alloc::peak().saturating_sub(before);
    let stats = store.stats();
    assert_eq!(
        store.recovery_report().segments_read,
        store.recovery_report().segments_from_hints
    );
    let keys = stats.live_keys;
    store.close().expect("close");
    let mut opens = vec![open_hints_secs];
    for _ in 0..2 {
        let t = Instant::now();
        let store = Store::open(dir.path(), cfg()).expect("open from hints");
        opens.push(t.elapsed().as_secs_f64());
        store.close().expect("close");
    }
    opens.sort_by(f64::total_cmp);

    for e in std::fs::read_dir(dir.path()).expect("read_dir").flatten() {
        if e.path().extension().is_some_and(|x| x == "hint") {
            std::fs::remove_file(e.path()).expect("remove hint");
        }
    }
    let t = Instant::now();
    let store = Store::open(dir.path(), cfg()).expect("open from segments");
    let open_scan_secs = t.elapsed().as_secs_f64();
    assert_eq!(store.recovery_report().segments_from_hints, 0);
    assert_eq!(store.stats().live_keys, keys);
    clock.advance(retention + Duration::from_secs(3600));
    let c = store.compact_now().expect("compact");
    store.close().expect("close");
    let (s, h) = dir_bytes(dir.path());
    let k = keys.max(1) as f64;
    Figures {
        keys,
        fill_secs,
        fill_rates: (
            rates.first().copied().unwrap_or(f64::NAN),
            rates.last().copied().unwrap_or(f64::NAN),
        ),
        open_hints_secs: opens[1],
        open_hints_first_secs: open_hints_secs,
        open_scan_secs,
        heap_per_key: held as f64 / k,
        index_estimate_per_key: stats.index_bytes as f64 / k,
        open_peak_per_key: peak as f64 / k,
        record_bytes,
        segment_bytes,
        hint_bytes,
        freed_bytes: c.bytes_freed,
        left_bytes: s + h,
    }
}

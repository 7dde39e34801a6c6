//! W4 and W5 for one store size: fills a store with N keys (default 1M, 64 B
//! bodies), then measures open time (from hint files and from segments),
//! the heap the opened store holds (with a counting allocator), disk bytes
//! against record bytes, and the space freed once the TTL passes.
//!
//! `cargo run --release -p idemstore-benches --bin index_memory -- [N] [BODY]`
//!
//! The last line is `figures: key=value ...` for the report binary.

use idemstore_benches::alloc::Counting;
use idemstore_benches::open;

#[global_allocator]
static A: Counting = Counting;

fn main() {
    let arg = |i: usize, d: u64| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(d)
    };
    let n = arg(1, 1_000_000);
    let body = usize::try_from(arg(2, 64)).unwrap_or(64);
    let f = open::measure(n, body);
    let k = f.keys.max(1) as f64;
    println!("keys: {} ({body} B bodies)", f.keys);
    println!(
        "fill (Durability::None, 8 threads): {:.1} s; {:.0} keys/s in the first tenth, {:.0} in the last",
        f.fill_secs, f.fill_rates.0, f.fill_rates.1
    );
    println!(
        "open from hint files: {:.2} s (median of 3; the first, right after the fill: {:.2} s)",
        f.open_hints_secs, f.open_hints_first_secs
    );
    println!(
        "open from segments (hints deleted): {:.2} s",
        f.open_scan_secs
    );
    println!(
        "heap held by the opened store: {:.1} B/key (index estimate {:.1}); peak extra during open {:.1} B/key",
        f.heap_per_key, f.index_estimate_per_key, f.open_peak_per_key
    );
    println!(
        "disk: segments {:.1} + hints {:.1} = {:.1} B/key; records {:.1} B/key; ratio {:.3}",
        f.segment_bytes as f64 / k,
        f.hint_bytes as f64 / k,
        (f.segment_bytes + f.hint_bytes) as f64 / k,
        f.record_bytes as f64 / k,
        (f.segment_bytes + f.hint_bytes) as f64 / f.record_bytes as f64
    );
    println!(
        "after the TTL: {} B freed by the compactor, {} B left",
        f.freed_bytes, f.left_bytes
    );
    println!(
        "figures: keys={} fill={:.3} fill_first={:.0} fill_last={:.0} open_hints={:.3} open_hints_first={:.3} open_scan={:.3} heap={:.2} estimate={:.2} peak={:.2} records={} segments={} hints={} freed={} left={}",
        f.keys,
        f.fill_secs,
        f.fill_rates.0,
        f.fill_rates.1,
        f.open_hints_secs,
        f.open_hints_first_secs,
        f.open_scan_secs,
        f.heap_per_key,
        f.index_estimate_per_key,
        f.open_peak_per_key,
        f.record_bytes,
        f.segment_bytes,
        f.hint_bytes,
        f.freed_bytes,
        f.left_bytes
    );
}

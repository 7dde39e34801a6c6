//! The disk's ceiling for the durable cycle: a plain loop appending the same
//! bytes a batch of completions would write, then fdatasync. Prints cycles/s
//! for each batch size, so the engine can be compared as a ratio.
//!
//! `cargo run --release -p idemstore-benches --bin raw_limit -- [SECONDS]`

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2.0);
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .expect("tempdir");
    // One completion record with a 512 B body is ~640 B framed.
    let record = vec![0x5au8; 640];
    for batch in [1usize, 8, 32, 64] {
        let path = dir.path().join(format!("raw-{batch}"));
        let f = std::fs::File::create(&path).expect("create");
        let buf: Vec<u8> = record.repeat(batch);
        let mut off = 0u64;
        let mut n = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs_f64(secs) {
            f.write_all_at(&buf, off).expect("write");
            f.sync_data().expect("fdatasync");
            off += buf.len() as u64;
            n += 1;
        }
        let el = start.elapsed().as_secs_f64();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "raw batch {batch:>2}: {:>8.0} cycles/s, {:>6.0} µs per fdatasync",
            (n * batch as u64) as f64 / el,
            el / n as f64 * 1e6
        );
    }
}

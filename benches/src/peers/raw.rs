//! The raw limit: append the same bytes a batch of `callers` completions
//! writes, then fdatasync, in a loop (the disk's ceiling).

use std::os::unix::fs::FileExt;
use std::time::Instant;

/// Cycles/s of a loop appending 640 B per caller (one framed completion
/// record with a 512 B body) in one write, then fdatasync.
pub fn run(callers: usize, secs: f64) -> f64 {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let f = std::fs::File::create(dir.path().join("raw")).expect("create");
    let buf = vec![0x5au8; 640 * callers];
    let (mut off, mut n) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        f.write_all_at(&buf, off).expect("write");
        f.sync_data().expect("fdatasync");
        off += buf.len() as u64;
        n += callers as u64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

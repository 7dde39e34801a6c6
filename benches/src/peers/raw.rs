//! The disk's ceiling for the durable cycle: the best a store could do on
//! this disk, writing the bytes a batch of `callers` completions writes
//! (640 B each: one framed completion record with a 512 B body) into
//! preallocated, fsynced space and then `fdatasync`ing, so that no sync
//! also journals a size change (as the engine avoids it, by writing zeros
//! ahead). [`growing`] is the same loop appending to a growing file, kept as
//! a reference: each of its syncs also commits the file's new size.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

/// Bytes of one completion, framed.
pub const RECORD: usize = 640;

/// Preallocated space: a file of `len` bytes written with zeros and
/// fsynced, then written again in place from the start, wrapping around.
pub struct Space {
    file: File,
    len: u64,
    off: u64,
    _dir: tempfile::TempDir,
}

impl Space {
    /// `len` bytes (rounded up to 1 MiB) in a file under the current
    /// directory.
    ///
    /// # Panics
    ///
    /// If the file cannot be created, written or synced.
    pub fn new(len: u64) -> Space {
        let dir = tempfile::tempdir_in(".").expect("tempdir");
        Space::in_dir(dir, len)
    }

    fn in_dir(dir: tempfile::TempDir, len: u64) -> Space {
        const MIB: usize = 1 << 20;
        let mib = MIB as u64;
        let len = len.div_ceil(mib).max(1) * mib;
        let file = File::create(dir.path().join("space")).expect("create");
        let zeros = vec![0u8; MIB];
        let mut off = 0;
        while off < len {
            file.write_all_at(&zeros, off).expect("preallocate");
            off += mib;
        }
        file.sync_all().expect("fsync");
        sync_dir(dir.path());
        Space {
            file,
            len,
            off: 0,
            _dir: dir,
        }
    }

    /// Writes `buf` at the next place (from the start again when it would
    /// pass the end), then `fdatasync`s.
    ///
    /// # Panics
    ///
    /// If the write or the sync fails, or `buf` is longer than the space.
    pub fn write_and_sync(&mut self, buf: &[u8]) {
        let n = buf.len() as u64;
        assert!(n <= self.len, "a batch larger than the space");
        if self.off + n > self.len {
            self.off = 0;
        }
        self.file.write_all_at(buf, self.off).expect("write");
        self.file.sync_data().expect("fdatasync");
        self.off += n;
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The ceiling, open loop: one thread writes a batch of `callers` records
/// into preallocated space and `fdatasync`s, again and again (batch =
/// callers, as if they were always all waiting). Cycles/s.
pub fn ceiling(callers: usize, secs: f64) -> f64 {
    let buf = vec![0x5au8; RECORD * callers];
    // 64 MiB: large enough that a wrap-around is rare, small enough to
    // preallocate in well under a second.
    let mut space = Space::new(64 << 20);
    let n = loop_for(secs, || space.write_and_sync(&buf));
    n * callers as f64
}

/// The same loop appending to a growing file: every fdatasync also commits
/// a size change (the report's former "raw limit").
pub fn growing(callers: usize, secs: f64) -> f64 {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let f = File::create(dir.path().join("raw")).expect("create");
    let buf = vec![0x5au8; RECORD * callers];
    let mut off = 0u64;
    let n = loop_for(secs, || {
        f.write_all_at(&buf, off).expect("write");
        f.sync_data().expect("fdatasync");
        off += buf.len() as u64;
    });
    n * callers as f64
}

/// Runs `step` for about `secs`; steps per second.
fn loop_for(secs: f64, mut step: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        step();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

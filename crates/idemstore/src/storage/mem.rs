//! An in-memory directory that can simulate a power cut.
//!
//! Each file remembers the bytes that were made durable by `sync_data` apart
//! from the bytes merely written; the directory remembers which files existed
//! at the last `sync_dir`. [`MemStorage::crash`] builds what a power cut at
//! this instant could leave behind: only files whose directory entry was
//! synced, each holding its synced bytes plus, at random, part of what was
//! appended after (possibly as zeros, as a filesystem that extended the size
//! but not the data would leave it).

use super::{LockOutcome, Storage, StorageFile};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// In-memory [`Storage`] for tests and fuzzing, with crash images.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    inner: Arc<MemDir>,
}

#[derive(Debug, Default)]
struct MemDir {
    state: Mutex<DirState>,
    /// Set by `crash`: this instance is the dead machine's disk.
    dead: AtomicBool,
}

#[derive(Debug, Default)]
struct DirState {
    files: BTreeMap<String, Arc<MemFile>>,
    /// The directory as of the last `sync_dir`.
    durable: BTreeMap<String, Arc<MemFile>>,
    locked: bool,
}

#[derive(Debug, Default)]
struct MemFile {
    data: Mutex<FileData>,
    dir: std::sync::Weak<MemDir>,
}

#[derive(Debug, Default, Clone)]
struct FileData {
    written: Vec<u8>,
    synced: Vec<u8>,
    /// Lowest offset changed since the last sync (`usize::MAX`: none).
    dirty_from: usize,
}

fn gone() -> io::Error {
    io::Error::other("simulated power cut: this storage belongs to a crashed store")
}

/// splitmix64: a tiny deterministic generator for crash images.
fn next(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl MemStorage {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates a power cut now. Returns the disk as the next boot finds it
    /// (unlocked); this instance stops working (every call fails), as the
    /// crashed process's view of its disk would.
    ///
    /// `seed` picks how much of each file's unsynced tail survives. With
    /// `seed == 0` exactly the synced state survives (nothing more).
    pub fn crash(&self, seed: u64) -> MemStorage {
        self.inner.dead.store(true, Ordering::SeqCst);
        let state = self.inner.state.lock();
        let mut rng = seed;
        let out = MemStorage::new();
        {
            let mut new_state = out.inner.state.lock();
            for (name, file) in &state.durable {
                let d = file.data.lock();
                let mut bytes = d.synced.clone();
                let appended_only = d.dirty_from >= d.synced.len();
                if seed != 0 && appended_only && d.written.len() > d.synced.len() {
                    let extra = d.written.len() - d.synced.len();
                    let keep = usize::try_from(next(&mut rng) % (extra as u64 + 1)).unwrap_or(0);
                    let start = d.synced.len();
                    if next(&mut rng).is_multiple_of(4) {
                        bytes.resize(start + keep, 0);
                    } else {
                        bytes.extend_from_slice(&d.written[start..start + keep]);
                    }
                }
                let f = Arc::new(MemFile {
                    data: Mutex::new(FileData {
                        written: bytes.clone(),
                        synced: bytes,
                        dirty_from: usize::MAX,
                    }),
                    dir: Arc::downgrade(&out.inner),
                });
                new_state.files.insert(name.clone(), f.clone());
                new_state.durable.insert(name.clone(), f);
            }
        }
        out
    }

    /// A copy of the current (written, not necessarily synced) bytes of a
    /// file, or `None` if it does not exist.
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        let state = self.inner.state.lock();
        state.files.get(name).map(|f| f.data.lock().written.clone())
    }

    /// Replaces a file's bytes as if they had been written and synced (for
    /// tests that damage a store on purpose).
    pub fn put_file(&self, name: &str, bytes: Vec<u8>) {
        let mut state = self.inner.state.lock();
        let f = Arc::new(MemFile {
            data: Mutex::new(FileData {
                written: bytes.clone(),
                synced: bytes,
                dirty_from: usize::MAX,
            }),
            dir: Arc::downgrade(&self.inner),
        });
        state.files.insert(name.to_owned(), f.clone());
        state.durable.insert(name.to_owned(), f);
    }

    fn check(&self) -> io::Result<()> {
        if self.inner.dead.load(Ordering::SeqCst) {
            Err(gone())
        } else {
            Ok(())
        }
    }
}

#[derive(Debug)]
struct MemLock(Arc<MemDir>);

impl Drop for MemLock {
    fn drop(&mut self) {
        self.0.state.lock().locked = false;
    }
}

impl Storage for MemStorage {
    fn location(&self) -> PathBuf {
        PathBuf::from("<memory>")
    }

    fn lock(&self) -> io::Result<LockOutcome> {
        self.check()?;
        let mut state = self.inner.state.lock();
        if state.locked {
            return Ok(LockOutcome::Held {
                holder: "another store in this process".into(),
            });
        }
        state.locked = true;
        Ok(LockOutcome::Acquired(Box::new(MemLock(self.inner.clone()))))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        self.check()?;
        Ok(self.inner.state.lock().files.keys().cloned().collect())
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        self.check()?;
        let mut state = self.inner.state.lock();
        if state.files.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                name.to_owned(),
            ));
        }
        let f = Arc::new(MemFile {
            data: Mutex::new(FileData {
                dirty_from: usize::MAX,
                ..FileData::default()
            }),
            dir: Arc::downgrade(&self.inner),
        });
        state.files.insert(name.to_owned(), f.clone());
        Ok(f)
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        self.check()?;
        let state = self.inner.state.lock();
        match state.files.get(name) {
            Some(f) => Ok(f.clone()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, name.to_owned())),
        }
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.check()?;
        let mut state = self.inner.state.lock();
        match state.files.remove(name) {
            Some(_) => Ok(()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, name.to_owned())),
        }
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.check()?;
        let mut state = self.inner.state.lock();
        state.durable = state.files.clone();
        Ok(())
    }
}

impl MemFile {
    fn check(&self) -> io::Result<()> {
        match self.dir.upgrade() {
            Some(d) if !d.dead.load(Ordering::SeqCst) => Ok(()),
            _ => Err(gone()),
        }
    }
}

impl StorageFile for MemFile {
    fn len(&self) -> io::Result<u64> {
        self.check()?;
        Ok(self.data.lock().written.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check()?;
        let d = self.data.lock();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        if end > d.written.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&d.written[start..end]);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check()?;
        let mut d = self.data.lock();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start + buf.len();
        if d.written.len() < end {
            d.written.resize(end, 0);
        }
        d.written[start..end].copy_from_slice(buf);
        d.dirty_from = d.dirty_from.min(start);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        let mut d = self.data.lock();
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        d.written.resize(len, 0);
        d.dirty_from = d.dirty_from.min(len);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        let mut d = self.data.lock();
        let keep = d.dirty_from.min(d.synced.len()).min(d.written.len());
        d.synced.truncate(keep);
        let tail = d.written[keep..].to_vec();
        d.synced.extend_from_slice(&tail);
        d.dirty_from = usize::MAX;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_bytes_and_synced_dir_entries_only() {
        let s = MemStorage::new();
        let a = s.create("a").unwrap();
        a.write_all_at(b"durable", 0).unwrap();
        a.sync_data().unwrap();
        s.sync_dir().unwrap();
        a.write_all_at(b"-volatile", 7).unwrap();
        let b = s.create("b").unwrap(); // directory entry never synced
        b.write_all_at(b"x", 0).unwrap();
        b.sync_data().unwrap();

        let after = s.crash(0);
        assert_eq!(after.file_bytes("a").unwrap(), b"durable");
        assert!(after.file_bytes("b").is_none());
        // The crashed instance refuses to work.
        assert!(a.write_all_at(b"z", 0).is_err());
        assert!(s.list().is_err());
    }

    #[test]
    fn crash_may_keep_a_prefix_of_the_unsynced_tail() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 1..200 {
            let s = MemStorage::new();
            let a = s.create("a").unwrap();
            s.sync_dir().unwrap();
            a.write_all_at(b"0123", 0).unwrap();
            a.sync_data().unwrap();
            a.write_all_at(b"4567", 4).unwrap();
            let bytes = s.crash(seed).file_bytes("a").unwrap();
            assert!(bytes.starts_with(b"0123") && bytes.len() <= 8);
            seen.insert(bytes);
        }
        assert!(seen.len() > 3, "crash images should vary: {seen:?}");
    }

    #[test]
    fn removal_without_dir_sync_is_undone_by_a_crash() {
        let s = MemStorage::new();
        let a = s.create("a").unwrap();
        a.write_all_at(b"x", 0).unwrap();
        a.sync_data().unwrap();
        s.sync_dir().unwrap();
        s.remove("a").unwrap();
        assert!(s.crash(0).file_bytes("a").is_some());
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let s = MemStorage::new();
        let g = s.lock().unwrap();
        assert!(matches!(g, LockOutcome::Acquired(_)));
        assert!(matches!(s.lock().unwrap(), LockOutcome::Held { .. }));
        drop(g);
        assert!(matches!(s.lock().unwrap(), LockOutcome::Acquired(_)));
    }
}

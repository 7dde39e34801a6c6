//! An in-memory directory that can simulate a power cut.
//!
//! Each file remembers the bytes that were made durable by `sync_data` apart
//! from the changes made since (every write, zeroing and length change, in
//! order); the directory remembers which files existed at the last
//! `sync_dir`. [`MemStorage::crash`] builds what a power cut at this instant
//! could leave behind: only files whose directory entry was synced, each
//! holding its synced bytes with each later change, independently, as a
//! disk and a page cache could have left it:
//!
//! - not applied, or applied whole;
//! - torn: a prefix of it applied, or only some of its 512-byte sectors;
//! - only the file's new size applied, the new bytes read back as zeros (a
//!   file system that extended the size but not the data).
//!
//! That holds for overwrites of bytes already synced too (the writer
//! overwrites the zeros it wrote ahead): they may come back old, new, or
//! mixed sector by sector. Bytes no change since the last sync touched are
//! never altered.

use super::traits::{LockOutcome, Storage, StorageFile};
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
    /// What reads see: `synced` with every change in `unsynced` applied.
    written: Vec<u8>,
    /// The bytes as of the last `sync_data`: what a power cut keeps at least.
    synced: Vec<u8>,
    /// Every change since the last `sync_data`, in order.
    unsynced: Vec<Change>,
}

/// One change to a file's bytes.
#[derive(Debug, Clone)]
enum Change {
    Write { offset: usize, bytes: Vec<u8> },
    Zeros { offset: usize, len: usize },
    SetLen(usize),
}

/// A torn write's granularity: a disk writes a sector whole or not at all.
const SECTOR: usize = 512;

impl Change {
    /// The range of bytes it writes (none for a length change).
    fn range(&self) -> std::ops::Range<usize> {
        match self {
            Change::Write { offset, bytes } => *offset..offset + bytes.len(),
            Change::Zeros { offset, len } => *offset..offset + len,
            Change::SetLen(_) => 0..0,
        }
    }

    /// Applies the change's bytes within `part` (a sub-range of `range()`),
    /// growing the file with zeros to reach it.
    fn apply_part(&self, img: &mut Vec<u8>, part: std::ops::Range<usize>) {
        if part.is_empty() {
            return;
        }
        if img.len() < part.end {
            img.resize(part.end, 0);
        }
        match self {
            Change::Write { offset, bytes } => {
                img[part.clone()].copy_from_slice(&bytes[part.start - offset..part.end - offset])
            }
            _ => img[part].fill(0),
        }
    }

    /// Applies the whole change.
    fn apply(&self, img: &mut Vec<u8>) {
        match self {
            Change::SetLen(len) => img.resize(*len, 0),
            _ => self.apply_part(img, self.range()),
        }
    }

    /// Applies what a power cut during or after it, before a sync, could
    /// have left: chosen by `rng` (see the module docs).
    fn apply_torn(&self, img: &mut Vec<u8>, rng: &mut u64) {
        let r = self.range();
        if let Change::SetLen(_) = self {
            if next(rng).is_multiple_of(2) {
                self.apply(img);
            }
            return;
        }
        match next(rng) % 5 {
            0 => {}
            1 => self.apply(img),
            2 => {
                let keep = usize::try_from(next(rng) % (r.len() as u64 + 1)).unwrap_or(0);
                self.apply_part(img, r.start..r.start + keep);
            }
            3 => {
                let mut at = r.start;
                while at < r.end {
                    let end = ((at / SECTOR + 1) * SECTOR).min(r.end);
                    if next(rng).is_multiple_of(2) {
                        self.apply_part(img, at..end);
                    }
                    at = end;
                }
            }
            _ => {
                if img.len() < r.end {
                    img.resize(r.end, 0);
                }
            }
        }
    }
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
    /// `seed` picks what becomes of each change made since its file's last
    /// sync (see the module docs). With `seed == 0` exactly the synced state
    /// survives (nothing more).
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
                if seed != 0 {
                    for change in &d.unsynced {
                        change.apply_torn(&mut bytes, &mut rng);
                    }
                }
                let f = Arc::new(MemFile {
                    data: Mutex::new(FileData {
                        written: bytes.clone(),
                        synced: bytes,
                        unsynced: Vec::new(),
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
                unsynced: Vec::new(),
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
            data: Mutex::new(FileData::default()),
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
        let offset = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.change(Change::Write {
            offset,
            bytes: buf.to_vec(),
        })
    }

    fn write_zeros(&self, offset: u64, len: u64) -> io::Result<()> {
        let offset = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.change(Change::Zeros { offset, len })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.change(Change::SetLen(len))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        let mut d = self.data.lock();
        let d = &mut *d;
        for change in d.unsynced.drain(..) {
            change.apply(&mut d.synced);
        }
        Ok(())
    }
}

impl MemFile {
    /// Makes `change` visible to reads, and remembers it until the next sync.
    fn change(&self, change: Change) -> io::Result<()> {
        self.check()?;
        let mut d = self.data.lock();
        change.apply(&mut d.written);
        d.unsynced.push(change);
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
    fn crash_may_tear_an_overwrite_of_synced_bytes_by_prefix_or_by_sector() {
        const N: usize = 4 * SECTOR;
        let (mut untouched, mut whole, mut prefix, mut sectors) = (0, 0, 0, 0);
        for seed in 1..400 {
            let s = MemStorage::new();
            let a = s.create("a").unwrap();
            s.sync_dir().unwrap();
            a.write_all_at(&[b'A'; N], 0).unwrap();
            a.sync_data().unwrap();
            a.write_all_at(&[b'B'; N], 0).unwrap();
            assert_eq!(s.file_bytes("a").unwrap(), vec![b'B'; N], "reads see it");
            let img = s.crash(seed).file_bytes("a").unwrap();
            assert_eq!(img.len(), N);
            assert!(img.iter().all(|&b| b == b'A' || b == b'B'));
            let bs = img.iter().filter(|&&b| b == b'B').count();
            let is_prefix = img[..bs].iter().all(|&b| b == b'B');
            match bs {
                0 => untouched += 1,
                N => whole += 1,
                _ if is_prefix => prefix += 1,
                _ => {
                    // Not a prefix: whole sectors, each old or new.
                    for sector in img.chunks(SECTOR) {
                        assert!(sector.iter().all(|&b| b == sector[0]), "{sector:?}");
                    }
                    sectors += 1;
                }
            }
        }
        assert!(
            untouched > 0 && whole > 0 && prefix > 0 && sectors > 0,
            "{untouched} {whole} {prefix} {sectors}"
        );
    }

    #[test]
    fn a_sync_makes_every_change_durable_and_no_crash_alters_it() {
        let s = MemStorage::new();
        let a = s.create("a").unwrap();
        s.sync_dir().unwrap();
        a.write_zeros(0, 3000).unwrap();
        a.write_all_at(b"xyz", 1000).unwrap();
        a.set_len(2000).unwrap();
        a.write_all_at(b"end", 2500).unwrap();
        a.sync_data().unwrap();
        let want = s.file_bytes("a").unwrap();
        assert_eq!(want.len(), 2503);
        for seed in 0..50 {
            let s2 = MemStorage::new();
            let b = s2.create("b").unwrap();
            s2.sync_dir().unwrap();
            b.write_all_at(&want, 0).unwrap();
            b.sync_data().unwrap();
            assert_eq!(s2.crash(seed).file_bytes("b").unwrap(), want);
        }
        assert_eq!(s.crash(9).file_bytes("a").unwrap(), want);
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

//! The real filesystem.

use super::traits::{LockOutcome, Storage, StorageFile};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Name of the lock file inside a store directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// A directory on the local filesystem. Locking uses `flock` (via
/// `File::try_lock`), which also refuses a second opener inside the same
/// process.
#[derive(Debug, Clone)]
pub struct FsStorage {
    dir: PathBuf,
    /// Opened by [`FsStorage::read_only`]: files are opened for reading
    /// only, and nothing is created, removed or locked.
    read_only: bool,
}

/// The error of every change asked of a read-only storage.
fn refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the store was opened read-only",
    )
}

impl FsStorage {
    /// Storage in `dir`, created if missing (with any missing parents).
    /// Every directory it creates is made durable: the parent of each is
    /// fsynced once it exists, so a power cut cannot take the store
    /// directory away with the files later created (and fsynced) in it.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        // The directories missing now, innermost first.
        let mut missing = Vec::new();
        let mut at = dir.as_path();
        while !at.as_os_str().is_empty() && !at.exists() {
            missing.push(at);
            match at.parent() {
                Some(p) => at = p,
                None => break,
            }
        }
        fs::create_dir_all(&dir)?;
        for created in missing.iter().rev() {
            let parent = match created.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            File::open(parent)?.sync_all()?;
        }
        Ok(FsStorage {
            dir,
            read_only: false,
        })
    }

    /// Storage in the existing directory `dir` that only reads: every file
    /// is opened read-only, and creating, removing, syncing or locking
    /// fails with `PermissionDenied`. Safe beside a store that has the
    /// directory open.
    pub fn read_only(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !fs::metadata(&dir)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        Ok(FsStorage {
            dir,
            read_only: true,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[derive(Debug)]
struct LockGuard(#[allow(dead_code)] File);

impl Storage for FsStorage {
    fn location(&self) -> PathBuf {
        self.dir.clone()
    }

    fn lock(&self) -> io::Result<LockOutcome> {
        if self.read_only {
            return Err(refused());
        }
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.path(LOCK_FILE))?;
        match f.try_lock() {
            Ok(()) => {
                // Record who holds it, for the error a second opener sees.
                f.set_len(0)?;
                f.seek(SeekFrom::Start(0))?;
                write!(f, "pid {}", std::process::id())?;
                Ok(LockOutcome::Acquired(Box::new(LockGuard(f))))
            }
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                Ok(LockOutcome::Held {
                    holder: holder.trim().chars().take(64).collect(),
                })
            }
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            if let Some(name) = entry.file_name().to_str()
                && name != LOCK_FILE
            {
                out.push(name.to_owned());
            }
        }
        Ok(out)
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        if self.read_only {
            return Err(refused());
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.path(name))?;
        Ok(Arc::new(FsFile {
            file: f,
            path: self.path(name),
        }))
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(!self.read_only)
            .open(self.path(name))?;
        Ok(Arc::new(FsFile {
            file: f,
            path: self.path(name),
        }))
    }

    /// Reads each file through the page cache into a scratch buffer (open
    /// reads hint files one after another while it decodes them; from a
    /// cold cache the disk is then already busy with the next ones).
    fn read_ahead(
        &self,
        names: Vec<String>,
        stop: Arc<AtomicBool>,
    ) -> Option<std::thread::JoinHandle<()>> {
        if names.is_empty() {
            return None;
        }
        let paths: Vec<PathBuf> = names.iter().map(|n| self.path(n)).collect();
        std::thread::Builder::new()
            .name("idemstore-readahead".into())
            .spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                for path in paths {
                    let Ok(mut f) = File::open(path) else {
                        continue;
                    };
                    while !stop.load(Ordering::Relaxed) && f.read(&mut buf).is_ok_and(|n| n > 0) {}
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
            })
            .ok()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        if self.read_only {
            return Err(refused());
        }
        fs::remove_file(self.path(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        if self.read_only {
            return Err(refused());
        }
        File::open(&self.dir)?.sync_all()
    }
}

#[derive(Debug)]
struct FsFile {
    file: File,
    /// Where it is, to open it again with `O_DIRECT` for `write_zeros`.
    path: PathBuf,
}

/// `O_DIRECT` needs offsets, lengths and buffer addresses aligned to the
/// device's logical block; 4 KiB covers every common one.
const DIRECT_ALIGN: u64 = 4096;

impl FsFile {
    /// Writes zeros over `[offset, end)`, both `DIRECT_ALIGN`-aligned,
    /// through a second descriptor opened with `O_DIRECT`: the zeros go to
    /// the disk without passing through (and dirtying) the page cache, so
    /// they cost the writer no copying and the next `fdatasync` no 4 MiB of
    /// writeback (measured: writing them buffered was ~10% of all CPU at 64
    /// callers). `Err` if the file system refuses `O_DIRECT` (tmpfs does).
    fn write_zeros_direct(&self, offset: u64, end: u64) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&self.path)?;
        let zeros = super::traits::aligned_zeros();
        let mut at = offset;
        while at < end {
            let n = (end - at).min(zeros.len() as u64);
            #[allow(clippy::cast_possible_truncation)] // n <= zeros.len()
            direct.write_all_at(&zeros[..n as usize], at)?;
            at += n;
        }
        Ok(())
    }
}

impl StorageFile for FsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The aligned middle of the range with `O_DIRECT` (see
    /// `write_zeros_direct`), the unaligned ends through the page cache;
    /// all of it through the page cache where `O_DIRECT` is refused.
    fn write_zeros(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        let (a, b) = (
            offset.next_multiple_of(DIRECT_ALIGN),
            end / DIRECT_ALIGN * DIRECT_ALIGN,
        );
        if a >= b {
            return super::traits::write_zeros_through(self, offset, len);
        }
        super::traits::write_zeros_through(self, offset, a - offset)?;
        if self.write_zeros_direct(a, b).is_err() {
            // No O_DIRECT here (or it failed part way): the page cache
            // writes the same zeros.
            super::traits::write_zeros_through(self, a, b - a)?;
        }
        super::traits::write_zeros_through(self, b, end - b)
    }

    fn map(&self, len: u64) -> Option<super::map::Mapping> {
        super::map::map(&self.file, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills a file with a pattern, zeros `[off, off + len)` and checks that
    /// exactly those bytes changed.
    fn zero_range_in(dir: &Path, off: u64, len: u64) {
        let st = FsStorage::new(dir).unwrap();
        let name = format!("z-{off}-{len}");
        let f = st.create(&name).unwrap();
        let size = (off + len + 10_000) as usize;
        let pattern: Vec<u8> = (0..size).map(|i| (i % 251) as u8 + 1).collect();
        f.write_all_at(&pattern, 0).unwrap();
        f.write_zeros(off, len).unwrap();
        let mut back = vec![0u8; size];
        f.read_exact_at(&mut back, 0).unwrap();
        for (i, (&got, &was)) in back.iter().zip(&pattern).enumerate() {
            let zeroed = (off..off + len).contains(&(i as u64));
            assert_eq!(got, if zeroed { 0 } else { was }, "byte {i} of {name}");
        }
        // Past the end too (the writer's case): the file grows.
        let end = size as u64;
        f.write_zeros(end + 100, 3 * DIRECT_ALIGN).unwrap();
        assert_eq!(f.len().unwrap(), end + 100 + 3 * DIRECT_ALIGN);
        let mut tail = vec![1u8; 3 * DIRECT_ALIGN as usize];
        f.read_exact_at(&mut tail, end + 100).unwrap();
        assert!(tail.iter().all(|&b| b == 0));
    }

    #[test]
    fn write_zeros_zeroes_exactly_its_range_aligned_or_not() {
        let dir = tempfile::tempdir().unwrap();
        for (off, len) in [
            (0, 4096),
            (4096, 3 * 4096),
            (1, 10),
            (100, 4096),
            (4000, 8192),
            (4095, 2),
            (12_345, (1 << 20) + 5_000),
            (8192, 2 << 20),
        ] {
            zero_range_in(dir.path(), off, len);
        }
    }

    #[test]
    fn write_zeros_falls_back_to_the_page_cache() {
        // The O_DIRECT descriptor is opened by path: once the file is
        // unlinked that fails, and the page cache must write the zeros.
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::new(dir.path()).unwrap();
        let f = st.create("gone").unwrap();
        f.write_all_at(&[7u8; 3 * 4096], 0).unwrap();
        st.remove("gone").unwrap();
        f.write_zeros(10, 2 * 4096).unwrap();
        let mut back = vec![0u8; 3 * 4096];
        f.read_exact_at(&mut back, 0).unwrap();
        for (i, &b) in back.iter().enumerate() {
            assert_eq!(
                b,
                if (10..10 + 2 * 4096).contains(&i) {
                    0
                } else {
                    7
                },
                "byte {i}"
            );
        }
    }

    #[test]
    fn read_ahead_reads_what_exists_skips_what_does_not_and_stops_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::new(dir.path()).unwrap();
        st.create("a")
            .unwrap()
            .write_all_at(&[7; 3 << 20], 0)
            .unwrap();
        let names = vec!["a".to_owned(), "missing".to_owned(), "a".to_owned()];
        let done = st
            .read_ahead(names.clone(), Arc::default())
            .expect("a thread");
        done.join().expect("no panic");
        let stop = Arc::new(AtomicBool::new(true));
        let stopped = st.read_ahead(names, stop).expect("a thread");
        stopped.join().expect("no panic");
        assert!(st.read_ahead(Vec::new(), Arc::default()).is_none());
        // Nothing was written: the file is as it was.
        let mut back = vec![0; 3 << 20];
        st.open("a").unwrap().read_exact_at(&mut back, 0).unwrap();
        assert!(back.iter().all(|&b| b == 7));
    }

    #[test]
    fn a_read_only_storage_reads_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let rw = FsStorage::new(dir.path()).unwrap();
        rw.create("a").unwrap().write_all_at(b"abc", 0).unwrap();
        let ro = FsStorage::read_only(dir.path()).unwrap();
        let f = ro.open("a").unwrap();
        let mut buf = [0u8; 3];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"abc");
        assert!(f.write_all_at(b"x", 0).is_err());
        assert!(f.set_len(0).is_err());
        for e in [
            ro.create("b").err(),
            ro.remove("a").err(),
            ro.sync_dir().err(),
            ro.lock().err(),
        ] {
            assert_eq!(e.map(|e| e.kind()), Some(io::ErrorKind::PermissionDenied));
        }
        assert_eq!(rw.list().unwrap(), vec!["a".to_string()]);
        assert!(FsStorage::read_only(dir.path().join("missing")).is_err());
    }

    #[test]
    fn new_creates_missing_directories_and_says_what_failed() {
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("a").join("b").join("store");
        let st = FsStorage::new(&nested).unwrap();
        assert!(nested.is_dir());
        st.create("x").unwrap().write_all_at(b"1", 0).unwrap();
        assert_eq!(st.list().unwrap(), vec!["x".to_owned()]);
        // An existing directory is used as it is.
        assert_eq!(FsStorage::new(&nested).unwrap().list().unwrap().len(), 1);
        // A file where a directory should be: an error, nothing created.
        std::fs::write(root.path().join("file"), b"").unwrap();
        let e = FsStorage::new(root.path().join("file").join("store")).unwrap_err();
        assert!(!root.path().join("file").is_dir(), "{e}");
        let dir = root.path().join("file").join("store");
        let e = crate::Store::open(&dir, crate::Config::default()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("creating the store directory"), "{msg}");
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
    }

    #[test]
    fn write_zeros_works_on_tmpfs() {
        // tmpfs takes O_DIRECT since Linux 6.6; before, it refused it.
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        zero_range_in(dir.path(), 100, 3 << 20);
    }
}

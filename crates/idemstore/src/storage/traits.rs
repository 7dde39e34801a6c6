//! The two traits all file I/O goes through, and the helpers built on them.
//! The contract an implementation keeps is in the module docs of `storage`.

use super::map::Mapping;
use std::any::Any;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// A directory of files.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Where this storage lives, for error messages.
    fn location(&self) -> PathBuf;

    /// Takes the directory's exclusive lock, or says who holds it.
    fn lock(&self) -> io::Result<LockOutcome>;

    /// Names of the files in the directory (not the lock file).
    fn list(&self) -> io::Result<Vec<String>>;

    /// Creates a new, empty file; fails if it exists.
    fn create(&self, name: &str) -> io::Result<Arc<dyn StorageFile>>;

    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>>;

    /// Removes a file.
    fn remove(&self, name: &str) -> io::Result<()>;

    /// Makes creations and removals so far durable (fsync of the directory).
    fn sync_dir(&self) -> io::Result<()>;

    /// Starts reading the files `names` ahead, in order, on a thread of its
    /// own, so that reading them soon after finds them in memory; stops
    /// early once `stop` is set. Best effort: errors are ignored. Returns
    /// the thread to join, or `None` where there is nothing to gain (the
    /// default: storage already in memory).
    fn read_ahead(
        &self,
        names: Vec<String>,
        stop: Arc<AtomicBool>,
    ) -> Option<std::thread::JoinHandle<()>> {
        let _ = (names, stop);
        None
    }
}

/// One file.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;

    /// True when the file holds no bytes.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Fills `buf` from `offset`; fails if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes the bytes written so far durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;

    /// Writes `len` zero bytes at `offset` (the writer keeps zeros ahead of
    /// a segment's end). Same contract as `write_all_at`; an implementation
    /// may bypass the page cache (the file system's one does, with
    /// `O_DIRECT`, where it can).
    fn write_zeros(&self, offset: u64, len: u64) -> io::Result<()> {
        write_zeros_through(self, offset, len)
    }

    /// A read-only memory map of the first `len` bytes, if this storage
    /// offers one (the file may be shorter yet; only written bytes are
    /// read). The default, `None`, makes readers use `read_exact_at`.
    fn map(&self, len: u64) -> Option<Mapping> {
        let _ = len;
        None
    }
}

/// The answer of [`Storage::lock`].
pub enum LockOutcome {
    /// The lock is ours until the guard is dropped.
    Acquired(Box<dyn Any + Send + Sync>),
    /// Someone else holds it; `holder` describes them if known (e.g. a pid).
    Held {
        /// A description of the holder, possibly empty.
        holder: String,
    },
}

impl fmt::Debug for LockOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockOutcome::Acquired(_) => f.write_str("Acquired"),
            LockOutcome::Held { holder } => write!(f, "Held({holder})"),
        }
    }
}

/// Zeros for [`StorageFile::write_zeros`], with room to start a 4 KiB
/// aligned slice of `ZERO_CHUNK` bytes (for `O_DIRECT`).
static ZEROS: [u8; ZERO_CHUNK + 4096] = [0; ZERO_CHUNK + 4096];
const ZERO_CHUNK: usize = 1 << 20;

/// `ZERO_CHUNK` zero bytes starting at a 4 KiB aligned address.
pub(super) fn aligned_zeros() -> &'static [u8] {
    let skip = ZEROS.as_ptr().align_offset(4096).min(4096);
    &ZEROS[skip..skip + ZERO_CHUNK]
}

/// Writes `len` zeros at `offset` with `write_all_at`, a chunk at a time.
pub(super) fn write_zeros_through<F: StorageFile + ?Sized>(
    file: &F,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(ZERO_CHUNK as u64);
        #[allow(clippy::cast_possible_truncation)] // n <= ZERO_CHUNK
        file.write_all_at(&ZEROS[..n as usize], offset + done)?;
        done += n;
    }
    Ok(())
}

/// Reads a whole file.
pub(crate) fn read_all(file: &dyn StorageFile) -> io::Result<Vec<u8>> {
    let len = usize::try_from(file.len()?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// Reads a whole file that another process may shorten meanwhile (a
/// running store trims the zeros it wrote ahead when it seals a segment):
/// a read cut short by the file's end reads the file again at its new
/// length, up to three times.
pub(crate) fn read_all_shrinking(file: &dyn StorageFile) -> io::Result<Vec<u8>> {
    let mut tries = 0;
    loop {
        match read_all(file) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && tries < 3 => tries += 1,
            other => return other,
        }
    }
}

/// Removes file `name`; one that is not there counts as removed.
pub(crate) fn remove_if_present(storage: &dyn Storage, name: &str) -> io::Result<()> {
    match storage.remove(name) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

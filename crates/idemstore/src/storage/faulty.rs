//! A storage wrapper that fails on command: an I/O error (EIO, or ENOSPC as a
//! full disk) on writes or on fsyncs, after a number of successful ones. For
//! tests of what the store does when the disk misbehaves.

use super::traits::{LockOutcome, Storage, StorageFile};
use parking_lot::Mutex;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Which calls a [`Fault`] hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOn {
    /// Data reaching files: `write_all_at`, `set_len`, `create`.
    Write,
    /// `sync_data` and `sync_dir`.
    Sync,
}

/// An injected failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The calls it hits.
    pub on: FaultOn,
    /// How many of those calls still succeed first.
    pub after: u64,
    /// The OS error number (e.g. 28, ENOSPC; 5, EIO).
    pub errno: i32,
}

/// ENOSPC: no space left on the device.
pub const ENOSPC: i32 = 28;
/// EIO: an I/O error.
pub const EIO: i32 = 5;

/// Shared control of a [`FaultyStorage`]: set and clear faults while a store
/// runs on it.
#[derive(Debug, Default)]
pub struct Faults {
    fault: Mutex<Option<Fault>>,
}

impl Faults {
    /// Starts failing as `fault` says (replacing any earlier fault).
    pub fn inject(&self, fault: Fault) {
        *self.fault.lock() = Some(fault);
    }

    /// Stops failing: the disk has space again.
    pub fn heal(&self) {
        *self.fault.lock() = None;
    }

    fn check(&self, on: FaultOn) -> io::Result<()> {
        let mut f = self.fault.lock();
        match &mut *f {
            Some(fault) if fault.on == on => {
                if fault.after == 0 {
                    Err(io::Error::from_raw_os_error(fault.errno))
                } else {
                    fault.after -= 1;
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }
}

/// Any [`Storage`] with injectable failures.
#[derive(Debug, Clone)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    faults: Arc<Faults>,
}

impl FaultyStorage {
    /// Wraps `inner`; control failures through [`FaultyStorage::faults`].
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        FaultyStorage {
            inner,
            faults: Arc::default(),
        }
    }

    /// The switch for this storage's failures.
    pub fn faults(&self) -> Arc<Faults> {
        self.faults.clone()
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn StorageFile>,
    faults: Arc<Faults>,
}

impl StorageFile for FaultyFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.faults.check(FaultOn::Write)?;
        self.inner.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.check(FaultOn::Write)?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.faults.check(FaultOn::Sync)?;
        self.inner.sync_data()
    }
    fn map(&self, len: u64) -> Option<super::map::Mapping> {
        self.inner.map(len)
    }
}

impl Storage for FaultyStorage {
    fn location(&self) -> PathBuf {
        self.inner.location()
    }
    fn lock(&self) -> io::Result<LockOutcome> {
        self.inner.lock()
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn create(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        self.faults.check(FaultOn::Write)?;
        Ok(Arc::new(FaultyFile {
            inner: self.inner.create(name)?,
            faults: self.faults.clone(),
        }))
    }
    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(FaultyFile {
            inner: self.inner.open(name)?,
            faults: self.faults.clone(),
        }))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.faults.check(FaultOn::Sync)?;
        self.inner.sync_dir()
    }
}

//! All file I/O of the engine goes through these two small traits, so that
//! tests can swap the disk for an in-memory one that simulates crashes
//! (`MemStorage`) or one that fails chosen calls (`FaultyStorage`); both
//! come with the `testing` cargo feature.
//!
//! Contract an implementation must keep (the engine's durability rests on it):
//! - after `sync_data` returns `Ok`, the file's bytes written so far survive a
//!   crash;
//! - after `sync_dir` returns `Ok`, the files created and removed so far stay
//!   created and removed after a crash;
//! - nothing else is promised to survive a crash.
//!
//! The traits and the helpers built on them are in `traits.rs`; one file per
//! implementation.

#[cfg(any(test, feature = "testing"))]
mod faulty;
mod fs;
mod map;
#[cfg(any(test, feature = "testing"))]
mod mem;
mod traits;

#[cfg(any(test, feature = "testing"))]
pub use faulty::{EIO, ENOSPC, Fault, FaultOn, Faults, FaultyStorage};
pub use fs::FsStorage;
pub use map::Mapping;
#[cfg(any(test, feature = "testing"))]
pub use mem::MemStorage;
pub use traits::{LockOutcome, Storage, StorageFile};
pub(crate) use traits::{read_all, read_all_shrinking, remove_if_present};

//! All file I/O of the engine goes through these two small traits, so that
//! tests can swap the disk for an in-memory one that simulates crashes
//! ([`MemStorage`]) or one that fails chosen calls ([`FaultyStorage`]).
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

mod faulty;
mod fs;
mod map;
mod mem;
mod traits;

pub use faulty::{EIO, ENOSPC, Fault, FaultOn, Faults, FaultyStorage};
pub use fs::FsStorage;
pub use map::Mapping;
pub use mem::MemStorage;
pub use traits::{LockOutcome, Storage, StorageFile};
pub(crate) use traits::{read_all, remove_if_present};

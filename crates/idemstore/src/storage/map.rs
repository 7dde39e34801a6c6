//! Read-only memory maps of segment files: a replay reads its record from
//! memory instead of through a `pread` system call, which on a virtual
//! machine costs more than the rest of the lookup.
//!
//! The one `unsafe` block of the engine is here; ARCHITECTURE.md ("unsafe")
//! gives the reason and the conditions.

#![allow(unsafe_code)]

use std::fmt;
use std::fs::File;

/// A read-only map of the first bytes of a file.
pub struct Mapping(memmap2::Mmap);

impl Mapping {
    /// The mapped bytes. Only the prefix the store knows to be written (a
    /// segment's `len`) may be read: pages past the file's end fault.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mapping({} bytes)", self.0.len())
    }
}

/// Maps the first `len` bytes of `file` (which may be longer than the file
/// is now: a segment is mapped at its maximum size when it is created, and
/// the writer's appends become visible through the map). `None` if the map
/// cannot be made; readers then use `pread`.
pub(crate) fn map(file: &File, len: u64) -> Option<Mapping> {
    let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
    // SAFETY: a mapped file must not be truncated or rewritten under the map
    // while it is read. The store only reads bytes below a segment's `len`,
    // which were written before `len` was published (Release/Acquire) and
    // are never written again (segments are append-only; a failed write only
    // touches bytes at or past `len`); it truncates files only during `open`,
    // before they are mapped, and (the writer trimming the zeros it wrote
    // ahead) never below `len`. The directory is `flock`ed by the open store,
    // so no other idemstore process writes it. A foreign program truncating
    // a segment of an open store would make a read fault (SIGBUS): the
    // directory belongs to the store while it is open (README, "Files").
    let m = unsafe { memmap2::MmapOptions::new().len(len).map(file) }.ok()?;
    Some(Mapping(m))
}

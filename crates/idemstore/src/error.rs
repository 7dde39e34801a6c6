//! The one error type of the crate. Every message says what happened and what
//! to do about it.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the store.
///
/// The type is `Clone` (I/O causes are shared behind an `Arc`) because one
/// failed group commit has to be reported to every caller in the batch.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The idempotency key was rejected before anything was stored.
    #[error("invalid idempotency key: {reason}; send a key of {min}..={max} bytes")]
    InvalidKey {
        /// Why the key was refused.
        reason: String,
        /// Smallest accepted length in bytes.
        min: usize,
        /// Largest accepted length in bytes.
        max: usize,
    },

    /// The encoded record would exceed the configured maximum.
    #[error(
        "record of {size} bytes exceeds the limit of {max} bytes; \
         store a smaller response or raise Config::max_record_bytes"
    )]
    RecordTooLarge {
        /// Encoded size of the refused record.
        size: usize,
        /// The configured limit.
        max: usize,
    },

    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Another `Store` (in this or another process) has the directory open.
    #[error(
        "the store directory {path} is locked by another open store{holder}; \
         close the other store (or stop that process) before opening it again"
    )]
    Locked {
        /// The directory that is locked.
        path: PathBuf,
        /// A hint about the holder, e.g. " (pid 1234)", or empty.
        holder: String,
    },

    /// An operating-system I/O call failed.
    #[error("I/O error while {op} {path}: {source}; {advice}")]
    Io {
        /// What the store was doing, e.g. "writing".
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
        /// What to do about it.
        advice: &'static str,
    },

    /// A write or fsync failed earlier (or a background thread died), so the
    /// store refuses further writes: what is on disk can no longer be trusted
    /// to match what was acknowledged in memory.
    #[error(
        "the store stopped accepting writes after an earlier failure ({cause}); \
         close it and open the directory again: recovery keeps every record that reached the disk"
    )]
    Poisoned {
        /// The failure that poisoned the store.
        cause: String,
    },

    /// The store was closed.
    #[error("the store is closed; open it again to continue")]
    Closed,

    /// A completion could not be written yet (a full disk, an I/O error on
    /// write). The store keeps the record in memory and writes it again
    /// every [`Config::write_retry_interval`](crate::Config::write_retry_interval)
    /// until it succeeds or the store closes; the key stays reserved
    /// meanwhile (`begin` answers [`InFlight`](crate::Begin::InFlight)), so
    /// the request never runs twice, and retries replay the response once it
    /// is written. Answer the caller "try again later" (HTTP 503).
    #[error(
        "the response is not stored yet ({cause}); the store keeps it and writes it again \
         by itself, and the key stays reserved until then: tell the client to retry later"
    )]
    Deferred {
        /// The write failure.
        cause: String,
    },

    /// The reservation's lease ran out and a later request took the key over,
    /// or the reservation was already finished. Nothing was written.
    #[error(
        "reservation for this key is no longer held ({reason}); \
         the response was not stored: do not send it as the idempotent result"
    )]
    Fenced {
        /// Why the reservation is no longer valid.
        reason: &'static str,
    },

    /// Two different (tenant, key) pairs hashed to the same 128-bit index key.
    /// With blake3 this does not happen in practice; the store refuses rather
    /// than risk serving one scope's record to another.
    #[error(
        "index digest collision between two different (tenant, key) pairs; \
         nothing was served; use a different idempotency key"
    )]
    DigestCollision,

    /// The directory holds data written by a newer idemstore format than this
    /// build understands. Nothing was changed.
    #[error(
        "{path} uses {what} version {found}, but this build supports up to {supported}; \
         open the store with the idemstore version that wrote it (or newer)"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// "segment format" or "record".
        what: &'static str,
        /// Version found.
        found: u16,
        /// Newest version this build reads.
        supported: u16,
    },

    /// The store was opened with [`Store::open_read_only`](crate::Store::open_read_only),
    /// which cannot write: nothing was changed.
    #[error(
        "the store in {path} was opened read-only, which cannot reserve, complete, release, \
         purge, flush or compact; open it with Store::open (which takes the directory's lock) \
         to change it"
    )]
    ReadOnly {
        /// The store directory.
        path: PathBuf,
    },

    /// A record read back from disk failed its checksum or did not decode.
    #[error(
        "corrupt record in {path} at offset {offset}: {reason}; \
         run a verify and restore the file from a backup if the damage persists"
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the record's frame.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
        advice: &'static str,
    ) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
            advice,
        }
    }

    /// True when the error is caused by the store or its disk (I/O, poisoned,
    /// closed, corrupt) rather than by the request; an HTTP layer answers 503
    /// for these.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Io { .. }
                | Error::Deferred { .. }
                | Error::Poisoned { .. }
                | Error::Closed
                | Error::Corrupt { .. }
                | Error::Locked { .. }
        )
    }
}

/// Advice strings shared by I/O errors.
pub(crate) mod advice {
    pub(crate) const WRITE: &str = "free space on the disk or fix the store directory's permissions; the store writes again by itself once it can";
    pub(crate) const FSYNC: &str = "the store stopped taking writes, since the kernel may have dropped what it held: \
         close the store and open the directory again (recovery keeps every record that reached the disk)";
    pub(crate) const READ: &str =
        "check the disk and the permissions of the store directory; the record was not served";
    pub(crate) const OPEN: &str = "check that the directory exists, is writable by this process, and is on a local filesystem";
    pub(crate) const OPEN_READ_ONLY: &str =
        "check that the directory exists and is readable by this process";
}

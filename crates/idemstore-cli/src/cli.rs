//! The command line: one subcommand per operation, on a store directory.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// An operator's tool for an idemstore directory.
#[derive(Parser, Debug)]
#[command(name = "idemctl", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Live, pending and completed keys, buckets with their time ranges,
    /// bytes on disk, the oldest and newest completion, and what opening
    /// the store found (and, unless --read-only, repaired).
    Stats(Read),
    /// Reads every record and hint file and checks them (checksums,
    /// decoding, expiry inside the bucket, hints against segments, each
    /// sequence number used once). Exit 0 when clean, 1 with each damaged
    /// file and offset named. Never needs the lock.
    Verify(Read),
    /// Every reservation whose holder never finished it (the newest record
    /// of its key is the reservation): after a crash, the requests whose
    /// handler may have run with no response stored.
    InFlight(Read),
    /// One key's state and, once completed, its status, headers and body
    /// (as text when UTF-8, else base64). Exit 1 when the store holds
    /// nothing for it.
    Get(KeyRead),
    /// Frees a reserved key whose handler will never finish, so a retry
    /// runs at once instead of after its lease. Only once the first
    /// execution is known to have had no effect: the retry runs it again.
    Release(KeyWrite),
    /// Deletes a key's completed record before its expiry: the next
    /// request with the key runs again. Written as a record of its own,
    /// durable before this returns.
    Purge(KeyWrite),
    /// Every live record as JSON lines (one object per key), for audits.
    Export(Read),
    /// Deletes the segment files whose bucket ended, and forgets abandoned
    /// reservations whose lease ended.
    Compact(Write),
}

/// Where the store is, and how to open it to read.
#[derive(Args, Debug)]
pub(crate) struct Read {
    /// The store directory (the service's --data).
    pub(crate) dir: PathBuf,
    /// Open without the directory's lock and change nothing: safe beside
    /// the running service, and shows what its files held at that moment.
    #[arg(long)]
    pub(crate) read_only: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The store, and the key to read.
#[derive(Args, Debug)]
pub(crate) struct KeyRead {
    #[command(flatten)]
    pub(crate) read: Read,
    #[command(flatten)]
    pub(crate) key: KeyArgs,
}

/// Which key, of which tenant.
#[derive(Args, Debug)]
pub(crate) struct KeyArgs {
    /// The tenant as the service passes it (e.g. the X-Api-Key value).
    #[arg(
        long,
        conflicts_with = "tenant_digest",
        required_unless_present = "tenant_digest"
    )]
    pub(crate) tenant: Option<String>,
    /// The tenant's digest, as `in-flight` and `export` print it (64 hex
    /// digits), when the tenant itself is not known.
    #[arg(long, value_name = "HEX")]
    pub(crate) tenant_digest: Option<String>,
    /// The idempotency key, as the client sent it.
    #[arg(long)]
    pub(crate) key: String,
}

/// The store, to change it.
#[derive(Args, Debug)]
pub(crate) struct Write {
    /// The store directory (the service's --data). It must not be open
    /// elsewhere: stop the service first.
    pub(crate) dir: PathBuf,
    /// Refused: this command changes the store (accepted only to say so).
    #[arg(long, hide = true)]
    pub(crate) read_only: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The store to change, and the key.
#[derive(Args, Debug)]
pub(crate) struct KeyWrite {
    #[command(flatten)]
    pub(crate) write: Write,
    #[command(flatten)]
    pub(crate) key: KeyArgs,
}

//! Opening the store directory for a command, and what to tell the
//! operator when that fails.

use idemstore::{Config, Error, Store};
use std::path::Path;
use std::time::Duration;

/// The configuration idemctl opens stores with: any key the service could
/// have accepted, and the service's retention for the records it writes.
/// Bucket widths need not match the service's: each segment names its own.
pub(crate) fn config(retention: Duration) -> Config {
    Config::default()
        .key_len(1..=usize::from(u16::MAX))
        .retention(retention)
}

/// Opens `dir`: with its lock (the store then repairs what a crash left),
/// or `read_only`, beside whatever has it open.
pub(crate) fn open(dir: &Path, read_only: bool, retention: Duration) -> Result<Store, String> {
    if !dir.is_dir() {
        return Err(format!(
            "{} is not a directory; pass the store directory (the service's --data)",
            dir.display()
        ));
    }
    let config = config(retention);
    let opened = if read_only {
        Store::open_read_only(dir, config)
    } else {
        Store::open(dir, config)
    };
    opened.map_err(|e| explain(&e, read_only))
}

/// The error, with what to do about it in idemctl's terms.
pub(crate) fn explain(e: &Error, read_only: bool) -> String {
    match e {
        Error::Locked { path, holder } if !read_only => format!(
            "the store in {} is open in a running process{holder}. Stop it to change the \
             store, or pass --read-only to read what its files hold now without the lock \
             (safe while it runs)",
            path.display()
        ),
        other => other.to_string(),
    }
}

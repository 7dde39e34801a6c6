//! Opening the store directory for a command, and what to tell the
//! operator when that fails.

use idemstore::{Config, Error, Store};
use std::path::Path;

/// The configuration idemctl opens stores with: any key the service could
/// have accepted. Nothing else of the service's matters: each segment names
/// its own bucket, a release goes where the reservation's records are, a
/// purge where the completion is, and the grace for expired keys (which
/// decides what recovery may delete) is the one the directory keeps.
pub(crate) fn config() -> Config {
    Config::default().key_len(1..=usize::from(u16::MAX))
}

/// Files only a store directory holds.
fn is_store_file(name: &str) -> bool {
    ["LOCK", "SEQFLOOR", "LAST-OPEN"].contains(&name)
        || name.ends_with(".seg")
        || name.ends_with(".hint")
}

/// `Ok` if `dir` is a store directory; what to do if not (a mistyped path
/// must not read as an empty store, nor become one).
pub(crate) fn check_store_dir(dir: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "{}: {e}; pass the store directory (the service's --data)",
            dir.display()
        )
    })?;
    let any = entries
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_str().is_some_and(is_store_file));
    if any {
        Ok(())
    } else {
        Err(format!(
            "{} holds no idemstore files (no LOCK, SEQFLOOR or *.seg); pass the store \
             directory (the service's --data)",
            dir.display()
        ))
    }
}

/// Opens the store directory `dir`: with its lock (the store then repairs
/// what a crash left), or `read_only`, beside whatever has it open.
pub(crate) fn open(dir: &Path, read_only: bool) -> Result<Store, String> {
    check_store_dir(dir)?;
    let config = config();
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

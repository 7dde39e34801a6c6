//! The sequence floor: a durable lower bound for the next sequence number
//! (layout: `format/floor.rs`).
//!
//! Sequence numbers, fencing tokens among them, come from one counter that
//! `open` starts above the highest sequence number on disk. Expiry deletes
//! segments whole, the newest records included, so the disk alone can forget
//! how far the counter had gone. The floor remembers it.
//!
//! Invariant: the durable floor is above every sequence number held by a
//! segment that was deleted, and, after a clean close, above every sequence
//! number the store handed out. Kept by raising it (a new file, fsynced, and
//! the directory fsynced) before a compaction pass deletes segments (to the
//! counter's value), before `open` removes expired segments (above their
//! highest sequence number), and at close (to the counter's value). `open`
//! starts the counter at the floor or above the disk's highest sequence
//! number, whichever is higher.

use crate::error::{Error, Result, advice};
use crate::format::floor::{self, Decoded};
use crate::storage::{Storage, read_all};
use std::io;

/// The durable floor and the files that hold it.
#[derive(Debug, Default)]
pub(crate) struct Floor {
    value: u64,
    /// Every floor file in the directory (damaged ones too); all but the
    /// newest are removed by the next `raise`.
    files: Vec<String>,
}

impl Floor {
    /// Reads the floor files among `listing`: the highest intact floor (0
    /// if there is none). A damaged one is skipped: a crash while a floor
    /// is written leaves the previous file intact, and nothing was deleted
    /// on the strength of the new one yet.
    pub(crate) fn load(storage: &dyn Storage, listing: &[String]) -> Result<Floor> {
        let mut f = Floor::default();
        for name in listing {
            let Some(claimed) = floor::parse_file_name(name) else {
                continue;
            };
            f.files.push(name.clone());
            let path = storage.location().join(name);
            let io = |e| Error::io("reading the sequence floor", path.clone(), e, advice::OPEN);
            let bytes = read_all(storage.open(name).map_err(io)?.as_ref()).map_err(io)?;
            match floor::decode(&bytes) {
                Ok(Decoded::Floor(v)) if v == claimed => f.value = f.value.max(v),
                Ok(Decoded::Newer(found)) => {
                    return Err(Error::UnsupportedVersion {
                        path,
                        what: "sequence floor",
                        found,
                        supported: floor::VERSION,
                    });
                }
                _ => {}
            }
        }
        Ok(f)
    }

    /// The durable floor: every sequence number to come must be at least this.
    pub(crate) fn value(&self) -> u64 {
        self.value
    }

    /// Makes the floor at least `to`, durably, before it returns: a new file
    /// is written and fsynced and the directory fsynced; then the older
    /// files are removed (a crash that brings one back is harmless: the
    /// highest floor wins). On an error the durable floor is unchanged.
    pub(crate) fn raise(&mut self, storage: &dyn Storage, to: u64) -> io::Result<()> {
        if to <= self.value {
            return Ok(());
        }
        let name = floor::file_name(to);
        // Left by an earlier attempt or a crash: never trusted, replaced.
        match storage.remove(&name) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let written = storage.create(&name).and_then(|file| {
            file.write_all_at(&floor::encode(to), 0)?;
            file.sync_data()?;
            storage.sync_dir()
        });
        if let Err(e) = written {
            let _ = storage.remove(&name);
            return Err(e);
        }
        self.value = to;
        let old = std::mem::take(&mut self.files);
        self.files.push(name.clone());
        for n in old.into_iter().filter(|n| *n != name) {
            if storage.remove(&n).is_err() {
                self.files.push(n);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn the_highest_intact_floor_wins_and_a_raise_replaces_the_files() {
        let st = MemStorage::new();
        st.put_file(&floor::file_name(7), floor::encode(7).to_vec());
        st.put_file(&floor::file_name(5), floor::encode(5).to_vec());
        // Torn, and a name that does not match its content: both skipped.
        st.put_file(&floor::file_name(90), floor::encode(90)[..10].to_vec());
        st.put_file(&floor::file_name(80), floor::encode(8).to_vec());
        let mut f = Floor::load(&st, &st.list().unwrap()).unwrap();
        assert_eq!(f.value(), 7);
        f.raise(&st, 6).unwrap();
        assert_eq!(f.value(), 7, "a floor never goes down");
        assert_eq!(st.list().unwrap().len(), 4, "and a no-op writes nothing");
        f.raise(&st, 100).unwrap();
        assert_eq!(st.list().unwrap(), vec![floor::file_name(100)]);
        // Durable: a power cut right after keeps it.
        let after = st.crash(0);
        assert_eq!(
            Floor::load(&after, &after.list().unwrap()).unwrap().value(),
            100
        );
    }
}

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
//! number the store handed out. Kept by raising it (one slot of the floor
//! file overwritten and fsynced) before a compaction pass deletes segments
//! (to the counter's value), before `open` removes expired segments (above
//! their highest sequence number), and at close (to the counter's value).
//! `open` starts the counter at the floor or above the disk's highest
//! sequence number, whichever is higher.
//!
//! The file is created once, by the first `open` that can, and then only
//! overwritten in place: raising the floor needs no new disk space, so a
//! full disk does not keep a compaction pass from deleting expired segments.
//!
//! The same slots keep the grace for expired keys, which decides what may be
//! deleted (recovery and the compactor keep ended buckets within it). Every
//! slot written carries the grace; changing it raises the floor by one, so
//! the slot with the highest floor always holds the current grace.

use crate::error::{Error, Result, advice};
use crate::format::floor::{self, Decoded};
use crate::storage::{Storage, StorageFile, remove_if_present};
use std::io;
use std::sync::Arc;

/// The durable floor and the file that holds it.
#[derive(Debug, Default)]
pub(crate) struct Floor {
    value: u64,
    /// The floor file, once it exists.
    file: Option<Arc<dyn StorageFile>>,
    /// The slot holding `value` (the next raise overwrites the other one).
    current: usize,
    /// The grace for expired keys that slot holds, in milliseconds (0: none).
    grace_ms: u64,
}

impl Floor {
    /// Reads the floor file if there is one: the highest intact slot (0 if
    /// none). A damaged slot is skipped: a crash while a slot is written
    /// leaves the other intact, and nothing was deleted on the strength of
    /// the new one yet.
    pub(crate) fn load(storage: &dyn Storage) -> Result<Floor> {
        let mut f = Floor::default();
        let path = storage.location().join(floor::FILE_NAME);
        let io = |e| Error::io("reading the sequence floor", path.clone(), e, advice::OPEN);
        let file = match storage.open(floor::FILE_NAME) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(f),
            Err(e) => return Err(io(e)),
        };
        let len = file.len().map_err(io)?;
        for (i, at) in floor::SLOTS.into_iter().enumerate() {
            let mut slot = [0u8; floor::LEN];
            if at + floor::LEN as u64 > len {
                continue;
            }
            file.read_exact_at(&mut slot, at).map_err(io)?;
            match floor::decode(&slot) {
                Ok(Decoded::Floor { floor, grace_ms }) if floor >= f.value => {
                    f.value = floor;
                    f.current = i;
                    f.grace_ms = grace_ms;
                }
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
        f.file = Some(file);
        Ok(f)
    }

    /// The durable floor: every sequence number to come must be at least this.
    pub(crate) fn value(&self) -> u64 {
        self.value
    }

    /// The durable grace for expired keys, in milliseconds (0: none).
    pub(crate) fn grace_ms(&self) -> u64 {
        self.grace_ms
    }

    /// Makes the durable grace `grace_ms` before it returns, raising the
    /// floor by one (creating the file if there is none). On an error the
    /// durable grace is unchanged, or already `grace_ms`.
    pub(crate) fn set_grace(&mut self, storage: &dyn Storage, grace_ms: u64) -> io::Result<()> {
        if grace_ms == self.grace_ms {
            return Ok(());
        }
        let old = self.grace_ms;
        self.grace_ms = grace_ms;
        let to = self.value.saturating_add(1);
        let raised = self.raise(storage, to);
        if raised.is_err() {
            self.grace_ms = old;
        }
        raised
    }

    /// Creates the floor file if there is none yet (the only time the floor
    /// needs disk space), holding the current floor; the file and the
    /// directory are fsynced before it returns.
    pub(crate) fn create(&mut self, storage: &dyn Storage) -> io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        // A file cut short by a crash during its creation: it never held a
        // floor that anything relied on.
        remove_if_present(storage, floor::FILE_NAME)?;
        let file = storage.create(floor::FILE_NAME)?;
        let mut bytes = vec![0u8; usize::try_from(floor::FILE_LEN).unwrap_or(0)];
        bytes[..floor::LEN].copy_from_slice(&floor::encode(self.value, self.grace_ms));
        let written = file
            .write_all_at(&bytes, 0)
            .and_then(|()| file.sync_data())
            .and_then(|()| storage.sync_dir());
        if let Err(e) = written {
            let _ = storage.remove(floor::FILE_NAME);
            return Err(e);
        }
        self.file = Some(file);
        self.current = 0;
        Ok(())
    }

    /// Makes the floor at least `to`, durably, before it returns: the slot
    /// not holding the current floor is overwritten and the file fsynced
    /// (the file is created first if there is none). On an error the
    /// durable floor is unchanged, or already `to`.
    pub(crate) fn raise(&mut self, storage: &dyn Storage, to: u64) -> io::Result<()> {
        if to <= self.value {
            return Ok(());
        }
        if self.file.is_none() {
            let old = self.value;
            self.value = to;
            if let Err(e) = self.create(storage) {
                self.value = old;
                return Err(e);
            }
            return Ok(());
        }
        let Some(file) = &self.file else {
            return Ok(());
        };
        let next = 1 - self.current;
        file.write_all_at(&floor::encode(to, self.grace_ms), floor::SLOTS[next])?;
        file.sync_data()?;
        self.value = to;
        self.current = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn slots(st: &MemStorage) -> Vec<u8> {
        st.file_bytes(floor::FILE_NAME).unwrap()
    }

    #[test]
    fn the_highest_intact_slot_wins_and_a_raise_overwrites_the_other() {
        let st = MemStorage::new();
        let mut f = Floor::load(&st).unwrap();
        assert_eq!(f.value(), 0);
        f.create(&st).unwrap();
        f.raise(&st, 7).unwrap();
        f.raise(&st, 6).unwrap();
        assert_eq!(f.value(), 7, "a floor never goes down");
        f.raise(&st, 9).unwrap();
        let b = slots(&st);
        let at = |i: usize| usize::try_from(floor::SLOTS[i]).unwrap();
        // Slot 0 held 0, then 9; slot 1 holds 7.
        assert_eq!(b[at(0)..at(0) + floor::LEN], floor::encode(9, 0));
        assert_eq!(b[at(1)..at(1) + floor::LEN], floor::encode(7, 0));
        // Durable: a power cut right after keeps it.
        assert_eq!(Floor::load(&st.crash(0)).unwrap().value(), 9);
    }

    #[test]
    fn a_torn_raise_leaves_the_floor_it_replaced() {
        use crate::storage::{EIO, Fault, FaultOn, FaultyStorage};
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let mem = MemStorage::new();
            let st = FaultyStorage::new(Arc::new(mem.clone()));
            let mut f = Floor::load(&st).unwrap();
            f.raise(&st, 5).unwrap();
            f.raise(&st, 6).unwrap();
            // The next raise's write happens; its fsync fails; the power goes.
            st.faults().inject(Fault {
                on: FaultOn::Sync,
                after: 0,
                errno: EIO,
            });
            assert!(f.raise(&st, 8).is_err());
            let after = Floor::load(&mem.crash(seed)).unwrap().value();
            assert!(after == 6 || after == 8, "{after}");
            seen.insert(after);
        }
        assert_eq!(seen.len(), 2, "both outcomes occur: {seen:?}");
    }

    #[test]
    fn once_the_file_exists_a_raise_creates_nothing_and_grows_nothing() {
        let st = MemStorage::new();
        let mut f = Floor::load(&st).unwrap();
        f.raise(&st, 1).unwrap();
        for to in 2..50 {
            f.raise(&st, to).unwrap();
        }
        assert_eq!(st.list().unwrap(), vec![floor::FILE_NAME.to_owned()]);
        assert_eq!(slots(&st).len() as u64, floor::FILE_LEN);
        assert_eq!(Floor::load(&st).unwrap().value(), 49);
    }

    #[test]
    fn the_grace_survives_raises_and_power_cuts_and_a_torn_change_keeps_one_of_the_two() {
        use crate::storage::{EIO, Fault, FaultOn, FaultyStorage};
        let st = MemStorage::new();
        let mut f = Floor::load(&st).unwrap();
        f.set_grace(&st, 5000).unwrap();
        f.raise(&st, 40).unwrap();
        f.raise(&st, 41).unwrap();
        let st = st.crash(0);
        let mut f = Floor::load(&st).unwrap();
        assert_eq!((f.value(), f.grace_ms()), (41, 5000));
        f.set_grace(&st, 0).unwrap();
        let back = Floor::load(&st.crash(1)).unwrap();
        assert_eq!((back.value(), back.grace_ms()), (42, 0));
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let mem = MemStorage::new();
            let st = FaultyStorage::new(Arc::new(mem.clone()));
            let mut f = Floor::load(&st).unwrap();
            f.set_grace(&st, 7000).unwrap();
            f.raise(&st, 9).unwrap();
            st.faults().inject(Fault {
                on: FaultOn::Sync,
                after: 0,
                errno: EIO,
            });
            assert!(f.set_grace(&st, 60_000).is_err());
            assert_eq!(f.grace_ms(), 7000, "a failed change leaves the grace");
            let after = Floor::load(&mem.crash(seed)).unwrap();
            assert!(
                matches!((after.value(), after.grace_ms()), (9, 7000) | (10, 60_000)),
                "{} {}",
                after.value(),
                after.grace_ms()
            );
            seen.insert(after.grace_ms());
        }
        assert_eq!(seen.len(), 2, "both outcomes occur: {seen:?}");
    }
}

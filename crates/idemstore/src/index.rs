//! The in-memory index: where each live key's newest record is.
//!
//! Sharded by the high bits of the index key; each shard is one mutex over two
//! maps, both keyed by 102 of the index key's 128 bits (`SlotKey`). Completed
//! keys cost one 20-byte slot (12-byte key + 8-byte location)
//! in an open-addressing table; reservations in flight are few and keep their
//! whole state in memory.
//!
//! Invariants (each shard):
//! - a key is in `pending` iff its newest record is a reservation that has
//!   not been completed, aborted or taken over in this process (or was
//!   recovered from disk with its lease still running);
//! - a `completed` slot points at a record that was acknowledged as written
//!   (in `Sync` mode: fsynced) with this key's tenant digest and key;
//! - a slot may outlive its record's expiry until the compactor drops the
//!   bucket; readers check expiry themselves.

use crate::clock::Timestamp;
use crate::scope::{Fingerprint, IndexKey, TenantDigest};
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Number of shards; a power of two.
pub(crate) const SHARDS: usize = 64;

/// The shard of a key: its top six bits.
pub(crate) fn shard_of(key: &IndexKey) -> usize {
    usize::try_from(key.hi >> 58).unwrap_or(0) & (SHARDS - 1)
}

/// Where a record is: segment id and byte offset of its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) seg: u32,
    pub(crate) off: u32,
}

/// Who is working on a pending key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    /// A live [`Reservation`](crate::Reservation) in this process.
    Held,
    /// The holder called `complete`; the record is on its way to disk. Cannot
    /// be taken over or aborted.
    Completing,
    /// Recovered from disk: its holder died with an earlier process.
    Orphan,
}

/// A reservation in flight.
#[derive(Clone, Debug)]
pub(crate) struct PendingEntry {
    pub(crate) token: u64,
    pub(crate) tenant: TenantDigest,
    pub(crate) key: Box<[u8]>,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) started_at: Timestamp,
    pub(crate) lease_end: Timestamp,
    /// The instant whose bucket holds its records (with `lease_end`, if
    /// later): where a record superseding them must go too.
    pub(crate) kept_until: Timestamp,
    pub(crate) holder: Holder,
}

impl PendingEntry {
    pub(crate) fn is_for(&self, tenant: &TenantDigest, key: &[u8]) -> bool {
        self.tenant == *tenant && *self.key == *key
    }

    /// True when a new request may take the key over at `now`.
    pub(crate) fn can_take_over(&self, now: Timestamp) -> bool {
        self.holder != Holder::Completing && now >= self.lease_end
    }
}

/// A hasher for keys that are already uniform digests: passes the word through.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(crate) type Build = BuildHasherDefault<PassThrough>;

/// The key of a completed slot: 96 of the index key's 128 bits (the low 32
/// of `hi` and all of `lo`; the shard adds the top 6 bits of `hi`), four-byte
/// aligned so that a slot is 20 bytes rather than 24. Two live keys agreeing
/// on those 102 bits (probability about n^2 / 2^103: 1e-17 at 10M keys)
/// would share a slot: `begin` compares the record's stored tenant digest
/// and key with the request's and answers `DigestCollision`, never another
/// key's response.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct SlotKey([u32; 3]);

impl From<&IndexKey> for SlotKey {
    fn from(k: &IndexKey) -> Self {
        // Truncations intended: the words are the key's bits.
        #[allow(clippy::cast_possible_truncation)]
        SlotKey([k.hi as u32, k.lo as u32, (k.lo >> 32) as u32])
    }
}

impl std::hash::Hash for SlotKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // `lo`, as `IndexKey` hashes: already a uniform digest.
        state.write_u64(u64::from(self.0[1]) | (u64::from(self.0[2]) << 32));
    }
}

/// One shard's maps.
#[derive(Default)]
pub(crate) struct Shard {
    completed: HashMap<SlotKey, Slot, Build>,
    pub(crate) pending: HashMap<SlotKey, PendingEntry, Build>,
}

impl Shard {
    /// The completed slot of `key`, if any.
    pub(crate) fn completed(&self, key: &IndexKey) -> Option<Slot> {
        self.completed.get(&SlotKey::from(key)).copied()
    }

    pub(crate) fn set_completed(&mut self, key: &IndexKey, slot: Slot) {
        self.completed.insert(SlotKey::from(key), slot);
    }

    pub(crate) fn remove_completed(&mut self, key: &IndexKey) {
        self.completed.remove(&SlotKey::from(key));
    }

    /// Sets the completed slot of slot key `k`; returns the one it replaced.
    pub(crate) fn insert_completed(&mut self, k: SlotKey, slot: Slot) -> Option<Slot> {
        self.completed.insert(k, slot)
    }

    /// Removes and returns the completed slot of slot key `k`.
    pub(crate) fn take_completed(&mut self, k: &SlotKey) -> Option<Slot> {
        self.completed.remove(k)
    }

    /// Completed slots held.
    pub(crate) fn completed_len(&self) -> usize {
        self.completed.len()
    }

    /// Gives back room for completed slots that is not needed (the table
    /// is reallocated only if it can get smaller).
    pub(crate) fn shrink_completed(&mut self) {
        self.completed.shrink_to_fit();
    }

    /// Room for `n` more completed slots without a resize.
    pub(crate) fn reserve_completed(&mut self, n: usize) {
        self.completed.reserve(n);
    }

    /// Every completed slot, in no order.
    pub(crate) fn completed_slots(&self) -> Vec<Slot> {
        self.completed.values().copied().collect()
    }

    /// The completed slots `want` says yes to, in no order.
    pub(crate) fn completed_slots_where(&self, mut want: impl FnMut(&Slot) -> bool) -> Vec<Slot> {
        self.completed
            .values()
            .filter(|s| want(s))
            .copied()
            .collect()
    }

    /// Drops the completed slots `drop` says yes to; returns how many.
    pub(crate) fn drop_completed(&mut self, mut drop: impl FnMut(&Slot) -> bool) -> usize {
        let before = self.completed.len();
        self.completed.retain(|_, s| !drop(s));
        before - self.completed.len()
    }
}

/// All shards.
pub(crate) struct Index {
    shards: Box<[Mutex<Shard>]>,
}

impl Index {
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Index {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    /// Builds an index from recovered shards: `shards[i]` must hold exactly
    /// the keys with `shard_of(key) == i`. Missing shards are empty.
    pub(crate) fn from_shards(shards: Vec<Shard>) -> Self {
        let mut shards: Vec<Mutex<Shard>> = shards.into_iter().map(Mutex::new).collect();
        shards.resize_with(SHARDS, || Mutex::new(Shard::default()));
        Index {
            shards: shards.into_boxed_slice(),
        }
    }

    pub(crate) fn lock(&self, key: &IndexKey) -> MutexGuard<'_, Shard> {
        // High bits pick the shard; the map hashes the low word.
        self.shards[shard_of(key)].lock()
    }

    /// Shard number `i` (below [`SHARDS`]), locked.
    pub(crate) fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i].lock()
    }

    /// Runs `f` on every shard in turn, one lock at a time.
    pub(crate) fn for_each_shard(&self, mut f: impl FnMut(&mut Shard)) {
        for s in self.shards.iter() {
            f(&mut s.lock());
        }
    }

    /// (completed slots, pending entries, estimated heap bytes).
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        let (mut c, mut p, mut bytes) = (0u64, 0u64, 0u64);
        self.for_each_shard(|s| {
            c += s.completed.len() as u64;
            p += s.pending.len() as u64;
            bytes += table_bytes(
                s.completed.capacity(),
                std::mem::size_of::<(SlotKey, Slot)>(),
            );
            bytes += table_bytes(
                s.pending.capacity(),
                std::mem::size_of::<(SlotKey, PendingEntry)>(),
            );
            bytes += s.pending.values().map(|e| e.key.len() as u64).sum::<u64>();
        });
        (c, p, bytes)
    }
}

/// Heap bytes of a SwissTable holding `capacity` items of `item` bytes: the
/// bucket count is the next power of two of capacity * 8/7, plus one control
/// byte per bucket and a group of 16 spare control bytes.
fn table_bytes(capacity: usize, item: usize) -> u64 {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two().max(4);
    (buckets * (item + 1) + 16) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_is_compact() {
        // 12-byte key + 8-byte slot, 4-byte aligned: 20 bytes per entry.
        assert_eq!(std::mem::size_of::<(SlotKey, Slot)>(), 20);
    }

    #[test]
    fn shards_spread_keys_and_lookups_find_them() {
        let idx = Index::new();
        for i in 0..1000u64 {
            let k = IndexKey {
                hi: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                lo: i,
            };
            idx.lock(&k).set_completed(
                &k,
                Slot {
                    seg: 1,
                    off: i as u32,
                },
            );
        }
        let mut non_empty = 0;
        idx.for_each_shard(|s| non_empty += usize::from(!s.completed.is_empty()));
        assert!(non_empty > SHARDS / 2, "only {non_empty} shards used");
        let k = IndexKey {
            hi: 7u64.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            lo: 7,
        };
        assert_eq!(idx.lock(&k).completed(&k), Some(Slot { seg: 1, off: 7 }));
        assert_eq!(idx.counts().0, 1000);
    }

    #[test]
    fn take_over_needs_an_ended_lease_and_no_completion_in_progress() {
        let mut e = PendingEntry {
            token: 1,
            tenant: TenantDigest([0; 32]),
            key: Box::from(&b"k"[..]),
            fingerprint: Fingerprint::default(),
            started_at: Timestamp(0),
            lease_end: Timestamp(100),
            kept_until: Timestamp(1000),
            holder: Holder::Held,
        };
        assert!(!e.can_take_over(Timestamp(99)));
        assert!(e.can_take_over(Timestamp(100)));
        e.holder = Holder::Completing;
        assert!(!e.can_take_over(Timestamp(1_000)));
    }
}

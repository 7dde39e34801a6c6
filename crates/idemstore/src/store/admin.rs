//! What an operator does to a store beside the request path: list every
//! live record ([`Store::records`]) and segment ([`Store::segments`]), free
//! a stuck reservation ([`Store::release`]), remove a completion before its
//! expiry ([`Store::purge`]).

use super::begin::{Expired, KeyState};
use super::lifecycle::Store;
use crate::clock::Timestamp;
use crate::commit::Completer;
use crate::error::{Error, Result};
use crate::format::record::Body;
use crate::index::{self, Holder, PendingEntry, Slot, SlotKey};
use crate::pipeline::{Append, Msg, entry_of, frame_record};
use crate::scope::{IndexKey, Key, TenantDigest};
use crate::shared::Looked;
use std::collections::VecDeque;

/// One live key, as [`Store::records`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LiveRecord {
    /// The digest of the key's tenant (the raw tenant is never stored).
    pub tenant: TenantDigest,
    /// The idempotency key, as sent.
    pub key: Vec<u8>,
    /// The fencing token of the reservation that wrote it.
    pub token: u64,
    /// Reserved, or completed with its response.
    pub state: KeyState,
}

/// One segment file, as [`Store::segments`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// The file's name in the store directory.
    pub name: String,
    /// The segment's id.
    pub id: u32,
    /// Its TTL bucket `[bucket_start, bucket_end)`: every record in it
    /// expires in there, and the file is deleted whole at `bucket_end`.
    pub bucket_start: Timestamp,
    /// See `bucket_start`.
    pub bucket_end: Timestamp,
    /// Bytes of whole records (and the header).
    pub bytes: u64,
}

/// The iterator of [`Store::records`].
pub struct Records<'a> {
    store: &'a Store,
    now: Timestamp,
    /// The next shard to take a snapshot of.
    next_shard: usize,
    pending: VecDeque<PendingEntry>,
    slots: VecDeque<Slot>,
}

impl Iterator for Records<'_> {
    type Item = Result<LiveRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Some(Ok(LiveRecord {
                    tenant: p.tenant,
                    key: p.key.to_vec(),
                    token: p.token,
                    state: KeyState::Pending {
                        fingerprint: p.fingerprint,
                        started_at: p.started_at,
                        lease_end: p.lease_end,
                        abandoned: p.holder == Holder::Orphan,
                    },
                }));
            }
            if let Some(slot) = self.slots.pop_front() {
                match self.read(slot) {
                    Ok(Some(r)) => return Some(Ok(r)),
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e)),
                }
            }
            if self.next_shard == index::SHARDS {
                return None;
            }
            let shared = &self.store.inner.shared;
            let shard = shared.index.shard(self.next_shard);
            self.next_shard += 1;
            let now = self.now;
            self.pending.extend(
                shard
                    .pending
                    .values()
                    .filter(|p| !p.can_take_over(now))
                    .cloned(),
            );
            self.slots.extend(shard.completed_slots());
        }
    }
}

impl Records<'_> {
    /// The completed record (or refused key) at `slot`, unless it expired
    /// or its segment is gone.
    fn read(&self, slot: Slot) -> Result<Option<LiveRecord>> {
        let shared = &self.store.inner.shared;
        let Some(rec) = shared.read_slot(slot, self.now)? else {
            return Ok(None);
        };
        let (tenant, key) = (rec.tenant, rec.key.clone());
        let (token, state) = match shared.judge(rec, self.now) {
            Looked::Live(c, token) => (token, KeyState::Completed(*c)),
            Looked::Refused {
                expired_at,
                until,
                token,
            } => (
                token,
                KeyState::Expired(Expired {
                    expired_at,
                    refused_until: until,
                }),
            ),
            Looked::Gone | Looked::Collision => return Ok(None),
        };
        Ok(Some(LiveRecord {
            tenant,
            key,
            token,
            state,
        }))
    }
}

impl Store {
    /// Every live key: reservations whose lease runs (or that are being
    /// completed), then completions not expired, shard by shard, in no
    /// particular order. Each shard is looked at once, under its lock; the
    /// completed records are then read from disk one at a time, so a store of
    /// any size is listed in little memory, and requests go on meanwhile
    /// (what they change in a shard already listed is not seen). A record
    /// that cannot be read is an `Err` item, and listing goes on after it.
    ///
    /// ```
    /// # use idemstore::*;
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Config::default())?;
    /// let fp = Fingerprint::of(b"req");
    /// let Begin::Reserved(r) = store.begin(Tenant::new("t"), Key::new("done"), fp)? else { unreachable!() };
    /// r.complete(Response::new(201, "created"))?;
    /// let Begin::Reserved(_running) = store.begin(Tenant::new("t"), Key::new("running"), fp)? else { unreachable!() };
    /// let mut keys: Vec<_> = store.records().map(|r| r.map(|r| r.key)).collect::<Result<_>>()?;
    /// keys.sort();
    /// assert_eq!(keys, [b"done".to_vec(), b"running".to_vec()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn records(&self) -> Records<'_> {
        Records {
            store: self,
            now: self.now(),
            next_shard: 0,
            pending: VecDeque::new(),
            slots: VecDeque::new(),
        }
    }

    /// What the store holds for a key, as [`get`](Self::get) answers, with
    /// the key and the fencing token of the reservation that wrote it.
    ///
    /// ```
    /// # use idemstore::*;
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Config::default())?;
    /// let Begin::Reserved(r) = store.begin(Tenant::new("t"), Key::new("k"), Fingerprint::of(b"x"))? else { unreachable!() };
    /// let token = r.token();
    /// r.complete(Response::new(201, "created"))?;
    /// let rec = store.record(Tenant::new("t"), Key::new("k"))?.expect("completed");
    /// assert_eq!((rec.token, &rec.key[..]), (token, &b"k"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn record(
        &self,
        tenant: impl Into<TenantDigest>,
        key: Key<'_>,
    ) -> Result<Option<LiveRecord>> {
        let tenant = tenant.into();
        Ok(self.lookup(tenant, key)?.map(|(token, state)| LiveRecord {
            tenant,
            key: key.as_bytes().to_vec(),
            token,
            state,
        }))
    }

    /// The segment files, by bucket, then id.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let mut out: Vec<SegmentInfo> = self
            .inner
            .shared
            .segments
            .all()
            .iter()
            .map(|s| SegmentInfo {
                name: s.name.clone(),
                id: s.id(),
                bucket_start: s.header.bucket_start,
                bucket_end: s.header.bucket_end,
                bytes: s.len.load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect();
        out.sort_unstable_by_key(|s| (s.bucket_end, s.id));
        out
    }

    /// Frees a reserved key whose handler will never finish it (its process
    /// died, or it hangs), so that a retry runs at once instead of after the
    /// lease: `true` when a reservation was released, `false` when the key
    /// has none (free, completed, or its completion is being written, which
    /// is never undone).
    ///
    /// The release is written as the reservation's abort and made durable
    /// before this returns, in every [`Durability`](crate::Durability)
    /// mode. A reservation that [`recovery`](Self::recovery_report) listed
    /// as [`Abandoned`](crate::Abandoned) after its lease ended is released
    /// the same way (it then drops off the list of the next open). A
    /// [`Reservation`](crate::Reservation) still held in this process loses
    /// the key: its `complete` fails with [`Error::Fenced`].
    ///
    /// Releasing is an operator's decision that the request may run again:
    /// make it only once the first execution is known to have had no effect
    /// (or its effect has been dealt with).
    ///
    /// ```
    /// # use idemstore::*;
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Config::default())?;
    /// let fp = Fingerprint::of(b"req");
    /// let Begin::Reserved(stuck) = store.begin(Tenant::new("t"), Key::new("k"), fp)? else { unreachable!() };
    /// stuck.abandon(); // as if its process had died
    /// assert!(matches!(store.begin(Tenant::new("t"), Key::new("k"), fp)?, Begin::InFlight(_)));
    /// assert!(store.release(Tenant::new("t"), Key::new("k"))?);
    /// assert!(matches!(store.begin(Tenant::new("t"), Key::new("k"), fp)?, Begin::Reserved(_)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(&self, tenant: impl Into<TenantDigest>, key: Key<'_>) -> Result<bool> {
        let key = key.as_bytes();
        let (tenant, ik) = self.scope(tenant.into(), key)?;
        self.check_not_read_only()?;
        let shared = &self.inner.shared;
        let (entry, seq) = {
            let mut shard = shared.index.lock(&ik);
            let sk = SlotKey::from(&ik);
            match shard.pending.get(&sk) {
                Some(p) if !p.is_for(&tenant, key) => return Err(Error::DigestCollision),
                Some(p) if p.holder == Holder::Completing => return Ok(false),
                Some(_) => {
                    let entry = shard.pending.remove(&sk);
                    (entry, shared.next_seq())
                }
                None if shard.completed(&ik).is_some() => return Ok(false),
                None => {
                    let listed = self.recovery_report().abandoned.iter().find(|a| {
                        a.tenant == tenant && a.key == key && a.lease_end <= shared.clock().now()
                    });
                    let Some(a) = listed else {
                        return Ok(false);
                    };
                    let entry = PendingEntry {
                        token: a.token,
                        tenant,
                        key: key.into(),
                        fingerprint: a.fingerprint,
                        started_at: a.started_at,
                        lease_end: a.lease_end,
                        kept_until: a.kept_until,
                        holder: Holder::Orphan,
                    };
                    (Some(entry), shared.next_seq())
                }
            }
        };
        let Some(p) = entry else { return Ok(false) };
        let body = Body::Aborted {
            lease_end: p.lease_end,
        };
        // Into the bucket of the records it supersedes, whatever retention
        // they were written with: it lives as long as they do.
        let expiry = p.kept_until.max(p.lease_end);
        self.write_durably(ik, expiry, seq, &tenant, key, p.token, &body)?;
        Ok(true)
    }

    /// Removes a key's completed record before its expiry: from then on a
    /// request with the key runs again, as if it had never been seen.
    /// `true` when a completion was purged, `false` when the key had none
    /// (a reservation is [released](Self::release), not purged).
    ///
    /// The purge is a record of its own (FORMAT.md: kind 4, record version
    /// 2), made durable before this returns in every
    /// [`Durability`](crate::Durability) mode, and kept as long as the
    /// record it removes would have been. A store with a purge in it can
    /// no longer be opened by a build older than purges, which says so
    /// instead of serving the purged record again. If the write fails with
    /// [`Error::Deferred`] (a full disk), the purge holds in this process
    /// at once and the store writes it when it can.
    ///
    /// ```
    /// # use idemstore::*;
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Config::default())?;
    /// let fp = Fingerprint::of(b"req");
    /// let Begin::Reserved(r) = store.begin(Tenant::new("t"), Key::new("k"), fp)? else { unreachable!() };
    /// r.complete(Response::new(201, "created"))?;
    /// assert!(store.purge(Tenant::new("t"), Key::new("k"))?);
    /// store.close()?;
    /// let store = Store::open(dir.path(), Config::default())?;
    /// assert!(matches!(store.begin(Tenant::new("t"), Key::new("k"), fp)?, Begin::Reserved(_)), "runs again");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn purge(&self, tenant: impl Into<TenantDigest>, key: Key<'_>) -> Result<bool> {
        let key = key.as_bytes();
        let (tenant, ik) = self.scope(tenant.into(), key)?;
        self.check_not_read_only()?;
        let shared = &self.inner.shared;
        let Some(slot) = shared.index.lock(&ik).completed(&ik) else {
            return Ok(false);
        };
        // A refused key (`Config::refuse_expired_keys_for`) is purged too:
        // the purge then lives as long as the refusal would have.
        let (until, token) = match shared.look(slot, &tenant, key, shared.clock().now())? {
            Looked::Gone => return Ok(false),
            Looked::Collision => return Err(Error::DigestCollision),
            Looked::Live(stored, token) => (stored.expires_at, token),
            Looked::Refused { until, token, .. } => (until, token),
        };
        // Numbered under the lock, while the slot still holds this record
        // and it is live: a later completion of the key (possible only once
        // this one has expired, or was purged) is numbered after the purge,
        // and outranks it at every open.
        let (seq, now) = {
            let shard = shared.index.lock(&ik);
            let now = shared.clock().now();
            if shard.completed(&ik) != Some(slot) || until <= now {
                return Ok(false);
            }
            (shared.next_seq(), now)
        };
        let body = Body::Purged {
            purged_at: now,
            until,
        };
        let written = self.write_durably(ik, until, seq, &tenant, key, token, &body);
        // Deferred: the store writes the purge later by itself; it holds from
        // now on in this process (a crash before it is written brings the
        // record back, which replays it: nothing runs twice).
        if written.is_ok() || matches!(written, Err(Error::Deferred { .. })) {
            let mut shard = shared.index.lock(&ik);
            if shard.completed(&ik) == Some(slot) {
                shard.remove_completed(&ik);
            }
        }
        written.map(|()| true)
    }

    /// Writes an operator's record of index key `ik` through the writer, to
    /// the bucket of `expiry`, and returns once it is fsynced.
    #[allow(clippy::too_many_arguments)]
    fn write_durably(
        &self,
        ik: IndexKey,
        expiry: Timestamp,
        seq: u64,
        tenant: &TenantDigest,
        key: &[u8],
        token: u64,
        body: &Body,
    ) -> Result<()> {
        let shared = &self.inner.shared;
        let (c, commit) = Completer::new();
        shared.submit(
            &self.inner.writer_tx,
            Msg::Append(Append {
                bucket: shared.bucket(expiry),
                frame: frame_record(seq, tenant, key, token, body),
                entry: entry_of(ik, seq, body),
                install: None,
                done: Some(c),
            }),
        )?;
        commit.wait()?;
        self.flush()
    }
}

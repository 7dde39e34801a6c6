//! The begin/get algorithm: what the index and the stored record say about a
//! key, and reserving it when it is free.

use super::lifecycle::Store;
use super::reservation::Reservation;
use crate::clock::Timestamp;
use crate::commit::Commit;
use crate::error::{Error, Result};
use crate::index::{Holder, PendingEntry, Slot, SlotKey};
use crate::response::StoredResponse;
use crate::scope::{Fingerprint, IndexKey, Key, Tenant, TenantDigest};
use crate::shared::Looked;
use std::sync::atomic::Ordering;

/// The answer of [`Store::begin`]: exactly one of five (the fifth only with
/// [`Config::refuse_expired_keys_for`](crate::Config::refuse_expired_keys_for)).
#[derive(Debug)]
pub enum Begin {
    /// The key is yours: execute the request, then
    /// [`complete`](Reservation::complete) or [`abort`](Reservation::abort).
    Reserved(Reservation),
    /// Another request holds the key right now.
    InFlight(InFlight),
    /// The key completed with the same request fingerprint: send this back.
    Replay(StoredResponse),
    /// The key completed for a different request.
    Mismatch(Mismatch),
    /// The key's record expired, and the store refuses the key for a grace
    /// period after that ([`Config::refuse_expired_keys_for`](crate::Config::refuse_expired_keys_for)):
    /// the request must not run, and the client must use a new key.
    Expired(Expired),
}

/// A key whose record expired and that is refused until `refused_until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// When its completed record expired (it is no longer replayed).
    pub expired_at: Timestamp,
    /// Until when a request with the key is refused; from then on it is
    /// free.
    pub refused_until: Timestamp,
}

/// A reservation held by someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    /// When the holder reserved the key.
    pub started_at: Timestamp,
    /// When its lease ends (a later `begin` may take over from then on,
    /// unless it is completing).
    pub lease_end: Timestamp,
    /// Whether the holder's request has the same fingerprint as this one.
    pub same_request: bool,
}

/// The key was completed by a different request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Fingerprint of the request that completed the key.
    pub stored_fingerprint: Fingerprint,
    /// When it completed.
    pub completed_at: Timestamp,
    /// The first request's stored record (its response is not this
    /// request's to see; what a caller may use of it is its own business,
    /// e.g. the HTTP layer names the body members that differ).
    pub stored: Box<StoredResponse>,
}

/// What [`Store::get`] sees for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Reserved, not completed.
    Pending {
        /// Fingerprint of the holder's request.
        fingerprint: Fingerprint,
        /// When it was reserved.
        started_at: Timestamp,
        /// When the lease ends.
        lease_end: Timestamp,
        /// True when the holder died with an earlier process (found on disk
        /// at open).
        abandoned: bool,
    },
    /// Completed and not expired.
    Completed(StoredResponse),
    /// Expired, and refused until `refused_until`
    /// ([`Config::refuse_expired_keys_for`](crate::Config::refuse_expired_keys_for)).
    Expired(Expired),
}

impl Store {
    /// Starts a request with idempotency `key` for `tenant` (any bytes that
    /// identify the caller: an API key, an account id; only its digest is
    /// stored). Does not wait for the disk.
    ///
    /// Reads the stored record from disk for a completed key (one `pread`,
    /// usually served from the page cache).
    ///
    /// ```
    /// # use idemstore::*;
    /// # use std::time::Duration;
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Config::default())?;
    /// let fp = Fingerprint::of(b"POST /v1/charges amount=5");
    /// let Begin::Reserved(r) = store.begin(Tenant::new("acct_1"), Key::new("key-1"), fp)? else { unreachable!() };
    /// // While it runs, a duplicate is told so (409 in HTTP terms)...
    /// assert!(matches!(store.begin(Tenant::new("acct_1"), Key::new("key-1"), fp)?, Begin::InFlight(i) if i.same_request));
    /// // ...another request with the key is a mismatch only once it completed...
    /// r.complete(Response::new(201, "charged"))?;
    /// assert!(matches!(store.begin(Tenant::new("acct_1"), Key::new("key-1"), Fingerprint::of(b"other"))?, Begin::Mismatch(_)));
    /// // ...the same request replays, and another tenant's key is its own.
    /// assert!(matches!(store.begin(Tenant::new("acct_1"), Key::new("key-1"), fp)?, Begin::Replay(s) if s.response.body == b"charged"));
    /// assert!(matches!(store.begin(Tenant::new("acct_2"), Key::new("key-1"), fp)?, Begin::Reserved(_)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn begin(
        &self,
        tenant: Tenant<'_>,
        key: Key<'_>,
        fingerprint: Fingerprint,
    ) -> Result<Begin> {
        self.begin_with(tenant, key, fingerprint, self.inner.shared.config.retention)
    }

    /// Like [`begin`](Self::begin), for a key whose record is kept for
    /// `retention` instead of [`Config::retention`](crate::Config::retention)
    /// (its reservation's records too): different kinds of request can keep
    /// their keys for different times in one store. `retention` must be
    /// longer than the lease. An existing record keeps the retention it was
    /// stored with.
    ///
    /// ```
    /// # use idemstore::*;
    /// # use std::time::Duration;
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Config::default())?;
    /// let week = Duration::from_secs(7 * 24 * 3600);
    /// let Begin::Reserved(r) = store.begin_with(Tenant::new("t"), Key::new("payout-1"), Fingerprint::of(b"x"), week)? else { unreachable!() };
    /// r.complete(Response::new(201, "sent"))?;
    /// let Some(KeyState::Completed(s)) = store.get(Tenant::new("t"), Key::new("payout-1"))? else { unreachable!() };
    /// assert_eq!(s.expires_at.0 - s.completed_at.0, week.as_millis() as u64);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn begin_with(
        &self,
        tenant: Tenant<'_>,
        key: Key<'_>,
        fingerprint: Fingerprint,
        retention: std::time::Duration,
    ) -> Result<Begin> {
        if retention <= self.inner.shared.config.lease {
            return Err(Error::InvalidConfig(format!(
                "a record's retention ({retention:?}) must be longer than the lease ({:?})",
                self.inner.shared.config.lease
            )));
        }
        let key = key.as_bytes();
        let (tenant, ik) = self.scope(tenant.into(), key)?;
        let shared = &self.inner.shared;
        let mut known: Option<(Slot, Looked)> = None;
        loop {
            let now = shared.clock().now();
            let mut shard = shared.index.lock(&ik);
            let mut taking_over = false;
            if let Some(p) = shard.pending.get(&SlotKey::from(&ik)) {
                if !p.is_for(&tenant, key) {
                    return Err(Error::DigestCollision);
                }
                if !p.can_take_over(now) {
                    return Ok(Begin::InFlight(InFlight {
                        started_at: p.started_at,
                        lease_end: p.lease_end,
                        same_request: p.fingerprint == fingerprint,
                    }));
                }
                taking_over = true;
            }
            if let Some(slot) = shard.completed(&ik) {
                match known.take() {
                    // Judged at the previous pass's clock: still true now
                    // (else it is looked at again).
                    Some((s, looked)) if s == slot && !looked.stale_at(now) => match looked {
                        Looked::Gone => {
                            shard.remove_completed(&ik);
                        }
                        Looked::Collision => return Err(Error::DigestCollision),
                        Looked::Refused {
                            expired_at, until, ..
                        } => {
                            shared
                                .counters
                                .refused_expired
                                .fetch_add(1, Ordering::Relaxed);
                            return Ok(Begin::Expired(Expired {
                                expired_at,
                                refused_until: until,
                            }));
                        }
                        Looked::Live(stored, _) => {
                            return Ok(if stored.fingerprint == fingerprint {
                                Begin::Replay(*stored)
                            } else {
                                Begin::Mismatch(Mismatch {
                                    stored_fingerprint: stored.fingerprint,
                                    completed_at: stored.completed_at,
                                    stored,
                                })
                            });
                        }
                    },
                    _ => {
                        // Read without holding the shard lock, then look again.
                        drop(shard);
                        known = Some((slot, shared.look(slot, &tenant, key, now)?));
                        continue;
                    }
                }
            }
            shared.check_writable()?;
            if taking_over {
                shared.counters.takeovers.fetch_add(1, Ordering::Relaxed);
            }
            let token = shared.next_seq();
            let lease_end = now.saturating_add(shared.config.lease);
            let kept_until = now.saturating_add(retention);
            let entry = PendingEntry {
                token,
                tenant,
                key: key.into(),
                fingerprint,
                started_at: now,
                lease_end,
                kept_until,
                holder: Holder::Held,
            };
            shard.pending.insert(SlotKey::from(&ik), entry);
            drop(shard);
            let mut r = Reservation {
                store: self.inner.clone(),
                index_key: ik,
                tenant,
                key: key.into(),
                fingerprint,
                token,
                started_at: now,
                lease_end,
                retention,
                persisted: Commit::ready(Ok(())),
                finished: false,
            };
            r.persisted = r.write_pending(token)?;
            return Ok(Begin::Reserved(r));
        }
    }

    /// What the store holds for a key, without reserving it. Expired records
    /// (unless refused, [`KeyState::Expired`]) and lapsed reservations are
    /// `None`. The tenant is a [`Tenant`] or,
    /// where only its digest is known (an operator's tool), a
    /// [`TenantDigest`].
    ///
    /// ```
    /// # use idemstore::*;
    /// # use std::time::Duration;
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Config::default())?;
    /// let fp = Fingerprint::of(b"req");
    /// assert_eq!(store.get(Tenant::new("t"), Key::new("k"))?, None);
    /// let Begin::Reserved(r) = store.begin(Tenant::new("t"), Key::new("k"), fp)? else { unreachable!() };
    /// assert!(matches!(store.get(Tenant::new("t"), Key::new("k"))?, Some(KeyState::Pending { abandoned: false, .. })));
    /// r.complete(Response::new(200, "ok"))?;
    /// assert!(matches!(store.get(Tenant::new("t"), Key::new("k"))?, Some(KeyState::Completed(s)) if s.response.status == 200));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, tenant: impl Into<TenantDigest>, key: Key<'_>) -> Result<Option<KeyState>> {
        Ok(self.lookup(tenant.into(), key)?.map(|(_, state)| state))
    }

    /// What [`get`](Self::get) answers, with the fencing token of the
    /// reservation that wrote it.
    pub(super) fn lookup(
        &self,
        tenant: TenantDigest,
        key: Key<'_>,
    ) -> Result<Option<(u64, KeyState)>> {
        let key = key.as_bytes();
        let (tenant, ik) = self.scope(tenant, key)?;
        let shared = &self.inner.shared;
        let now = shared.clock().now();
        let slot = {
            let shard = shared.index.lock(&ik);
            if let Some(p) = shard.pending.get(&SlotKey::from(&ik)) {
                if !p.is_for(&tenant, key) {
                    return Err(Error::DigestCollision);
                }
                if !p.can_take_over(now) {
                    let state = KeyState::Pending {
                        fingerprint: p.fingerprint,
                        started_at: p.started_at,
                        lease_end: p.lease_end,
                        abandoned: p.holder == Holder::Orphan,
                    };
                    return Ok(Some((p.token, state)));
                }
            }
            shard.completed(&ik)
        };
        let Some(slot) = slot else { return Ok(None) };
        match shared.look(slot, &tenant, key, now)? {
            Looked::Gone => Ok(None),
            Looked::Collision => Err(Error::DigestCollision),
            Looked::Live(s, token) => Ok(Some((token, KeyState::Completed(*s)))),
            Looked::Refused {
                expired_at,
                until,
                token,
            } => Ok(Some((
                token,
                KeyState::Expired(Expired {
                    expired_at,
                    refused_until: until,
                }),
            ))),
        }
    }

    /// What `begin`, `get` and the operator's calls start with: the store
    /// must be open and the key's length allowed; then the key's index key.
    pub(super) fn scope(
        &self,
        tenant: TenantDigest,
        key: &[u8],
    ) -> Result<(TenantDigest, IndexKey)> {
        self.inner.shared.check_open()?;
        self.check_key(key)?;
        let ik = (self.inner.shared.config.index_hash)(&tenant, key);
        Ok((tenant, ik))
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        let c = &self.inner.shared.config;
        if key.len() < c.min_key_len || key.len() > c.max_key_len {
            return Err(Error::InvalidKey {
                reason: format!("the key is {} bytes long", key.len()),
                min: c.min_key_len,
                max: c.max_key_len,
            });
        }
        Ok(())
    }
}

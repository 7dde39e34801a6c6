//! Model-based test: random operation sequences against a plain in-memory
//! model, with clean restarts and simulated power cuts among the operations.
//!
//! The store runs on `MemStorage`, whose `crash` keeps exactly what was
//! fsynced (plus, at random, part of what was not). In `Sync` mode every
//! acknowledged completion must survive a crash. Reservation and abort
//! records are not waited for, so after a crash a key that was reserved or
//! aborted is *uncertain*: it may come back as an abandoned reservation (with
//! one of the leases it had) or be free; the model accepts either and learns
//! which from the store's answer.
//!
//! The disk can also fill up (`DiskFull`, then `Heal`): a completion whose
//! write fails is *kept* — its key stays in flight, never free — and is
//! written once the disk heals (a flush tries at once), or lost with a crash
//! while still kept (its key then uncertain, as a reservation's).
//!
//! An operator's calls are operations too: `Purge` (a completion goes, and
//! the key runs again) and `Release` (a reservation goes, its holder is
//! fenced); both are durable when they return. After every clean restart,
//! the recovery report's abandoned reservations are exactly the model's
//! reservations whose holder did not finish them.
//!
//! The second property runs the same operations on a store that refuses
//! expired keys for a grace period (`Config::refuse_expired_keys_for`): a
//! completion that expired is *refused* until the grace ends, across
//! compactions (which write its tombstone and delete its segment), restarts
//! and crashes, as an acknowledged completion is kept.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use idemstore::storage::{ENOSPC, Fault, FaultOn, Faults, FaultyStorage, MemStorage, Storage};
use idemstore::{
    Begin, Clock, Config, Durability, Error, Fingerprint, KeyState, ManualClock, Reservation,
    Response, Store, Timestamp,
};
use idemstore::{Key as IdemKey, Tenant};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(60);
const RETENTION: Duration = Duration::from_secs(2 * 3600);
const WIDTH: Duration = Duration::from_secs(600);
/// The grace of the second property: longer than a bucket, so that keys
/// are refused both from their expired completion and from its tombstone.
const GRACE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
enum Op {
    Begin { tenant: u8, key: u8, fp: u8 },
    Get { tenant: u8, key: u8 },
    Complete { holder: usize, body: u8 },
    Abort { holder: usize },
    Drop { holder: usize },
    Renew { holder: usize },
    Advance { secs: u64 },
    Compact,
    Restart,
    Crash { seed: u64 },
    DiskFull,
    Heal,
    Purge { tenant: u8, key: u8 },
    Release { tenant: u8, key: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2u8, 0..4u8, 0..2u8).prop_map(|(tenant, key, fp)| Op::Begin { tenant, key, fp }),
        2 => (0..2u8, 0..4u8).prop_map(|(tenant, key)| Op::Get { tenant, key }),
        5 => (any::<usize>(), any::<u8>()).prop_map(|(holder, body)| Op::Complete { holder, body }),
        1 => any::<usize>().prop_map(|holder| Op::Abort { holder }),
        1 => any::<usize>().prop_map(|holder| Op::Drop { holder }),
        1 => any::<usize>().prop_map(|holder| Op::Renew { holder }),
        3 => prop_oneof![Just(1u64), Just(30), Just(59), Just(61), Just(600), Just(3600), Just(7300)]
            .prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Compact),
        1 => Just(Op::Restart),
        2 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
        1 => Just(Op::DiskFull),
        1 => Just(Op::Heal),
        1 => (0..2u8, 0..4u8).prop_map(|(tenant, key)| Op::Purge { tenant, key }),
        1 => (0..2u8, 0..4u8).prop_map(|(tenant, key)| Op::Release { tenant, key }),
    ]
}

type Key = (u8, u8);

#[derive(Debug, Clone, PartialEq)]
enum State {
    Absent,
    /// Reserved; `holder` is the live handle's id, `None` if abandoned.
    Pending {
        holder: Option<u64>,
        fp: u8,
        lease_end: Timestamp,
    },
    Completed {
        fp: u8,
        body: Vec<u8>,
        expires_at: Timestamp,
    },
    /// Its handler ran and `complete` answered `Deferred` (the disk was
    /// full): in flight until the disk heals, then completed.
    Kept {
        fp: u8,
        body: Vec<u8>,
        expires_at: Timestamp,
    },
    /// After a crash: free, or abandoned-pending with one of these
    /// (fingerprint, lease end) pairs.
    Uncertain(Vec<(u8, Timestamp)>),
    /// Its completion expired at `expired_at`; refused until `until`.
    Refused {
        expired_at: Timestamp,
        until: Timestamp,
    },
}

struct Model {
    keys: HashMap<Key, State>,
    /// Reservations whose records may be undone by a crash: (fp, lease end)
    /// per key, since the last clean restart.
    volatile: HashMap<Key, Vec<(u8, Timestamp)>>,
    next_holder: u64,
    /// How long an expired key is refused (zero: not at all).
    grace: Duration,
}

impl Model {
    /// The state at `now`, with expiry applied.
    fn state(&mut self, k: Key, now: Timestamp) -> State {
        let grace = self.grace;
        let s = self.keys.entry(k).or_insert(State::Absent);
        match s {
            State::Completed { expires_at, .. } if *expires_at <= now => {
                let until = expires_at.saturating_add(grace);
                *s = if until > now {
                    State::Refused {
                        expired_at: *expires_at,
                        until,
                    }
                } else {
                    State::Absent
                };
            }
            State::Refused { until, .. } if *until <= now => *s = State::Absent,
            State::Uncertain(c) => {
                c.retain(|(_, end)| *end > now);
                if c.is_empty() {
                    *s = State::Absent;
                }
            }
            _ => {}
        }
        s.clone()
    }
}

struct Held {
    id: u64,
    key: Key,
    fp: u8,
    r: Reservation,
}

struct Harness {
    clock: ManualClock,
    storage: MemStorage,
    /// The faults of the `FaultyStorage` the store runs on (over `storage`).
    faults: Arc<Faults>,
    full: bool,
    /// A compaction failed since the store was opened: the segments it
    /// retired have no hint (they were to be deleted) and may be read at
    /// the next open (with a grace, when their keys are still refused).
    compaction_failed: bool,
    store: Store,
    held: Vec<Held>,
    model: Model,
}

fn tenant(t: u8) -> String {
    format!("tenant-{t}")
}
fn key(k: u8) -> String {
    format!("key-{k}")
}
fn fingerprint(f: u8) -> Fingerprint {
    Fingerprint::of(&[f])
}

fn config(clock: &ManualClock, grace: Duration) -> Config {
    let mut c = Config::default();
    c.refuse_expired_keys_for = (!grace.is_zero()).then_some(grace);
    c.clock(Arc::new(clock.clone()))
        .lease(LEASE)
        .retention(RETENTION)
        .bucket_width(WIDTH)
        .durability(Durability::Sync)
        .max_record_bytes(1024)
        .max_segment_bytes(4096)
}

/// A storage over `mem` whose writes can be made to fail.
fn faulty(mem: &MemStorage) -> (Arc<dyn Storage>, Arc<Faults>) {
    let disk = FaultyStorage::new(Arc::new(mem.clone()));
    let faults = disk.faults();
    (Arc::new(disk), faults)
}

impl Harness {
    fn new(grace: Duration) -> Self {
        let clock = ManualClock::new(Timestamp(1_800_000_000_000));
        let storage = MemStorage::new();
        let (disk, faults) = faulty(&storage);
        let store = Store::open_with_storage(disk, config(&clock, grace)).unwrap();
        Harness {
            clock,
            storage,
            faults,
            full: false,
            compaction_failed: false,
            store,
            held: Vec::new(),
            model: Model {
                keys: HashMap::new(),
                volatile: HashMap::new(),
                next_holder: 1,
                grace,
            },
        }
    }

    fn take_holder(&mut self, i: usize) -> Option<Held> {
        if self.held.is_empty() {
            None
        } else {
            let n = self.held.len();
            Some(self.held.swap_remove(i % n))
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.clock.now();
        match *op {
            Op::Begin {
                tenant: t,
                key: k,
                fp,
            } => {
                let kk = (t, k);
                let expected = self.model.state(kk, now);
                let got = match self.store.begin(
                    Tenant::new(&tenant(t)),
                    IdemKey::new(&key(k)),
                    fingerprint(fp),
                ) {
                    Ok(got) => got,
                    // A full disk refuses new reservations, and only those.
                    Err(e) if self.full && e.is_unavailable() => {
                        let reservable = match &expected {
                            State::Absent | State::Uncertain(_) => true,
                            State::Pending { lease_end, .. } => now >= *lease_end,
                            _ => false,
                        };
                        prop_assert!(reservable, "{:?} refused while full: {}", expected, e);
                        return Ok(());
                    }
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                };
                match (expected, got) {
                    (State::Kept { fp: f0, .. }, Begin::InFlight(i)) => {
                        prop_assert_eq!(i.same_request, f0 == fp);
                    }
                    (State::Completed { fp: f0, body, .. }, Begin::Replay(s)) => {
                        prop_assert_eq!(f0, fp);
                        prop_assert_eq!(s.response.body, body);
                    }
                    (State::Completed { fp: f0, .. }, Begin::Mismatch(_)) => {
                        prop_assert_ne!(f0, fp)
                    }
                    (State::Refused { expired_at, until }, Begin::Expired(e)) => {
                        prop_assert_eq!((e.expired_at, e.refused_until), (expired_at, until));
                    }
                    (
                        State::Pending {
                            fp: f0, lease_end, ..
                        },
                        Begin::InFlight(i),
                    ) => {
                        prop_assert!(now < lease_end);
                        prop_assert_eq!(i.lease_end, lease_end);
                        prop_assert_eq!(i.same_request, f0 == fp);
                    }
                    (State::Uncertain(c), Begin::InFlight(i)) => {
                        let m = c
                            .iter()
                            .find(|(f, end)| *end == i.lease_end && (*f == fp) == i.same_request);
                        prop_assert!(m.is_some(), "in flight {:?} is none of {:?}", i, c);
                        let (f0, _) = *m.unwrap_or(&(0, Timestamp(0)));
                        self.model.keys.insert(
                            kk,
                            State::Pending {
                                holder: None,
                                fp: f0,
                                lease_end: i.lease_end,
                            },
                        );
                    }
                    (State::Pending { lease_end, .. }, Begin::Reserved(r)) if now >= lease_end => {
                        self.reserved(kk, fp, r, now)
                    }
                    (State::Absent | State::Uncertain(_), Begin::Reserved(r)) => {
                        self.reserved(kk, fp, r, now)
                    }
                    (e, g) => prop_assert!(false, "begin {:?}: model {:?}, store {:?}", kk, e, g),
                }
            }
            Op::Get { tenant: t, key: k } => {
                let expected = self.model.state((t, k), now);
                let got = self
                    .store
                    .get(Tenant::new(&tenant(t)), IdemKey::new(&key(k)))
                    .unwrap();
                match (expected, got) {
                    (State::Kept { .. }, Some(KeyState::Pending { abandoned, .. })) => {
                        prop_assert!(!abandoned)
                    }
                    (State::Absent, None) | (State::Uncertain(_), None) => {}
                    (State::Pending { lease_end, .. }, None) => prop_assert!(now >= lease_end),
                    (State::Completed { body, .. }, Some(KeyState::Completed(s))) => {
                        prop_assert_eq!(s.response.body, body)
                    }
                    (State::Refused { expired_at, until }, Some(KeyState::Expired(e))) => {
                        prop_assert_eq!((e.expired_at, e.refused_until), (expired_at, until));
                    }
                    (
                        State::Pending {
                            holder, lease_end, ..
                        },
                        Some(KeyState::Pending {
                            lease_end: l,
                            abandoned,
                            ..
                        }),
                    ) => {
                        prop_assert_eq!(l, lease_end);
                        prop_assert_eq!(abandoned, holder.is_none());
                    }
                    (
                        State::Uncertain(c),
                        Some(KeyState::Pending {
                            lease_end,
                            abandoned,
                            ..
                        }),
                    ) => {
                        prop_assert!(abandoned && c.iter().any(|(_, e)| *e == lease_end));
                    }
                    (e, g) => prop_assert!(false, "get {:?}: model {:?}, store {:?}", (t, k), e, g),
                }
            }
            Op::Complete { holder, body } => {
                let Some(h) = self.take_holder(holder) else {
                    return Ok(());
                };
                let owns = self.owns(&h, now);
                let body = vec![body; usize::from(body) + 1];
                let res = h.r.complete(Response::new(200, body.clone()));
                if owns && matches!(res, Err(Error::Deferred { .. })) {
                    prop_assert!(self.full, "deferred with a healthy disk: {:?}", res);
                    self.model.keys.insert(
                        h.key,
                        State::Kept {
                            fp: h.fp,
                            body,
                            expires_at: now.saturating_add(RETENTION),
                        },
                    );
                } else if owns {
                    prop_assert!(res.is_ok(), "{:?}", res);
                    self.model.keys.insert(
                        h.key,
                        State::Completed {
                            fp: h.fp,
                            body,
                            expires_at: now.saturating_add(RETENTION),
                        },
                    );
                } else {
                    prop_assert!(matches!(res, Err(Error::Fenced { .. })), "{:?}", res);
                }
            }
            Op::Abort { holder } | Op::Drop { holder } => {
                let Some(h) = self.take_holder(holder) else {
                    return Ok(());
                };
                let owns = self.owns(&h, now);
                if owns {
                    self.model.keys.insert(h.key, State::Absent);
                }
                if let Op::Abort { .. } = op {
                    let res = h.r.abort();
                    prop_assert_eq!(res.is_ok(), owns, "{:?}", res);
                } else {
                    drop(h.r);
                }
            }
            Op::Renew { holder } => {
                if self.held.is_empty() {
                    return Ok(());
                }
                let i = holder % self.held.len();
                let (k, id) = (self.held[i].key, self.held[i].id);
                let owns = self.holds(k, id, now);
                let res = self.held[i].r.renew();
                if owns {
                    let end = res.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(end, now.saturating_add(LEASE));
                    let (k, fp, id) = (self.held[i].key, self.held[i].fp, self.held[i].id);
                    self.model.keys.insert(
                        k,
                        State::Pending {
                            holder: Some(id),
                            fp,
                            lease_end: end,
                        },
                    );
                    self.model.volatile.entry(k).or_default().push((fp, end));
                } else {
                    prop_assert!(matches!(res, Err(Error::Fenced { .. })), "{:?}", res);
                }
            }
            // What a full disk does to writes is the other operations'
            // business: these run on a disk that takes them.
            Op::Purge { .. } | Op::Release { .. } if self.full => {}
            Op::Purge { tenant: t, key: k } => {
                let kk = (t, k);
                let expected = self.model.state(kk, now);
                let got = self
                    .store
                    .purge(Tenant::new(&tenant(t)), IdemKey::new(&key(k)))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let completed = matches!(expected, State::Completed { .. } | State::Refused { .. });
                prop_assert_eq!(got, completed, "purge {:?}: model {:?}", kk, expected);
                if completed {
                    self.model.keys.insert(kk, State::Absent);
                    // The durable purge outranks every older record.
                    self.model.volatile.remove(&kk);
                }
            }
            Op::Release { tenant: t, key: k } => {
                let kk = (t, k);
                let expected = self.model.state(kk, now);
                let got = self
                    .store
                    .release(Tenant::new(&tenant(t)), IdemKey::new(&key(k)))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                match expected {
                    State::Pending { lease_end, .. } if lease_end > now => {
                        prop_assert!(got, "release {:?} of a reservation", kk)
                    }
                    State::Completed { .. } | State::Kept { .. } | State::Refused { .. } => {
                        prop_assert!(!got, "release {:?} freed {:?}", kk, expected)
                    }
                    // Free, or a reservation whose lease ended, kept in
                    // memory or listed by the last open (then freed for
                    // good), or whose record expired.
                    State::Absent | State::Uncertain(_) | State::Pending { .. } => {}
                }
                if !matches!(
                    expected,
                    State::Completed { .. } | State::Kept { .. } | State::Refused { .. }
                ) {
                    self.model.keys.insert(kk, State::Absent);
                    // Only a release that wrote its (durable) abort outranks
                    // older records: one that found nothing to release
                    // leaves them as uncertain as they were.
                    if got {
                        self.model.volatile.remove(&kk);
                    }
                }
            }
            Op::Advance { secs } => self.clock.advance(Duration::from_secs(secs)),
            Op::Compact => {
                let res = self.store.compact_now();
                prop_assert!(res.is_ok() || self.full, "{:?}", res);
                self.compaction_failed |= res.is_err();
            }
            Op::DiskFull => {
                self.faults.inject(Fault {
                    on: FaultOn::Write,
                    after: 0,
                    errno: ENOSPC,
                });
                self.full = true;
            }
            Op::Heal => self.heal()?,
            Op::Restart => {
                // A clean close needs a disk that takes writes.
                self.heal()?;
                let dying = self.abandon_holders();
                // A hint that could not be written (a full disk) is not
                // written again, nor is one of a segment a failed
                // compaction retired: the segment is read instead.
                let hints_failed = self.store.stats().hint_errors > 0 || self.compaction_failed;
                self.compaction_failed = false;
                self.store.close().unwrap();
                drop(dying);
                // A clean close made everything durable: nothing is uncertain.
                self.model.volatile.clear();
                // Open from the hint files (all written by the close, unless
                // one failed), then from the segments alone: both must find
                // the same store.
                let grace = self.model.grace;
                let open = || {
                    Store::open_with_storage(faulty(&self.storage).0, config(&self.clock, grace))
                        .unwrap()
                };
                let a = open();
                let ra = a.recovery_report().clone();
                // With a grace, so are segments of buckets that ended (the
                // compactor retired them, and they stay until their keys'
                // tombstones are written): files named by a bucket end that
                // passed.
                let now = self.clock.now();
                let ended = if grace.is_zero() {
                    0
                } else {
                    self.storage
                        .list()
                        .unwrap()
                        .iter()
                        .filter(|n| n.ends_with(".seg"))
                        .filter_map(|n| n.split('-').next()?.parse::<u64>().ok())
                        .filter(|end| *end <= now.0)
                        .count() as u64
                };
                prop_assert!(
                    ra.segments_read - ra.segments_from_hints <= ended || hints_failed,
                    "{} of {} segments from hints, {} of ended buckets",
                    ra.segments_from_hints,
                    ra.segments_read,
                    ended
                );
                a.close().unwrap();
                for n in self.storage.list().unwrap() {
                    if n.ends_with(".hint") {
                        self.storage.remove(&n).unwrap();
                    }
                }
                self.store = open();
                let rb = self.store.recovery_report().clone();
                prop_assert_eq!(
                    (ra.completed_live, ra.pending_live, ra.records_read),
                    (rb.completed_live, rb.pending_live, rb.records_read)
                );
                prop_assert_eq!(&ra.abandoned, &rb.abandoned);
                self.check_abandoned(&rb.abandoned)?;
            }
            Op::Crash { seed } => {
                let dying = self.abandon_holders();
                let after = self.storage.crash(seed);
                let _ = self.store.close(); // the dead disk makes this fail; fine
                drop(dying);
                // Kept completions were never written: lost with the process.
                for (k, s) in self.model.keys.iter_mut() {
                    if let State::Kept { .. } = s {
                        let cands = self.model.volatile.get(k).cloned().unwrap_or_default();
                        *s = State::Uncertain(cands);
                    }
                }
                for (k, cands) in self.model.volatile.drain() {
                    let s = self.model.keys.entry(k).or_insert(State::Absent);
                    if let State::Completed { .. } | State::Refused { .. } = s {
                        continue; // acknowledged in Sync mode: must survive
                    }
                    let mut all = cands;
                    if let State::Pending { fp, lease_end, .. } = s {
                        all.push((*fp, *lease_end));
                    }
                    *s = State::Uncertain(all);
                }
                self.storage = after;
                let (disk, faults) = faulty(&self.storage);
                self.faults = faults;
                self.full = false;
                self.compaction_failed = false;
                self.store =
                    Store::open_with_storage(disk, config(&self.clock, self.model.grace)).unwrap();
            }
        }
        Ok(())
    }

    /// The disk takes writes again: a flush writes what the store kept, and
    /// every kept completion then replays (or, expired meanwhile, is gone).
    fn heal(&mut self) -> Result<(), TestCaseError> {
        if !self.full {
            return Ok(());
        }
        self.faults.heal();
        self.full = false;
        let res = self.store.flush();
        prop_assert!(res.is_ok(), "flush after healing: {:?}", res);
        let now = self.clock.now();
        let kept: Vec<Key> = self
            .model
            .keys
            .iter()
            .filter(|(_, s)| matches!(s, State::Kept { .. }))
            .map(|(k, _)| *k)
            .collect();
        for k in kept {
            let Some(State::Kept {
                fp,
                body,
                expires_at,
            }) = self.model.keys.remove(&k)
            else {
                continue;
            };
            // Published by the writer's settler right after the flush's write.
            let mut tries = 0;
            let got = loop {
                let got = self
                    .store
                    .get(Tenant::new(&tenant(k.0)), IdemKey::new(&key(k.1)))
                    .unwrap();
                if !matches!(got, Some(KeyState::Pending { .. })) || tries == 2000 {
                    break got;
                }
                tries += 1;
                std::thread::sleep(Duration::from_millis(1));
            };
            let until = expires_at.saturating_add(self.model.grace);
            if expires_at <= now && until > now {
                let refused = matches!(got, Some(KeyState::Expired(e)) if e.refused_until == until);
                prop_assert!(refused, "{:?} expired while kept: {:?}", k, got);
                self.model.keys.insert(
                    k,
                    State::Refused {
                        expired_at: expires_at,
                        until,
                    },
                );
            } else if expires_at <= now {
                prop_assert!(got.is_none(), "{:?} expired while kept: {:?}", k, got);
                self.model.keys.insert(k, State::Absent);
            } else {
                match got {
                    Some(KeyState::Completed(s)) => prop_assert_eq!(&s.response.body, &body),
                    other => prop_assert!(false, "kept {:?} not written: {:?}", k, other),
                }
                self.model.keys.insert(
                    k,
                    State::Completed {
                        fp,
                        body,
                        expires_at,
                    },
                );
            }
        }
        Ok(())
    }

    fn reserved(&mut self, k: Key, fp: u8, r: Reservation, now: Timestamp) {
        let id = self.model.next_holder;
        self.model.next_holder += 1;
        let lease_end = now.saturating_add(LEASE);
        assert_eq!(r.lease_end(), lease_end);
        self.model.keys.insert(
            k,
            State::Pending {
                holder: Some(id),
                fp,
                lease_end,
            },
        );
        self.model
            .volatile
            .entry(k)
            .or_default()
            .push((fp, lease_end));
        self.held.push(Held { id, key: k, fp, r });
    }

    /// After a clean restart: every reservation the report lists as
    /// abandoned with a running lease is one the model has (or may have)
    /// in flight with that lease, none is a key the model has completed,
    /// and every reservation the model has in flight whose lease still runs
    /// is listed.
    fn check_abandoned(&mut self, listed: &[idemstore::Abandoned]) -> Result<(), TestCaseError> {
        let now = self.clock.now();
        let mut seen = Vec::new();
        for a in listed {
            let k = (0..2u8)
                .flat_map(|t| (0..4u8).map(move |k| (t, k)))
                .find(|&(t, k)| {
                    a.tenant == idemstore::TenantDigest::of(tenant(t).as_bytes())
                        && a.key == key(k).as_bytes()
                });
            prop_assert!(k.is_some(), "abandoned key of no tenant: {:?}", a);
            let k = k.unwrap_or_default();
            seen.push(k);
            let ok = match self.model.keys.get(&k) {
                // No acknowledged completion is ever outranked.
                Some(State::Completed { .. }) => false,
                // A lease that ended: perhaps one a crash took the
                // successors of, which the model no longer tracks.
                _ if a.lease_end <= now => true,
                Some(State::Pending { lease_end, .. }) => *lease_end == a.lease_end,
                Some(State::Uncertain(c)) => c.iter().any(|(_, end)| *end == a.lease_end),
                _ => false,
            };
            prop_assert!(ok, "abandoned {:?}: model {:?}", k, self.model.keys.get(&k));
        }
        for (k, s) in &self.model.keys {
            if let State::Pending { lease_end, .. } = s
                && *lease_end > now
            {
                prop_assert!(seen.contains(k), "{:?} in flight but not listed", k);
            }
        }
        Ok(())
    }

    /// Whether `h` still holds its key in the model.
    fn owns(&mut self, h: &Held, now: Timestamp) -> bool {
        self.holds(h.key, h.id, now)
    }

    fn holds(&mut self, k: Key, id: u64, now: Timestamp) -> bool {
        matches!(self.model.state(k, now), State::Pending { holder: Some(h), .. } if h == id)
    }

    /// The process "dies" with its handlers mid-flight: their reservations
    /// stay on disk, abandoned.
    /// Returns the handles, to be dropped once the store is closed (their
    /// drop then writes nothing; forgetting them would leak the store).
    fn abandon_holders(&mut self) -> Vec<Reservation> {
        let mut dying = Vec::new();
        for h in self.held.drain(..) {
            if let Some(State::Pending { holder, .. }) = self.model.keys.get_mut(&h.key)
                && *holder == Some(h.id)
            {
                *holder = None;
            }
            dying.push(h.r);
        }
        dying
    }
}

/// 256 cases, or `PROPTEST_CASES` (which an explicit count would override).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(&ops, Duration::ZERO)?;
    }

    #[test]
    fn store_refusing_expired_keys_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(&ops, GRACE)?;
    }
}

/// Applies `ops` to a store (and the model) refusing expired keys for
/// `grace`; finally, every completion and refusal the model knows survives
/// one more crash.
fn run(ops: &[Op], grace: Duration) -> Result<(), TestCaseError> {
    let mut h = Harness::new(grace);
    for op in ops {
        h.apply(op)?;
    }
    h.apply(&Op::Crash { seed: 7 })?;
    let now = h.clock.now();
    let keys: Vec<Key> = h.model.keys.keys().copied().collect();
    for k in keys {
        let got = h
            .store
            .get(Tenant::new(&tenant(k.0)), IdemKey::new(&key(k.1)))
            .unwrap();
        match (h.model.state(k, now), got) {
            (State::Completed { body, .. }, Some(KeyState::Completed(s))) => {
                prop_assert_eq!(s.response.body, body)
            }
            (State::Completed { .. }, other) => {
                prop_assert!(
                    false,
                    "acknowledged completion of {:?} lost: {:?}",
                    k,
                    other
                )
            }
            (State::Refused { until, .. }, got) => {
                let refused = matches!(got, Some(KeyState::Expired(e)) if e.refused_until == until);
                prop_assert!(refused, "refusal of {:?} lost: {:?}", k, got)
            }
            _ => {}
        }
    }
    Ok(())
}

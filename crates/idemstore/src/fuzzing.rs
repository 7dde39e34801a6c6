//! Entry points for the cargo-fuzz targets in `fuzz/`, kept in the library so
//! that the corpus replay tests (`tests/fuzz_corpus.rs`) run the very same
//! checks on every CI run. Not part of the API.
//!
//! Each function takes arbitrary bytes and panics only when it finds a bug.

use crate::clock::{Clock, ManualClock, Timestamp};
use crate::config::Config;
use crate::format::frame::{self, Scanned, Scanner};
use crate::format::hint;
use crate::format::record::{self, Body, Pending, Record};
use crate::format::segment_header::SegmentHeader;
use crate::response::{Response, StoredResponse};
use crate::scope::{Fingerprint, TenantDigest};
use crate::scope::{Key, Tenant};
use crate::storage::{Fault, FaultOn, FaultyStorage, MemStorage};
use crate::store::{Begin, KeyState, Reservation, Store};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A little reader over fuzz input: every call succeeds (zeros past the end).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = usize::from(self.u8()).min(max).min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Target `codec`: the decoders never panic on any bytes, never accept a
/// frame whose checksums fail, and decode(encode(x)) == x for records built
/// from the input.
pub fn codec(data: &[u8]) {
    // Arbitrary bytes into every decoder.
    let _ = Record::decode(data);
    let _ = record::decode_head(data);
    let _ = SegmentHeader::decode(data);
    if let Ok((_, body)) = hint::decode(data) {
        for e in hint::entries(body) {
            let _ = e;
        }
    }
    for item in Scanner::new(data, 3, 40) {
        if let Scanned::Record { offset, payload } = item {
            assert!(matches!(
                frame::read(&data[offset..], 3, 40 + offset as u64),
                frame::Frame::Valid { payload: p, .. } if p == payload
            ));
        }
    }
    // A record built from the input roundtrips, framed and unframed.
    let mut inp = Input(data);
    let key = inp.bytes(300);
    let mut tenant = [0u8; 32];
    tenant[..8].copy_from_slice(&inp.u64().to_le_bytes());
    let body = match inp.u8() % 5 {
        0 => Body::Pending(Pending {
            fingerprint: Fingerprint([inp.u8(); 32]),
            started_at: Timestamp(inp.u64()),
            lease_end: Timestamp(inp.u64()),
        }),
        1 => Body::Aborted {
            lease_end: Timestamp(inp.u64()),
        },
        2 => Body::Purged {
            purged_at: Timestamp(inp.u64()),
            until: Timestamp(inp.u64()),
        },
        3 => Body::Expired {
            expired_at: Timestamp(inp.u64()),
            until: Timestamp(inp.u64()),
        },
        _ => {
            let mut r = Response::new(inp.u16(), inp.bytes(255));
            for _ in 0..inp.u8() % 4 {
                let name = String::from_utf8_lossy(&inp.bytes(20)).into_owned();
                r.headers.push((name, inp.bytes(40)));
            }
            Body::Completed(StoredResponse {
                fingerprint: Fingerprint([inp.u8(); 32]),
                started_at: Timestamp(inp.u64()),
                completed_at: Timestamp(inp.u64()),
                expires_at: Timestamp(inp.u64()),
                response: r,
            })
        }
    };
    let rec = Record {
        seq: inp.u64(),
        tenant: TenantDigest(tenant),
        key,
        token: inp.u64(),
        body,
    };
    let mut buf = Vec::new();
    let start = frame::begin(&mut buf);
    record::encode_parts(
        &mut buf,
        rec.seq,
        &rec.tenant,
        &rec.key,
        rec.token,
        &rec.body,
    );
    frame::finish(&mut buf, start);
    frame::seal(&mut buf, 9, 4096);
    let frame::Frame::Valid { payload, total } = frame::read(&buf, 9, 4096) else {
        panic!("a sealed frame must read back")
    };
    assert_eq!(total, buf.len());
    assert_eq!(Record::decode(payload).as_ref(), Ok(&rec));
    let header = SegmentHeader {
        id: u32::from(inp.u16()),
        bucket_start: Timestamp(1000),
        bucket_end: Timestamp(2000),
    };
    assert_eq!(SegmentHeader::decode(&header.encode()), Ok(header));
    // A hint file built from the input roundtrips.
    let (h, entries) = fuzz_hint(
        &mut inp,
        header.id,
        crate::hints::segment_crc(&header),
        4096,
    );
    let bytes = hint::encode(&h, &entries);
    let (h2, body) = hint::decode(&bytes).expect("an encoded hint decodes");
    assert_eq!(h2, h);
    let back: Vec<hint::Entry> = hint::entries(body).map(|e| e.expect("entry")).collect();
    assert_eq!(back, entries);
}

/// A hint for segment `id` whose entries come from the input, some of them
/// for the keys the recovery target looks up.
fn fuzz_hint(
    inp: &mut Input<'_>,
    id: u32,
    segment_crc: u32,
    covered: u64,
) -> (hint::Header, Vec<hint::Entry>) {
    let tenant = TenantDigest::of(b"t");
    let keys = ["k", "k0", "key-1"];
    let n = usize::from(inp.u8() % 8);
    let entries: Vec<hint::Entry> = (0..n)
        .map(|_| {
            let pick = inp.u8();
            let key = match keys.get(usize::from(pick % 4)) {
                Some(k) => crate::scope::default_index_hash(&tenant, k.as_bytes()),
                None => crate::scope::IndexKey {
                    hi: inp.u64(),
                    lo: inp.u64(),
                },
            };
            hint::Entry {
                key,
                seq: inp.u64(),
                live_until: Timestamp(T0.0 + u64::from(inp.u16()) * 1000),
                offset: u32::from(inp.u16()),
                kind: match inp.u8() % 5 {
                    0 => record::Kind::Pending,
                    1 => record::Kind::Completed,
                    2 => record::Kind::Purged,
                    3 => record::Kind::Expired,
                    _ => record::Kind::Aborted,
                },
            }
        })
        .collect();
    let header = hint::Header {
        segment_id: id,
        segment_crc,
        covered,
        max_seq: inp.u64(),
        records: entries.len() as u64 + u64::from(inp.u8()),
        probe: crate::hints::probe(crate::scope::default_index_hash),
    };
    (header, entries)
}

const T0: Timestamp = Timestamp(1_800_000_000_000);

/// Target `recovery`: any bytes as the segment files of a store directory;
/// open never panics, and whatever it serves decodes and belongs to the key
/// it is served for.
pub fn recovery(data: &[u8]) {
    let st = MemStorage::new();
    let mut inp = Input(data);
    let files = usize::from(inp.u8() % 3) + 1;
    let mut names = Vec::new();
    for i in 0..files {
        let header = SegmentHeader {
            id: u32::try_from(i + 1).unwrap_or(1),
            bucket_start: T0,
            bucket_end: Timestamp(T0.0 + 3_600_000),
        };
        let name = header.file_name();
        let mut bytes = Vec::new();
        if inp.u8() % 2 == 0 {
            // Start from a valid header so the frames get looked at.
            bytes.extend_from_slice(&header.encode());
        }
        let hint_mode = inp.u8() % 4;
        let chunk = inp.0.len() / (files - i);
        bytes.extend_from_slice(&inp.0[..chunk]);
        inp.0 = &inp.0[chunk..];
        // Sometimes a hint beside it: one that matches (checksums and all,
        // its entries pointing anywhere), or garbage.
        if let Some(hint_name) = hint::name_for(&name) {
            match hint_mode {
                0 => {
                    let crc = crate::hints::segment_crc(&header);
                    let (h, e) = fuzz_hint(&mut inp, header.id, crc, bytes.len() as u64);
                    st.put_file(&hint_name, hint::encode(&h, &e));
                }
                1 => st.put_file(&hint_name, inp.bytes(200)),
                _ => {}
            }
        }
        st.put_file(&name, bytes);
        names.push(name);
    }
    let clock = ManualClock::new(T0);
    let Ok(store) =
        Store::open_with_storage(Arc::new(st), Config::default().clock(Arc::new(clock)))
    else {
        return; // a clean refusal (e.g. a newer format) is fine
    };
    let rep = store.recovery_report();
    assert!(rep.completed_live + rep.pending_live <= rep.records_read);
    for key in ["k", "k0", "key-1"] {
        // Reads check checksums, tenant digest and key before serving.
        let _ = store.get(Tenant::new("t"), Key::new(key));
        let _ = store.begin(Tenant::new("t"), Key::new(key), Fingerprint::of(b"r"));
    }
    let _ = store.close();
}

/// Target `operations`: a sequence of begin / complete / abort / renew /
/// clock advance / restart / power cut / injected I/O error, checked against
/// two invariants of the contract: at most one live reservation per key, and
/// every completion acknowledged in `Sync` mode replays after anything.
pub fn operations(data: &[u8]) {
    let clock = ManualClock::new(T0);
    let config = Config::default()
        .clock(Arc::new(clock.clone()))
        .lease(Duration::from_secs(60))
        .retention(Duration::from_secs(7200))
        .bucket_width(Duration::from_secs(600))
        .write_retry_interval(Duration::ZERO)
        .max_record_bytes(1024)
        .max_segment_bytes(4096);
    let mut mem = MemStorage::new();
    let mut disk = FaultyStorage::new(Arc::new(mem.clone()));
    let Ok(mut store) = Store::open_with_storage(Arc::new(disk.clone()), config.clone()) else {
        return;
    };
    // Acknowledged completions: key -> (body, expires_at).
    let mut acked: HashMap<String, (Vec<u8>, Timestamp)> = HashMap::new();
    let mut held: Vec<(String, Reservation)> = Vec::new();
    let mut inp = Input(data);
    while !inp.is_empty() {
        let op = inp.u8();
        let key = format!("k{}", inp.u8() % 4);
        match op % 9 {
            0 | 1 => match store.begin(Tenant::new("t"), Key::new(&key), Fingerprint::of(b"r")) {
                Ok(Begin::Reserved(r)) => {
                    let live = held
                        .iter()
                        .any(|(k, h)| *k == key && clock.now() < h.lease_end());
                    assert!(!live, "two live reservations for {key}");
                    assert!(
                        acked.get(&key).is_none_or(|(_, exp)| clock.now() >= *exp),
                        "{key} reserved again while its completion lives"
                    );
                    held.push((key, r));
                }
                Ok(Begin::Replay(s)) => {
                    if let Some((body, _)) = acked.get(&key) {
                        assert_eq!(&s.response.body, body);
                    }
                }
                _ => {}
            },
            2 | 3 => {
                if !held.is_empty() {
                    let (k, r) = held.swap_remove(usize::from(op) % held.len());
                    let body = vec![op; usize::from(op % 50)];
                    let now = clock.now();
                    if r.complete(Response::new(200, body.clone())).is_ok() {
                        acked.insert(k, (body, now.saturating_add(Duration::from_secs(7200))));
                    }
                }
            }
            4 => {
                if !held.is_empty() {
                    let (_, r) = held.swap_remove(usize::from(op) % held.len());
                    let _ = r.abort();
                }
            }
            5 => {
                if let Some((_, r)) = held.first_mut() {
                    let _ = r.renew();
                }
            }
            6 => clock.advance(Duration::from_secs(u64::from(inp.u8()) * 30)),
            7 => {
                let on = if inp.u8() % 2 == 0 {
                    FaultOn::Write
                } else {
                    FaultOn::Sync
                };
                disk.faults().inject(Fault {
                    on,
                    after: u64::from(inp.u8() % 4),
                    errno: crate::storage::ENOSPC,
                });
            }
            _ => {
                // Restart (clean) or power cut; the store comes back healed.
                // The holders die with the process: dropped only once the
                // store is closed, so their reservations stay on disk.
                let dying = std::mem::take(&mut held);
                let crash = inp.u8() % 2 == 0;
                if crash {
                    let image = mem.crash(u64::from(inp.u8()));
                    let _ = store.close();
                    mem = image;
                } else if store.close().is_err() {
                    // A failed flush may lose only what was not acknowledged.
                    mem = mem.crash(0);
                }
                drop(dying);
                disk = FaultyStorage::new(Arc::new(mem.clone()));
                store = Store::open_with_storage(Arc::new(disk.clone()), config.clone())
                    .unwrap_or_else(|e| panic!("reopen failed: {e}"));
                let now = clock.now();
                for (k, (body, exp)) in &acked {
                    if now < *exp {
                        match store.get(Tenant::new("t"), Key::new(k)) {
                            Ok(Some(KeyState::Completed(s))) => assert_eq!(&s.response.body, body),
                            other => panic!("acknowledged {k} lost: {other:?}"),
                        }
                    }
                }
            }
        }
    }
    let _ = store.close();
    drop(held);
}

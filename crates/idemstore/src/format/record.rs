//! Record payloads: what goes inside a frame (see frame.rs).
//!
//! Every record starts with the same head, so that recovery can index a
//! record without decoding its response:
//!
//! ```text
//! offset  size  field
//! 0       1     kind            1 = pending, 2 = completed, 3 = aborted,
//!                               4 = purged, 5 = expired (a tombstone)
//! 1       1     record version  1; 2 for a purged record, 3 for a tombstone
//! 2       8     seq             store-wide sequence number; higher wins
//! 10      32    tenant digest   blake3 of the tenant identity
//! 42      2     key_len         u16
//! 44      k     key             the idempotency key, as sent
//! 44+k    8     token           fencing token of the reservation
//! ```
//!
//! then, by kind (all integers little-endian, times in ms since the epoch):
//!
//! ```text
//! pending:    fingerprint[32] started_at u64 lease_end u64
//! aborted:    lease_end u64
//! purged:     purged_at u64 until u64   (version 2)
//! expired:    expired_at u64 until u64  (version 3)
//! completed:  fingerprint[32] started_at u64 completed_at u64 expires_at u64
//!             status u16 header_count u16
//!             header_count x (name_len u16, name, value_len u32, value)
//!             body_len u32, body
//! ```

use super::primitive::{Dec, DecodeError, Enc, err};
use crate::clock::Timestamp;
use crate::response::{Response, StoredResponse};
use crate::scope::{Fingerprint, TenantDigest};
use std::time::Duration;

/// The newest record version this build reads. Version 2 added the purged
/// kind, version 3 the expired kind (tombstones); every other kind is still
/// written as version 1, so an older build opens a store that holds none of
/// the newer kinds, and refuses (naming the version) one that does.
pub(crate) const VERSION: u8 = 3;

/// The version a record of `kind` is written with.
fn version_of(kind: Kind) -> u8 {
    match kind {
        Kind::Purged => 2,
        Kind::Expired => 3,
        Kind::Pending | Kind::Completed | Kind::Aborted => 1,
    }
}

/// Record kind byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Pending = 1,
    Completed = 2,
    Aborted = 3,
    /// An operator removed the key's completed record before its expiry.
    Purged = 4,
    /// A tombstone: the key's completion expired, and a request with the
    /// key is refused until `until` (`Config::refuse_expired_keys_for`).
    Expired = 5,
}

impl Kind {
    /// Until when a record of this kind whose head says `live_until` still
    /// means something, with expired keys refused for `grace` (zero: not at
    /// all): a completion until its expiry plus the grace, a tombstone
    /// until its end while tombstones are on (never when off), anything
    /// else until `live_until`.
    pub(crate) fn meaningful_until(self, live_until: Timestamp, grace: Duration) -> Timestamp {
        match self {
            Kind::Completed => live_until.saturating_add(grace),
            Kind::Expired if grace.is_zero() => Timestamp(0),
            Kind::Expired | Kind::Pending | Kind::Aborted | Kind::Purged => live_until,
        }
    }

    fn from_u8(b: u8) -> Result<Kind, DecodeError> {
        match b {
            1 => Ok(Kind::Pending),
            2 => Ok(Kind::Completed),
            3 => Ok(Kind::Aborted),
            4 => Ok(Kind::Purged),
            5 => Ok(Kind::Expired),
            other => err(format!("unknown record kind {other}")),
        }
    }
}

/// The fields every record has, decoded without touching the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Head<'a> {
    pub(crate) kind: Kind,
    pub(crate) seq: u64,
    pub(crate) tenant: TenantDigest,
    pub(crate) key: &'a [u8],
    pub(crate) token: u64,
    /// Pending: lease end. Aborted: the aborted lease's end. Completed: the
    /// record's expiry. Purged: the purged record's expiry. Expired: the
    /// end of the tombstone's grace. After this
    /// instant the record means nothing.
    pub(crate) live_until: Timestamp,
}

/// A reservation as written to the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) started_at: Timestamp,
    pub(crate) lease_end: Timestamp,
}

/// A whole record, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Body {
    Pending(Pending),
    Completed(StoredResponse),
    Aborted {
        lease_end: Timestamp,
    },
    /// The key's completion was purged at `purged_at`; `until` is that
    /// completion's expiry (the purge must outlive it, and does: it goes to
    /// the same bucket).
    Purged {
        purged_at: Timestamp,
        until: Timestamp,
    },
    /// The key's completion expired at `expired_at`; a request with the key
    /// is refused until `until`.
    Expired {
        expired_at: Timestamp,
        until: Timestamp,
    },
}

impl Body {
    /// The record kind, and the instant after which the record means nothing
    /// (its head's `live_until`).
    pub(crate) fn kind_and_live_until(&self) -> (Kind, Timestamp) {
        match self {
            Body::Pending(p) => (Kind::Pending, p.lease_end),
            Body::Completed(r) => (Kind::Completed, r.expires_at),
            Body::Aborted { lease_end } => (Kind::Aborted, *lease_end),
            Body::Purged { until, .. } => (Kind::Purged, *until),
            Body::Expired { until, .. } => (Kind::Expired, *until),
        }
    }
}

/// A whole record with its head fields owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) tenant: TenantDigest,
    pub(crate) key: Vec<u8>,
    pub(crate) token: u64,
    pub(crate) body: Body,
}

impl Body {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Body::Pending(_) => Kind::Pending,
            Body::Completed(_) => Kind::Completed,
            Body::Aborted { .. } => Kind::Aborted,
            Body::Purged { .. } => Kind::Purged,
            Body::Expired { .. } => Kind::Expired,
        }
    }
}

impl Record {
    /// Appends the payload encoding to `out`.
    #[cfg(test)]
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        encode_parts(
            out,
            self.seq,
            &self.tenant,
            &self.key,
            self.token,
            &self.body,
        );
    }

    /// Decodes a whole payload.
    pub(crate) fn decode(payload: &[u8]) -> Result<Record, DecodeError> {
        let mut d = Dec::new(payload);
        let (kind, seq, tenant, key, token) = decode_common(&mut d)?;
        let body = match kind {
            Kind::Pending => Body::Pending(Pending {
                fingerprint: Fingerprint(d.array("fingerprint")?),
                started_at: Timestamp(d.u64("started_at")?),
                lease_end: Timestamp(d.u64("lease_end")?),
            }),
            Kind::Aborted => Body::Aborted {
                lease_end: Timestamp(d.u64("lease_end")?),
            },
            Kind::Completed => Body::Completed(decode_completed(&mut d)?),
            Kind::Purged => Body::Purged {
                purged_at: Timestamp(d.u64("purged_at")?),
                until: Timestamp(d.u64("until")?),
            },
            Kind::Expired => Body::Expired {
                expired_at: Timestamp(d.u64("expired_at")?),
                until: Timestamp(d.u64("until")?),
            },
        };
        d.finish("record")?;
        Ok(Record {
            seq,
            tenant,
            key: key.to_vec(),
            token,
            body,
        })
    }
}

/// Encodes a record whose head is borrowed (the hot path: no copies of key or
/// response).
pub(crate) fn encode_parts(
    out: &mut Vec<u8>,
    seq: u64,
    tenant: &TenantDigest,
    key: &[u8],
    token: u64,
    body: &Body,
) {
    let mut e = Enc(out);
    e.u8(body.kind() as u8);
    e.u8(version_of(body.kind()));
    e.u64(seq);
    e.bytes(&tenant.0);
    // Key length is bounded by Config (at most u16::MAX) before we get here.
    e.u16(u16::try_from(key.len()).unwrap_or(u16::MAX));
    e.bytes(key);
    e.u64(token);
    match body {
        Body::Pending(p) => {
            e.bytes(&p.fingerprint.0);
            e.u64(p.started_at.0);
            e.u64(p.lease_end.0);
        }
        Body::Aborted { lease_end } => e.u64(lease_end.0),
        Body::Purged {
            purged_at: at,
            until,
        }
        | Body::Expired {
            expired_at: at,
            until,
        } => {
            e.u64(at.0);
            e.u64(until.0);
        }
        Body::Completed(c) => encode_completed(&mut e, c),
    }
}

fn encode_completed(e: &mut Enc<'_>, c: &StoredResponse) {
    e.bytes(&c.fingerprint.0);
    e.u64(c.started_at.0);
    e.u64(c.completed_at.0);
    e.u64(c.expires_at.0);
    e.u16(c.response.status);
    // Counts and lengths are validated by `encoded_len_check` first.
    e.u16(u16::try_from(c.response.headers.len()).unwrap_or(u16::MAX));
    for (name, value) in &c.response.headers {
        e.u16(u16::try_from(name.len()).unwrap_or(u16::MAX));
        e.bytes(name.as_bytes());
        e.u32(u32::try_from(value.len()).unwrap_or(u32::MAX));
        e.bytes(value);
    }
    e.u32(u32::try_from(c.response.body.len()).unwrap_or(u32::MAX));
    e.bytes(&c.response.body);
}

/// Why a response cannot be encoded, if it cannot (fields wider than the
/// format's length prefixes).
pub(crate) fn unencodable(r: &Response) -> Option<String> {
    if r.headers.len() > usize::from(u16::MAX) {
        return Some(format!("{} headers (at most 65535)", r.headers.len()));
    }
    for (n, v) in &r.headers {
        if n.len() > usize::from(u16::MAX) {
            return Some("a header name longer than 65535 bytes".into());
        }
        if u32::try_from(v.len()).is_err() {
            return Some("a header value longer than 4 GiB".into());
        }
    }
    if u32::try_from(r.body.len()).is_err() {
        return Some("a body longer than 4 GiB".into());
    }
    None
}

/// Size of the payload for a completed record, without encoding it.
pub(crate) fn completed_payload_len(key_len: usize, r: &Response) -> usize {
    let headers: usize = r
        .headers
        .iter()
        .map(|(n, v)| 2 + n.len() + 4 + v.len())
        .sum();
    44 + key_len + 8 + 32 + 24 + 2 + 2 + headers + 4 + r.body.len()
}

fn decode_common<'a>(
    d: &mut Dec<'a>,
) -> Result<(Kind, u64, TenantDigest, &'a [u8], u64), DecodeError> {
    let kind = Kind::from_u8(d.u8("kind")?)?;
    let version = d.u8("version")?;
    if version > VERSION || version == 0 {
        return err(format!(
            "record version {version} is not supported by this build (supports 1..={VERSION})"
        ));
    }
    if version < version_of(kind) {
        return err(format!(
            "record kind {} needs record version {}, found {version}",
            kind as u8,
            version_of(kind)
        ));
    }
    let seq = d.u64("seq")?;
    let tenant = TenantDigest(d.array("tenant digest")?);
    let key_len = usize::from(d.u16("key length")?);
    let key = d.take(key_len, "key")?;
    let token = d.u64("token")?;
    Ok((kind, seq, tenant, key, token))
}

fn decode_completed(d: &mut Dec<'_>) -> Result<StoredResponse, DecodeError> {
    let fingerprint = Fingerprint(d.array("fingerprint")?);
    let started_at = Timestamp(d.u64("started_at")?);
    let completed_at = Timestamp(d.u64("completed_at")?);
    let expires_at = Timestamp(d.u64("expires_at")?);
    let status = d.u16("status")?;
    let count = usize::from(d.u16("header count")?);
    // Each header takes at least 6 bytes: never reserve more than the input
    // could hold.
    let mut headers = Vec::with_capacity(count.min(d.remaining() / 6));
    for _ in 0..count {
        let n = usize::from(d.u16("header name length")?);
        let name = d.take(n, "header name")?;
        let name = std::str::from_utf8(name)
            .map_err(|_| DecodeError("header name is not UTF-8".into()))?
            .to_owned();
        let v = d.u32("header value length")? as usize;
        let value = d.take(v, "header value")?.to_vec();
        headers.push((name, value));
    }
    let b = d.u32("body length")? as usize;
    let body = d.take(b, "body")?.to_vec();
    Ok(StoredResponse {
        fingerprint,
        started_at,
        completed_at,
        expires_at,
        response: Response {
            status,
            headers,
            body,
        },
    })
}

/// Decodes only the head of a payload (recovery's fast path).
pub(crate) fn decode_head(payload: &[u8]) -> Result<Head<'_>, DecodeError> {
    let mut d = Dec::new(payload);
    let (kind, seq, tenant, key, token) = decode_common(&mut d)?;
    let live_until = match kind {
        Kind::Pending => {
            d.take(32 + 8, "pending fields")?;
            d.u64("lease_end")?
        }
        Kind::Aborted => d.u64("lease_end")?,
        Kind::Purged => {
            d.u64("purged_at")?;
            d.u64("until")?
        }
        Kind::Expired => {
            d.u64("expired_at")?;
            d.u64("until")?
        }
        Kind::Completed => {
            d.take(32 + 8 + 8, "completed fields")?;
            d.u64("expires_at")?
        }
    };
    Ok(Head {
        kind,
        seq,
        tenant,
        key,
        token,
        live_until: Timestamp(live_until),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        let tenant = TenantDigest([9; 32]);
        vec![
            Record {
                seq: 7,
                tenant,
                key: b"key-1".to_vec(),
                token: 7,
                body: Body::Pending(Pending {
                    fingerprint: Fingerprint([1; 32]),
                    started_at: Timestamp(1_000),
                    lease_end: Timestamp(61_000),
                }),
            },
            Record {
                seq: 8,
                tenant,
                key: vec![],
                token: 7,
                body: Body::Aborted {
                    lease_end: Timestamp(61_000),
                },
            },
            Record {
                seq: 9,
                tenant,
                key: b"key-2".to_vec(),
                token: 4,
                body: Body::Purged {
                    purged_at: Timestamp(70_000),
                    until: Timestamp(86_400_006),
                },
            },
            Record {
                seq: 10,
                tenant,
                key: b"key-3".to_vec(),
                token: 5,
                body: Body::Expired {
                    expired_at: Timestamp(86_400_006),
                    until: Timestamp(90_000_000),
                },
            },
            Record {
                seq: u64::MAX,
                tenant,
                key: vec![b'k'; 255],
                token: 3,
                body: Body::Completed(StoredResponse {
                    fingerprint: Fingerprint([2; 32]),
                    started_at: Timestamp(5),
                    completed_at: Timestamp(6),
                    expires_at: Timestamp(86_400_006),
                    response: Response::new(201, b"{\"id\":1}".to_vec())
                        .with_header("content-type", b"application/json".to_vec())
                        .with_header("x-empty", Vec::new()),
                }),
            },
        ]
    }

    #[test]
    fn roundtrip() {
        for r in samples() {
            let mut buf = Vec::new();
            r.encode_into(&mut buf);
            assert_eq!(Record::decode(&buf).unwrap(), r);
            let head = decode_head(&buf).unwrap();
            assert_eq!(head.seq, r.seq);
            assert_eq!(head.key, &r.key[..]);
            assert_eq!(head.token, r.token);
            let expected_until = match &r.body {
                Body::Pending(p) => p.lease_end,
                Body::Aborted { lease_end } => *lease_end,
                Body::Purged { until, .. } | Body::Expired { until, .. } => *until,
                Body::Completed(c) => c.expires_at,
            };
            assert_eq!(head.live_until, expected_until);
            if let Body::Completed(c) = &r.body {
                assert_eq!(completed_payload_len(r.key.len(), &c.response), buf.len());
            }
        }
    }

    #[test]
    fn detect_corruption_truncation_and_trailing_bytes() {
        for r in samples() {
            let mut buf = Vec::new();
            r.encode_into(&mut buf);
            for cut in 0..buf.len() {
                assert!(Record::decode(&buf[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = buf.clone();
            longer.push(0);
            assert!(Record::decode(&longer).is_err());
            let mut bad_kind = buf.clone();
            bad_kind[0] = 9;
            assert!(Record::decode(&bad_kind).is_err());
            let mut bad_version = buf.clone();
            bad_version[1] = VERSION + 1;
            assert!(decode_head(&bad_version).is_err());
            bad_version[1] = 0;
            assert!(decode_head(&bad_version).is_err());
        }
    }

    #[test]
    fn only_a_purge_and_a_tombstone_are_written_above_version_1() {
        for r in samples() {
            let mut buf = Vec::new();
            r.encode_into(&mut buf);
            let version = match r.body {
                Body::Purged { .. } => 2,
                Body::Expired { .. } => 3,
                _ => 1,
            };
            assert_eq!(buf[1], version);
            if version > 1 {
                // A record claiming an older version than its kind needs
                // was never written by any build.
                buf[1] = version - 1;
                assert!(Record::decode(&buf).is_err());
            }
        }
    }

    #[test]
    fn huge_declared_counts_do_not_allocate() {
        // A completed record claiming 65535 headers with nothing behind them.
        let mut buf = Vec::new();
        samples()[4].encode_into(&mut buf);
        let count_at = 44 + 255 + 8 + 32 + 24 + 2;
        buf[count_at..count_at + 2].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(Record::decode(&buf).is_err());
    }
}

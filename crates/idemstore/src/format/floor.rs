//! The sequence floor file: a lower bound for the next sequence number that
//! outlives the segments, so that fencing tokens never go backwards when
//! expiry deletes the records that held the highest sequence numbers. It
//! also keeps the store's grace for expired keys
//! ([`Config::refuse_expired_keys_for`](crate::Config::refuse_expired_keys_for)),
//! which decides what recovery and the compactor may delete.
//!
//! The file (`SEQFLOOR`, 8 KiB) holds two slots, at offsets 0 and 4096, in
//! different pages and sectors; each slot:
//!
//! ```text
//! offset  size  field
//! 0       8     magic           b"IDEMFLR\0"
//! 8       2     format version  u16 LE, 1 or 2
//! 10      2     slot length     u16 LE, 28 (version 1) or 40 (version 2)
//! 12      4     reserved        zero
//! 16      8     floor           u64 LE: every sequence number the store had
//!                               used when the slot was written is below it
//! 24      4     crc             CRC-32 (IEEE) of bytes 0..24
//! version 2 goes on:
//! 28      8     grace           u64 LE, milliseconds: expired keys are
//!                               refused this long (above zero)
//! 36      4     crc             CRC-32 (IEEE) of bytes 0..36
//! ```
//!
//! A slot without a grace is written as version 1, so a store that never
//! refused expired keys opens with builds that predate the grace. A version
//! 2 slot starts as a version 1 slot does, checksum included, so such a
//! build finds it intact and refuses the store (a newer floor version)
//! instead of reading it as damaged and having the refused keys run again.
//!
//! The floor is the highest of the intact slots, and the grace is the one
//! that slot holds (a change of grace raises the floor, so the slots never
//! tie). A new floor overwrites the slot that does not hold the current
//! one, so a write torn by a crash damages only a slot that no longer
//! mattered.

use super::primitive::{Dec, DecodeError, Enc, err};

const MAGIC: &[u8; 8] = b"IDEMFLR\0";
/// The newest floor format version this build writes (for a slot with a
/// grace; one without is written as version 1).
pub(crate) const VERSION: u16 = 2;
const LEN_V1: u16 = 28;
const LEN_V2: u16 = 40;
/// Room for the longest slot.
pub(crate) const LEN: usize = LEN_V2 as usize;
/// The floor file's name.
pub(crate) const FILE_NAME: &str = "SEQFLOOR";
/// Where the two slots start.
pub(crate) const SLOTS: [u64; 2] = [0, 4096];
/// Length of the floor file.
pub(crate) const FILE_LEN: u64 = 8192;

/// Encodes a slot: version 1 without a grace (`grace_ms` 0), else version
/// 2. Bytes past the slot's length are zero.
pub(crate) fn encode(floor: u64, grace_ms: u64) -> [u8; LEN] {
    let mut v = Vec::with_capacity(LEN);
    let mut e = Enc(&mut v);
    e.bytes(MAGIC);
    let (version, len) = if grace_ms == 0 {
        (1, LEN_V1)
    } else {
        (2, LEN_V2)
    };
    e.u16(version);
    e.u16(len);
    e.u32(0);
    e.u64(floor);
    let crc = crc32fast::hash(&v);
    Enc(&mut v).u32(crc);
    if grace_ms != 0 {
        Enc(&mut v).u64(grace_ms);
        let crc = crc32fast::hash(&v);
        Enc(&mut v).u32(crc);
    }
    let mut out = [0u8; LEN];
    out[..v.len()].copy_from_slice(&v);
    out
}

/// What a slot holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A floor this build reads, and the grace in milliseconds (0: none).
    Floor {
        /// The floor.
        floor: u64,
        /// The grace for expired keys, in milliseconds; 0 without one.
        grace_ms: u64,
    },
    /// An intact file of a newer format version.
    Newer(u16),
}

/// Decodes a slot (`buf` holds [`LEN`] bytes: a version 1 slot and the
/// zeros after it).
pub(crate) fn decode(buf: &[u8]) -> Result<Decoded, DecodeError> {
    if buf.len() != LEN {
        return err(format!("floor slot: {} bytes, expected {LEN}", buf.len()));
    }
    let mut d = Dec::new(buf);
    if &d.array::<8>("magic")? != MAGIC {
        return err("not a floor slot (bad magic)");
    }
    let version = d.u16("version")?;
    let len = d.u16("length")?;
    let _reserved = d.u32("reserved")?;
    let floor = d.u64("floor")?;
    let crc = d.u32("crc")?;
    if crc != crc32fast::hash(&buf[..24]) {
        return err("floor slot checksum mismatch");
    }
    if version > VERSION {
        return Ok(Decoded::Newer(version));
    }
    let grace_ms = match (version, len) {
        (1, LEN_V1) => 0,
        (2, LEN_V2) => {
            let grace_ms = d.u64("grace")?;
            if d.u32("crc")? != crc32fast::hash(&buf[..36]) {
                return err("floor slot checksum mismatch (grace)");
            }
            if grace_ms == 0 {
                return err("floor slot of version 2 without a grace");
            }
            grace_ms
        }
        _ => return err(format!("floor slot version {version}, length {len}")),
    };
    Ok(Decoded::Floor { floor, grace_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        for (floor, grace_ms) in [(1234, 0), (u64::MAX, 0), (7, 1000), (u64::MAX, u64::MAX)] {
            assert_eq!(
                decode(&encode(floor, grace_ms)),
                Ok(Decoded::Floor { floor, grace_ms })
            );
        }
        assert!(decode(&[0; LEN]).is_err());
        // Without a grace, exactly what a build of floor version 1 writes.
        assert_eq!(
            encode(5, 0)[usize::from(LEN_V1)..],
            [0; LEN - LEN_V1 as usize]
        );
        // The slots are in different 4 KiB pages (and sectors).
        assert!(SLOTS[1] - SLOTS[0] >= 4096 && SLOTS[1] + LEN as u64 <= FILE_LEN);
    }

    #[test]
    fn detect_corruption_and_newer_versions() {
        for grace_ms in [0, 60_000] {
            let good = encode(99, grace_ms);
            let len = if grace_ms == 0 { LEN_V1 } else { LEN_V2 };
            for i in 0..usize::from(len) {
                let mut b = good;
                b[i] ^= 0x10;
                assert!(decode(&b).is_err(), "flipped byte {i} went unnoticed");
            }
            assert!(decode(&good[..LEN - 1]).is_err());
        }
        let mut newer = encode(99, 0);
        newer[8] = 3;
        let crc = crc32fast::hash(&newer[..24]).to_le_bytes();
        newer[24..28].copy_from_slice(&crc);
        assert_eq!(decode(&newer), Ok(Decoded::Newer(3)));
    }

    #[test]
    fn a_slot_with_a_grace_reads_as_a_newer_version_to_a_floor_v1_reader() {
        // What a build of floor version 1 checks: bytes 0..24, crc at 24,
        // then the version.
        let b = encode(99, 60_000);
        assert_eq!(b[24..28], crc32fast::hash(&b[..24]).to_le_bytes());
        assert_eq!(u16::from_le_bytes([b[8], b[9]]), 2);
    }
}

//! The sequence floor file: a lower bound for the next sequence number that
//! outlives the segments, so that fencing tokens never go backwards when
//! expiry deletes the records that held the highest sequence numbers.
//!
//! The file (`SEQFLOOR`, 8 KiB) holds two slots, at offsets 0 and 4096, in
//! different pages and sectors; each slot:
//!
//! ```text
//! offset  size  field
//! 0       8     magic           b"IDEMFLR\0"
//! 8       2     format version  u16 LE, currently 1
//! 10      2     slot length     u16 LE, 28
//! 12      4     reserved        zero
//! 16      8     floor           u64 LE: every sequence number the store had
//!                               used when the slot was written is below it
//! 24      4     crc             CRC-32 (IEEE) of bytes 0..24
//! ```
//!
//! The floor is the highest of the intact slots. A new floor overwrites the
//! slot that does not hold the current one, so a write torn by a crash
//! damages only a slot that no longer mattered.

use super::primitive::{Dec, DecodeError, Enc, err};

const MAGIC: &[u8; 8] = b"IDEMFLR\0";
/// Floor format version written by this build.
pub(crate) const VERSION: u16 = 1;
const LEN_U16: u16 = 28;
/// Length of a slot.
pub(crate) const LEN: usize = LEN_U16 as usize;
const CRC_OFFSET: usize = 24;
/// The floor file's name.
pub(crate) const FILE_NAME: &str = "SEQFLOOR";
/// Where the two slots start.
pub(crate) const SLOTS: [u64; 2] = [0, 4096];
/// Length of the floor file.
pub(crate) const FILE_LEN: u64 = 8192;

/// Encodes a slot.
pub(crate) fn encode(floor: u64) -> [u8; LEN] {
    let mut v = Vec::with_capacity(LEN);
    let mut e = Enc(&mut v);
    e.bytes(MAGIC);
    e.u16(VERSION);
    e.u16(LEN_U16);
    e.u32(0);
    e.u64(floor);
    let crc = crc32fast::hash(&v[..CRC_OFFSET]);
    Enc(&mut v).u32(crc);
    let mut out = [0u8; LEN];
    out.copy_from_slice(&v);
    out
}

/// What a slot holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A floor this build reads.
    Floor(u64),
    /// An intact file of a newer format version.
    Newer(u16),
}

/// Decodes a slot.
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
    if crc != crc32fast::hash(&buf[..CRC_OFFSET]) {
        return err("floor slot checksum mismatch");
    }
    if version > VERSION {
        return Ok(Decoded::Newer(version));
    }
    if version != VERSION || usize::from(len) != LEN {
        return err(format!("floor slot version {version}, length {len}"));
    }
    Ok(Decoded::Floor(floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        assert_eq!(decode(&encode(1234)), Ok(Decoded::Floor(1234)));
        assert_eq!(decode(&encode(u64::MAX)), Ok(Decoded::Floor(u64::MAX)));
        assert!(decode(&[0; LEN]).is_err());
        // The slots are in different 4 KiB pages (and sectors).
        assert!(SLOTS[1] - SLOTS[0] >= 4096 && SLOTS[1] + LEN as u64 <= FILE_LEN);
    }

    #[test]
    fn detect_corruption_and_newer_versions() {
        let good = encode(99);
        for i in 0..LEN {
            let mut b = good;
            b[i] ^= 0x10;
            assert!(decode(&b).is_err(), "flipped byte {i} went unnoticed");
        }
        assert!(decode(&good[..LEN - 1]).is_err());
        let mut newer = good;
        newer[8] = 2;
        let crc = crc32fast::hash(&newer[..CRC_OFFSET]).to_le_bytes();
        newer[CRC_OFFSET..].copy_from_slice(&crc);
        assert_eq!(decode(&newer), Ok(Decoded::Newer(2)));
    }
}

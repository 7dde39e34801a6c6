//! Sequence floor files: a lower bound for the next sequence number that
//! outlives the segments, so that fencing tokens never go backwards when
//! expiry deletes the records that held the highest sequence numbers.
//!
//! ```text
//! offset  size  field
//! 0       8     magic           b"IDEMFLR\0"
//! 8       2     format version  u16 LE, currently 1
//! 10      2     file length     u16 LE, 28
//! 12      4     reserved        zero
//! 16      8     floor           u64 LE: every sequence number the store had
//!                               used when the file was written is below it
//! 24      4     crc             CRC-32 (IEEE) of bytes 0..24
//! ```
//!
//! File name: `{floor:020}.floor`; the name must match the content. A new
//! floor goes to a new file (never overwritten in place), so a crash while
//! one is written leaves the previous one intact.

use super::codec::{Dec, DecodeError, Enc, err};

const MAGIC: &[u8; 8] = b"IDEMFLR\0";
/// Floor file format version written by this build.
pub(crate) const VERSION: u16 = 1;
const LEN_U16: u16 = 28;
/// Length of a floor file.
pub(crate) const LEN: usize = LEN_U16 as usize;
const CRC_OFFSET: usize = 24;
/// File name suffix of floor files.
pub(crate) const SUFFIX: &str = ".floor";

/// The file name of the floor file holding `floor`.
pub(crate) fn file_name(floor: u64) -> String {
    format!("{floor:020}{SUFFIX}")
}

/// The floor a floor file's name claims, or `None` if the name is not one.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SUFFIX)?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Encodes a floor file.
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

/// What a floor file holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A floor this build reads.
    Floor(u64),
    /// An intact file of a newer format version.
    Newer(u16),
}

/// Decodes a whole floor file.
pub(crate) fn decode(buf: &[u8]) -> Result<Decoded, DecodeError> {
    if buf.len() != LEN {
        return err(format!("floor file: {} bytes, expected {LEN}", buf.len()));
    }
    let mut d = Dec::new(buf);
    if &d.array::<8>("magic")? != MAGIC {
        return err("not a floor file (bad magic)");
    }
    let version = d.u16("version")?;
    let len = d.u16("length")?;
    let _reserved = d.u32("reserved")?;
    let floor = d.u64("floor")?;
    let crc = d.u32("crc")?;
    if crc != crc32fast::hash(&buf[..CRC_OFFSET]) {
        return err("floor file checksum mismatch");
    }
    if version > VERSION {
        return Ok(Decoded::Newer(version));
    }
    if version != VERSION || usize::from(len) != LEN {
        return err(format!("floor file version {version}, length {len}"));
    }
    Ok(Decoded::Floor(floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_name() {
        let b = encode(1234);
        assert_eq!(decode(&b), Ok(Decoded::Floor(1234)));
        assert_eq!(file_name(1234), "00000000000000001234.floor");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("12.seg"), None);
        assert_eq!(parse_file_name(".floor"), None);
        assert_eq!(parse_file_name("-1.floor"), None);
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

//! The first bytes of every segment file, and segment file names.
//!
//! ```text
//! offset  size  field
//! 0       8     magic           b"IDEMSEG\0"
//! 8       2     format version  u16 LE, currently 1
//! 10      2     header length   u16 LE, 40
//! 12      4     segment id      u32 LE, unique in the directory
//! 16      8     bucket start    u64 LE ms; every record expires at or after it
//! 24      8     bucket end      u64 LE ms; every record expires before it
//! 32      4     reserved        zero
//! 36      4     crc             CRC-32 (IEEE) of bytes 0..36
//! 40      ...   frames (frame.rs)
//! ```
//!
//! File name: `{bucket_end_ms:013}-{segment_id:010}.seg`, so that a listing
//! sorts by expiry. The header is authoritative; the name is checked against it.

use super::primitive::{Dec, DecodeError, Enc, err};
use crate::clock::Timestamp;

const MAGIC: &[u8; 8] = b"IDEMSEG\0";
/// Format version written by this build.
pub(crate) const FORMAT_VERSION: u16 = 1;
/// Length of the header as stored.
const LEN_U16: u16 = 40;
/// Length of the header; frames start here.
pub(crate) const LEN: usize = LEN_U16 as usize;
const CRC_OFFSET: usize = 36;
/// File name suffix of segment files.
pub(crate) const SUFFIX: &str = ".seg";

/// What the header says about its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) id: u32,
    pub(crate) bucket_start: Timestamp,
    pub(crate) bucket_end: Timestamp,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; LEN] {
        let mut v = Vec::with_capacity(LEN);
        let mut e = Enc(&mut v);
        e.bytes(MAGIC);
        e.u16(FORMAT_VERSION);
        e.u16(LEN_U16);
        e.u32(self.id);
        e.u64(self.bucket_start.0);
        e.u64(self.bucket_end.0);
        e.u32(0);
        let crc = crc32fast::hash(&v[..CRC_OFFSET]);
        Enc(&mut v).u32(crc);
        let mut out = [0u8; LEN];
        out.copy_from_slice(&v);
        out
    }

    pub(crate) fn decode(buf: &[u8]) -> Result<SegmentHeader, DecodeError> {
        if buf.len() < LEN {
            return err(format!("segment header: {} of {LEN} bytes", buf.len()));
        }
        let mut d = Dec::new(&buf[..LEN]);
        if &d.array::<8>("magic")? != MAGIC {
            return err("not a segment file (bad magic)");
        }
        let version = d.u16("version")?;
        let header_len = d.u16("header length")?;
        let id = d.u32("segment id")?;
        let bucket_start = Timestamp(d.u64("bucket start")?);
        let bucket_end = Timestamp(d.u64("bucket end")?);
        let _reserved = d.u32("reserved")?;
        let crc = d.u32("crc")?;
        if crc != crc32fast::hash(&buf[..CRC_OFFSET]) {
            return err("segment header checksum mismatch");
        }
        if version != FORMAT_VERSION {
            return err(format!(
                "segment format version {version} is not supported by this build (supports {FORMAT_VERSION}); \
                 open it with the idemstore version that wrote it"
            ));
        }
        if usize::from(header_len) != LEN {
            return err(format!(
                "segment header length {header_len}, expected {LEN}"
            ));
        }
        if bucket_end <= bucket_start {
            return err("segment bucket end is not after its start");
        }
        Ok(SegmentHeader {
            id,
            bucket_start,
            bucket_end,
        })
    }

    /// The file name of this segment.
    pub(crate) fn file_name(&self) -> String {
        format!("{:013}-{:010}{SUFFIX}", self.bucket_end.0, self.id)
    }
}

/// The format version a header claims, if its magic and checksum hold (so
/// that a newer format is told apart from damage).
pub(crate) fn claimed_version(buf: &[u8]) -> Option<u16> {
    if buf.len() < LEN
        || &buf[..8] != MAGIC
        || crc32fast::hash(&buf[..CRC_OFFSET])
            != u32::from_le_bytes([buf[36], buf[37], buf[38], buf[39]])
    {
        return None;
    }
    Some(u16::from_le_bytes([buf[8], buf[9]]))
}

/// The segment id in a segment file name, or `None` if the name is not one.
pub(crate) fn parse_file_name(name: &str) -> Option<(Timestamp, u32)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (end, id) = stem.split_once('-')?;
    if end.is_empty() || id.is_empty() || !end.bytes().chain(id.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((Timestamp(end.parse().ok()?), id.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentHeader {
        SegmentHeader {
            id: 42,
            bucket_start: Timestamp(3_600_000),
            bucket_end: Timestamp(7_200_000),
        }
    }

    #[test]
    fn roundtrip() {
        let h = sample();
        assert_eq!(SegmentHeader::decode(&h.encode()).unwrap(), h);
        assert_eq!(parse_file_name(&h.file_name()), Some((h.bucket_end, h.id)));
    }

    #[test]
    fn detect_corruption() {
        let b = sample().encode();
        for i in 0..LEN {
            let mut c = b;
            c[i] ^= 0x01;
            assert!(SegmentHeader::decode(&c).is_err(), "flip at {i}");
        }
        assert!(SegmentHeader::decode(&b[..LEN - 1]).is_err());
    }

    #[test]
    fn foreign_names_are_ignored() {
        for n in [
            "LOCK",
            "x.seg",
            "-1.seg",
            "12-.seg",
            "12-3.seg.tmp",
            "1a-2.seg",
        ] {
            assert_eq!(parse_file_name(n), None, "{n}");
        }
    }
}

//! Hint files: a sealed segment's index entries, so that `open` need not read
//! the segment itself.
//!
//! ```text
//! offset  size  field
//! 0       8     magic            b"IDEMHNT\0"
//! 8       2     format version   u16 LE, currently 1
//! 10      2     header length    u16 LE, 72
//! 12      2     entry length     u16 LE, 37
//! 14      2     reserved         zero
//! 16      4     segment id       u32 LE
//! 20      4     segment crc      the segment header's own CRC (its bytes 36..40)
//! 24      8     covered length   the segment bytes [40, covered) are described
//! 32      8     max seq          highest seq of any record in that range
//! 40      8     records          records in that range (superseded ones too)
//! 48      8     entry count      n
//! 56      8     probe            the first 8 bytes of the index key of (the
//!                                zero tenant digest, key "idemstore probe"):
//!                                the hint is ignored if the index hash changed
//! 64      4     entries crc      CRC-32 (IEEE) of the n entries
//! 68      4     header crc       CRC-32 (IEEE) of bytes 0..68
//! 72      n*37  entries, in file order:
//!               16  index key    hi u64 LE, lo u64 LE
//!                8  seq          u64 LE
//!                8  live until   u64 LE ms (the record's `live_until`)
//!                4  offset       u32 LE, of the record's frame in the segment
//!                1  kind         1 pending, 2 completed, 3 aborted, 4 purged,
//!                                5 expired
//! ```
//!
//! One entry per index key: within a segment only the key's newest record is
//! listed. File name: the segment's, with `.hint` for `.seg`.
//!
//! A hint is derived data. Anything wrong with it (missing, cut short, a
//! checksum, a segment it does not match) makes `open` read the segment
//! instead and write a new hint.

use super::primitive::{Dec, DecodeError, Enc, err};
use super::record::Kind;
use crate::clock::Timestamp;
use crate::scope::IndexKey;

const MAGIC: &[u8; 8] = b"IDEMHNT\0";
/// Hint format version written by this build.
pub(crate) const VERSION: u16 = 1;
const HEADER_LEN_U16: u16 = 72;
const ENTRY_LEN_U16: u16 = 37;
/// Bytes before the first entry.
pub(crate) const HEADER_LEN: usize = HEADER_LEN_U16 as usize;
/// Bytes per entry.
pub(crate) const ENTRY_LEN: usize = ENTRY_LEN_U16 as usize;
/// File name suffix of hint files.
pub(crate) const SUFFIX: &str = ".hint";

/// The hint file name of a segment file name.
pub(crate) fn name_for(segment_name: &str) -> Option<String> {
    let stem = segment_name.strip_suffix(super::segment_header::SUFFIX)?;
    Some(format!("{stem}{SUFFIX}"))
}

/// The segment file name of a hint file name.
pub(crate) fn segment_name_for(hint_name: &str) -> Option<String> {
    let stem = hint_name.strip_suffix(SUFFIX)?;
    Some(format!("{stem}{}", super::segment_header::SUFFIX))
}

/// One index entry: a key's newest record in the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) key: IndexKey,
    pub(crate) seq: u64,
    pub(crate) live_until: Timestamp,
    pub(crate) offset: u32,
    pub(crate) kind: Kind,
}

/// What the header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) segment_id: u32,
    pub(crate) segment_crc: u32,
    pub(crate) covered: u64,
    pub(crate) max_seq: u64,
    pub(crate) records: u64,
    pub(crate) probe: u64,
}

/// Encodes a hint file.
pub(crate) fn encode(h: &Header, entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + entries.len() * ENTRY_LEN);
    out.resize(HEADER_LEN, 0);
    for e in entries {
        let mut w = Enc(&mut out);
        w.u64(e.key.hi);
        w.u64(e.key.lo);
        w.u64(e.seq);
        w.u64(e.live_until.0);
        w.u32(e.offset);
        w.u8(e.kind as u8);
    }
    let entries_crc = crc32fast::hash(&out[HEADER_LEN..]);
    let mut head = Vec::with_capacity(HEADER_LEN);
    let mut w = Enc(&mut head);
    w.bytes(MAGIC);
    w.u16(VERSION);
    w.u16(HEADER_LEN_U16);
    w.u16(ENTRY_LEN_U16);
    w.u16(0);
    w.u32(h.segment_id);
    w.u32(h.segment_crc);
    w.u64(h.covered);
    w.u64(h.max_seq);
    w.u64(h.records);
    w.u64(entries.len() as u64);
    w.u64(h.probe);
    w.u32(entries_crc);
    let crc = crc32fast::hash(&head);
    Enc(&mut head).u32(crc);
    out[..HEADER_LEN].copy_from_slice(&head);
    out
}

/// The entry count a hint file's first bytes claim, unchecked (no checksum
/// is verified), bounded by what `file_len` bytes can hold. Only for sizing
/// buffers before the file is read and checked.
pub(crate) fn claimed_entries(head: &[u8], file_len: u64) -> Option<u64> {
    if head.len() < HEADER_LEN || &head[..8] != MAGIC {
        return None;
    }
    let mut count = [0u8; 8];
    count.copy_from_slice(&head[48..56]);
    let room = file_len.checked_sub(HEADER_LEN as u64)? / ENTRY_LEN as u64;
    Some(u64::from_le_bytes(count).min(room))
}

/// Checks a whole hint file and returns its header and the entry bytes
/// (decode them with [`entries`]).
pub(crate) fn decode(buf: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
    let (header, count, entries_crc) = decode_header(buf)?;
    let body = &buf[HEADER_LEN..];
    if usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(ENTRY_LEN))
        != Some(body.len())
    {
        return err("hint file length does not match its entry count");
    }
    if crc32fast::hash(body) != entries_crc {
        return err("hint entries checksum mismatch");
    }
    Ok((header, body))
}

/// Checks a hint file's header alone (its first `HEADER_LEN` bytes; the
/// entries are not checked) and returns it with the entry count and the
/// entries' checksum it claims.
pub(crate) fn decode_header(buf: &[u8]) -> Result<(Header, u64, u32), DecodeError> {
    if buf.len() < HEADER_LEN {
        return err("hint file shorter than its header");
    }
    let mut d = Dec::new(&buf[..HEADER_LEN]);
    if d.take(8, "magic")? != MAGIC {
        return err("not a hint file (bad magic)");
    }
    let version = d.u16("version")?;
    let header_len = d.u16("header length")?;
    let entry_len = d.u16("entry length")?;
    let _reserved = d.u16("reserved")?;
    let segment_id = d.u32("segment id")?;
    let segment_crc = d.u32("segment crc")?;
    let covered = d.u64("covered length")?;
    let max_seq = d.u64("max seq")?;
    let records = d.u64("records")?;
    let count = d.u64("entry count")?;
    let probe = d.u64("probe")?;
    let entries_crc = d.u32("entries crc")?;
    let crc = d.u32("header crc")?;
    if crc32fast::hash(&buf[..HEADER_LEN - 4]) != crc {
        return err("hint header checksum mismatch");
    }
    if version != VERSION
        || usize::from(header_len) != HEADER_LEN
        || usize::from(entry_len) != ENTRY_LEN
    {
        return err(format!("hint version {version} is not {VERSION}"));
    }
    let header = Header {
        segment_id,
        segment_crc,
        covered,
        max_seq,
        records,
        probe,
    };
    Ok((header, count, entries_crc))
}

/// The entries of a body returned by [`decode`]. An entry whose kind is not
/// known ends the iteration with an error.
pub(crate) fn entries(body: &[u8]) -> impl Iterator<Item = Result<Entry, DecodeError>> + '_ {
    body.chunks_exact(ENTRY_LEN).map(|c| {
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&c[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let kind = match c[36] {
            1 => Kind::Pending,
            2 => Kind::Completed,
            3 => Kind::Aborted,
            4 => Kind::Purged,
            5 => Kind::Expired,
            other => return err(format!("unknown record kind {other} in hint")),
        };
        Ok(Entry {
            key: IndexKey {
                hi: word(0),
                lo: word(8),
            },
            seq: word(16),
            live_until: Timestamp(word(24)),
            offset: u32::from_le_bytes([c[32], c[33], c[34], c[35]]),
            kind,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Header, Vec<Entry>) {
        let h = Header {
            segment_id: 7,
            segment_crc: 0xdead_beef,
            covered: 4096,
            max_seq: 99,
            records: 3,
            probe: 0x0123_4567_89ab_cdef,
        };
        let e = vec![
            Entry {
                key: IndexKey { hi: 1, lo: 2 },
                seq: 5,
                live_until: Timestamp(1_000),
                offset: 40,
                kind: Kind::Completed,
            },
            Entry {
                key: IndexKey { hi: 3, lo: 4 },
                seq: 99,
                live_until: Timestamp(2_000),
                offset: 200,
                kind: Kind::Pending,
            },
        ];
        (h, e)
    }

    #[test]
    fn roundtrip() {
        let (h, e) = sample();
        let bytes = encode(&h, &e);
        assert_eq!(bytes.len(), HEADER_LEN + 2 * ENTRY_LEN);
        let (h2, body) = decode(&bytes).unwrap();
        assert_eq!(h2, h);
        let e2: Vec<Entry> = entries(body).map(Result::unwrap).collect();
        assert_eq!(e2, e);
    }

    #[test]
    fn the_claimed_entry_count_is_read_and_bounded_by_the_file_length() {
        let (h, e) = sample();
        let bytes = encode(&h, &e);
        let len = bytes.len() as u64;
        assert_eq!(claimed_entries(&bytes, len), Some(2));
        assert_eq!(claimed_entries(&bytes, len - 1), Some(1));
        assert_eq!(claimed_entries(&bytes, 10), None);
        assert_eq!(claimed_entries(&bytes[..HEADER_LEN - 1], len), None);
        let mut b = bytes.clone();
        b[48..56].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(claimed_entries(&b, len), Some(2));
        b[0] ^= 1;
        assert_eq!(claimed_entries(&b, len), None);
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_refused() {
        let (h, e) = sample();
        let bytes = encode(&h, &e);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode(&b).is_err(), "flip at {i} accepted");
        }
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut} accepted");
        }
    }

    #[test]
    fn names_map_both_ways() {
        let seg = "0001800003600000-0000000001.seg";
        let hint = name_for(seg).unwrap();
        assert_eq!(hint, "0001800003600000-0000000001.hint");
        assert_eq!(segment_name_for(&hint).unwrap(), seg);
        assert_eq!(name_for("x.hint"), None);
    }
}

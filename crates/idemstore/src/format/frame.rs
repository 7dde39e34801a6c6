//! Record framing: how one record sits in a segment file.
//!
//! ```text
//! offset  size  field
//! 0       4     magic      0xA7 'I' 'D' 'R'  (u32 LE 0x5244_49A7)
//! 4       4     len        payload length in bytes, u32 LE, 1..=MAX_PAYLOAD
//! 8       4     crc        CRC-32 (IEEE) of bytes 4..8 followed by the payload
//! 12      len   payload    a record (see record.rs), first byte its kind
//! ```
//!
//! Recovery reads frames front to back. A frame whose magic, length or
//! checksum is wrong is either a *torn tail* (no valid frame follows it: the
//! last write was cut short; the file is truncated there) or *corruption* (a
//! valid frame follows: the damaged bytes are counted, reported and skipped,
//! and reading resumes at the next valid frame).

/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 12;
/// First four bytes of every frame.
pub(crate) const MAGIC: u32 = 0x5244_49A7;
/// Largest payload a reader accepts, whatever the configuration said when the
/// file was written. Bounds the allocation a damaged length can cause.
pub(crate) const MAX_PAYLOAD: usize = 64 << 20;

/// Starts a frame at the end of `out`; returns its offset for [`finish`].
pub(crate) fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    start
}

/// Fills in the header of the frame begun at `start`, whose payload is
/// everything after the header. Returns the frame's total length.
pub(crate) fn finish(out: &mut [u8], start: usize) -> usize {
    let payload_len = out.len() - start - HEADER_LEN;
    let len = u32::try_from(payload_len).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&MAGIC.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    let crc = checksum(&out[start + 4..start + 8], &out[start + HEADER_LEN..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

fn checksum(len: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(payload);
    h.finalize()
}

/// The result of reading one frame at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A whole, valid frame of `total` bytes.
    Valid { payload: &'a [u8], total: usize },
    /// The buffer ends before the frame does (header or payload cut short).
    Incomplete,
    /// The bytes are not a valid frame.
    Invalid(&'static str),
}

/// Reads the frame at the start of `buf`.
pub(crate) fn read(buf: &[u8]) -> Frame<'_> {
    if buf.len() < HEADER_LEN {
        return Frame::Incomplete;
    }
    let word = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    if word(0) != MAGIC {
        return Frame::Invalid("bad frame magic");
    }
    let len = word(4) as usize;
    if len == 0 || len > MAX_PAYLOAD {
        return Frame::Invalid("frame length out of range");
    }
    let total = HEADER_LEN + len;
    if buf.len() < total {
        return Frame::Incomplete;
    }
    let payload = &buf[HEADER_LEN..total];
    if checksum(&buf[4..8], payload) != word(8) {
        return Frame::Invalid("frame checksum mismatch");
    }
    Frame::Valid { payload, total }
}

/// One item found while scanning a run of frames.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scanned<'a> {
    /// A valid frame at `offset` (relative to the scanned buffer).
    Record { offset: usize, payload: &'a [u8] },
    /// Damaged bytes `offset..offset+len`, followed by a valid frame.
    Corrupt { offset: usize, len: usize },
    /// Nothing valid from `offset` to the end: a torn (or damaged) tail.
    TornTail { offset: usize },
}

/// Iterates over the frames of `buf`, resynchronising after damage.
pub(crate) struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Scanner {
            buf,
            pos: 0,
            done: false,
        }
    }

    /// The first offset after `from` where a valid frame starts.
    fn next_valid(&self, from: usize) -> Option<usize> {
        let magic = MAGIC.to_le_bytes();
        let mut i = from;
        while i + HEADER_LEN <= self.buf.len() {
            if self.buf[i..i + 4] == magic && matches!(read(&self.buf[i..]), Frame::Valid { .. }) {
                return Some(i);
            }
            i += 1;
        }
        None
    }
}

impl<'a> Iterator for Scanner<'a> {
    type Item = Scanned<'a>;

    fn next(&mut self) -> Option<Scanned<'a>> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        let at = self.pos;
        match read(&self.buf[at..]) {
            Frame::Valid { payload, total } => {
                self.pos += total;
                Some(Scanned::Record {
                    offset: at,
                    payload,
                })
            }
            Frame::Incomplete | Frame::Invalid(_) => match self.next_valid(at + 1) {
                Some(next) => {
                    self.pos = next;
                    Some(Scanned::Corrupt {
                        offset: at,
                        len: next - at,
                    })
                }
                None => {
                    self.done = true;
                    Some(Scanned::TornTail { offset: at })
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        let s = begin(&mut v);
        v.extend_from_slice(payload);
        let n = finish(&mut v, s);
        assert_eq!(n, v.len());
        v
    }

    #[test]
    fn roundtrip() {
        let f = frame(b"hello");
        assert_eq!(
            read(&f),
            Frame::Valid {
                payload: b"hello",
                total: HEADER_LEN + 5
            }
        );
    }

    #[test]
    fn detect_corruption_in_every_byte() {
        let f = frame(b"payload bytes");
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x40;
            assert!(
                !matches!(read(&g), Frame::Valid { .. }),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let f = frame(b"payload bytes");
        for cut in 0..f.len() {
            assert_eq!(read(&f[..cut]), Frame::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn scanner_tells_torn_tail_from_corruption() {
        let mut buf = frame(b"one");
        let second_at = buf.len();
        buf.extend(frame(b"two"));
        let third_at = buf.len();
        buf.extend(frame(b"three"));
        buf[second_at + HEADER_LEN] ^= 1; // damage the middle record
        let torn_at = buf.len();
        let fourth = frame(b"four");
        buf.extend_from_slice(&fourth[..fourth.len() - 2]); // torn last write

        let items: Vec<_> = Scanner::new(&buf).collect();
        assert_eq!(
            items,
            vec![
                Scanned::Record {
                    offset: 0,
                    payload: b"one"
                },
                Scanned::Corrupt {
                    offset: second_at,
                    len: third_at - second_at
                },
                Scanned::Record {
                    offset: third_at,
                    payload: b"three"
                },
                Scanned::TornTail { offset: torn_at },
            ]
        );
    }

    #[test]
    fn scanner_survives_garbage() {
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let items: Vec<_> = Scanner::new(&garbage).collect();
        assert_eq!(items, vec![Scanned::TornTail { offset: 0 }]);
        let zeros = vec![0u8; 100];
        assert_eq!(
            Scanner::new(&zeros).collect::<Vec<_>>(),
            vec![Scanned::TornTail { offset: 0 }]
        );
    }
}

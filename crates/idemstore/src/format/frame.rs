//! Record framing: how one record sits in a segment file.
//!
//! ```text
//! offset  size  field
//! 0       4     magic        0xA7 'I' 'D' 'R'  (u32 LE 0x5244_49A7)
//! 4       4     len          payload length in bytes, u32 LE, 1..=MAX_PAYLOAD
//! 8       4     header crc   CRC-32 (IEEE) of: segment id (u32 LE), this frame's
//!                            file offset (u64 LE), bytes 0..8, bytes 12..16
//! 12      4     payload crc  CRC-32 (IEEE) of the payload
//! 16      len   payload      a record (see record.rs), first byte its kind
//! ```
//!
//! The header has its own checksum, salted with where the frame sits, so:
//! - a frame whose header checks out is trusted for its length: if the file
//!   ends inside it, that is a *torn tail* (truncated there), and if its
//!   payload is damaged the whole frame is skipped — recovery never looks for
//!   frames inside another frame's payload, where a stored response body could
//!   carry bytes shaped like one;
//! - only a damaged header makes recovery search forward for the next valid
//!   header, and a header copied from elsewhere (another offset or file, or
//!   forged inside a body) does not check out at the wrong place.
//!
//! A damaged stretch followed by a valid frame is *corruption*: counted,
//! reported, skipped. Damage with nothing valid after it is a torn tail.

/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 16;
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

/// Fills in magic, length and payload checksum of the frame begun at `start`,
/// whose payload is everything after its header. The header checksum is set
/// by [`seal`] once the frame's place is known. Returns the frame's length.
pub(crate) fn finish(out: &mut [u8], start: usize) -> usize {
    let payload_len = out.len() - start - HEADER_LEN;
    let len = u32::try_from(payload_len).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&MAGIC.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&out[start + HEADER_LEN..]);
    out[start + 12..start + 16].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

fn header_crc(header: &[u8], segment: u32, offset: u64) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&segment.to_le_bytes());
    h.update(&offset.to_le_bytes());
    h.update(&header[0..8]);
    h.update(&header[12..16]);
    h.finalize()
}

/// Sets the header checksum of a finished frame that will sit at `offset` of
/// segment `segment`.
pub(crate) fn seal(frame: &mut [u8], segment: u32, offset: u64) {
    let crc = header_crc(&frame[..HEADER_LEN], segment, offset);
    frame[8..12].copy_from_slice(&crc.to_le_bytes());
}

fn word(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The payload length a valid header at the start of `buf` declares.
fn valid_header(buf: &[u8], segment: u32, offset: u64) -> Option<usize> {
    if buf.len() < HEADER_LEN || word(buf, 0) != MAGIC {
        return None;
    }
    let len = word(buf, 4) as usize;
    if len == 0 || len > MAX_PAYLOAD || header_crc(buf, segment, offset) != word(buf, 8) {
        return None;
    }
    Some(len)
}

/// The result of reading one frame at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A whole, valid frame of `total` bytes.
    Valid { payload: &'a [u8], total: usize },
    /// A valid header whose frame the buffer ends inside.
    Incomplete,
    /// A valid header, but the payload's checksum fails: skip `total` bytes.
    BadPayload { total: usize },
    /// No valid header here (or too few bytes for one).
    BadHeader,
}

/// Reads the frame at the start of `buf`, which sits at `offset` of segment
/// `segment`.
pub(crate) fn read(buf: &[u8], segment: u32, offset: u64) -> Frame<'_> {
    let Some(len) = valid_header(buf, segment, offset) else {
        return Frame::BadHeader;
    };
    let total = HEADER_LEN + len;
    if buf.len() < total {
        return Frame::Incomplete;
    }
    let payload = &buf[HEADER_LEN..total];
    if crc32fast::hash(payload) != word(buf, 12) {
        return Frame::BadPayload { total };
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

/// Iterates over the frames of `buf`, the bytes of segment `segment` from
/// file offset `base` on.
pub(crate) struct Scanner<'a> {
    buf: &'a [u8],
    segment: u32,
    base: u64,
    pos: usize,
    done: bool,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(buf: &'a [u8], segment: u32, base: u64) -> Self {
        Scanner {
            buf,
            segment,
            base,
            pos: 0,
            done: false,
        }
    }

    fn file_offset(&self, pos: usize) -> u64 {
        self.base + pos as u64
    }

    /// The first position at or after `from` where a valid header starts.
    fn next_header(&self, from: usize) -> Option<usize> {
        let magic = MAGIC.to_le_bytes();
        (from..self.buf.len().saturating_sub(HEADER_LEN - 1)).find(|&i| {
            self.buf[i..i + 4] == magic
                && valid_header(&self.buf[i..], self.segment, self.file_offset(i)).is_some()
        })
    }

    fn torn_tail(&mut self, at: usize) -> Option<Scanned<'a>> {
        self.done = true;
        Some(Scanned::TornTail { offset: at })
    }
}

impl<'a> Iterator for Scanner<'a> {
    type Item = Scanned<'a>;

    fn next(&mut self) -> Option<Scanned<'a>> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        let at = self.pos;
        match read(&self.buf[at..], self.segment, self.file_offset(at)) {
            Frame::Valid { payload, total } => {
                self.pos += total;
                Some(Scanned::Record {
                    offset: at,
                    payload,
                })
            }
            Frame::Incomplete => self.torn_tail(at),
            Frame::BadPayload { total } => match self.next_header(at + total) {
                Some(_) => {
                    self.pos = at + total;
                    Some(Scanned::Corrupt {
                        offset: at,
                        len: total,
                    })
                }
                // Nothing valid after it: the last write did not finish.
                None => self.torn_tail(at),
            },
            Frame::BadHeader => match self.next_header(at + 1) {
                Some(next) => {
                    self.pos = next;
                    Some(Scanned::Corrupt {
                        offset: at,
                        len: next - at,
                    })
                }
                None => self.torn_tail(at),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u32 = 7;
    const BASE: u64 = 40;

    /// Appends a sealed frame with `payload` to `buf` (whose first byte sits
    /// at file offset BASE).
    fn push(buf: &mut Vec<u8>, payload: &[u8]) -> usize {
        let at = buf.len();
        let mut f = Vec::new();
        let s = begin(&mut f);
        f.extend_from_slice(payload);
        finish(&mut f, s);
        seal(&mut f, SEG, BASE + at as u64);
        buf.extend_from_slice(&f);
        at
    }

    #[test]
    fn roundtrip() {
        let mut buf = Vec::new();
        push(&mut buf, b"hello");
        assert_eq!(
            read(&buf, SEG, BASE),
            Frame::Valid {
                payload: b"hello",
                total: HEADER_LEN + 5
            }
        );
    }

    #[test]
    fn detect_corruption_in_every_byte() {
        let mut buf = Vec::new();
        push(&mut buf, b"payload bytes");
        for i in 0..buf.len() {
            let mut g = buf.clone();
            g[i] ^= 0x40;
            assert!(
                !matches!(read(&g, SEG, BASE), Frame::Valid { .. }),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn a_frame_is_only_valid_where_it_was_sealed() {
        let mut buf = Vec::new();
        push(&mut buf, b"x");
        assert_eq!(read(&buf, SEG, BASE + 1), Frame::BadHeader);
        assert_eq!(read(&buf, SEG + 1, BASE), Frame::BadHeader);
    }

    #[test]
    fn every_truncation_is_incomplete_or_a_bad_header() {
        let mut buf = Vec::new();
        push(&mut buf, b"payload bytes");
        for cut in 0..buf.len() {
            let r = read(&buf[..cut], SEG, BASE);
            let expected = if cut < HEADER_LEN {
                Frame::BadHeader
            } else {
                Frame::Incomplete
            };
            assert_eq!(r, expected, "cut at {cut}");
        }
    }

    #[test]
    fn scanner_tells_torn_tail_from_corruption() {
        let mut buf = Vec::new();
        push(&mut buf, b"one");
        let second = push(&mut buf, b"two");
        let third = push(&mut buf, b"three");
        buf[second + HEADER_LEN] ^= 1; // damage the middle record's payload
        let fourth = push(&mut buf, b"four");
        let fifth = push(&mut buf, b"five");
        buf[fourth + 2] ^= 1; // damage the fourth record's header
        let torn = buf.len();
        push(&mut buf, b"six");
        buf.truncate(buf.len() - 2); // torn last write

        let items: Vec<_> = Scanner::new(&buf, SEG, BASE).collect();
        assert_eq!(
            items,
            vec![
                Scanned::Record {
                    offset: 0,
                    payload: b"one"
                },
                Scanned::Corrupt {
                    offset: second,
                    len: third - second
                },
                Scanned::Record {
                    offset: third,
                    payload: b"three"
                },
                Scanned::Corrupt {
                    offset: fourth,
                    len: fifth - fourth
                },
                Scanned::Record {
                    offset: fifth,
                    payload: b"five"
                },
                Scanned::TornTail { offset: torn },
            ]
        );
    }

    #[test]
    fn a_frame_forged_inside_a_torn_frames_payload_is_never_read() {
        // A stored body that contains a well-formed frame, sealed for the
        // very offset it will land at; then the enclosing write is torn.
        let mut buf = Vec::new();
        push(&mut buf, b"first");
        let outer = buf.len();
        let inner_at = outer + HEADER_LEN + 3;
        let mut forged = Vec::new();
        let s = begin(&mut forged);
        forged.extend_from_slice(b"forged record");
        finish(&mut forged, s);
        seal(&mut forged, SEG, BASE + inner_at as u64);
        let mut body = b"abc".to_vec();
        body.extend_from_slice(&forged);
        body.extend_from_slice(&[0u8; 32]);
        push(&mut buf, &body);
        buf.truncate(buf.len() - 10); // the enclosing frame is torn
        let items: Vec<_> = Scanner::new(&buf, SEG, BASE).collect();
        assert_eq!(
            items,
            vec![
                Scanned::Record {
                    offset: 0,
                    payload: b"first"
                },
                Scanned::TornTail { offset: outer },
            ]
        );
        // Damaged payload (not torn): skipped whole, the forgery unread.
        let mut buf2 = Vec::new();
        push(&mut buf2, b"first");
        push(&mut buf2, &body);
        buf2[outer + HEADER_LEN] ^= 1;
        let last = push(&mut buf2, b"last");
        let items: Vec<_> = Scanner::new(&buf2, SEG, BASE).collect();
        assert_eq!(
            items,
            vec![
                Scanned::Record {
                    offset: 0,
                    payload: b"first"
                },
                Scanned::Corrupt {
                    offset: outer,
                    len: last - outer
                },
                Scanned::Record {
                    offset: last,
                    payload: b"last"
                },
            ]
        );
    }

    #[test]
    fn scanner_survives_garbage() {
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let items: Vec<_> = Scanner::new(&garbage, SEG, BASE).collect();
        assert_eq!(items, vec![Scanned::TornTail { offset: 0 }]);
        let zeros = vec![0u8; 100];
        assert_eq!(
            Scanner::new(&zeros, SEG, BASE).collect::<Vec<_>>(),
            vec![Scanned::TornTail { offset: 0 }]
        );
    }
}

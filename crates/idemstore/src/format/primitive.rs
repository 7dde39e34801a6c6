//! Little-endian fixed-width primitives shared by every on-disk type.
//!
//! Only explicitly sized integers reach the disk (`u8`..`u64`); lengths are
//! checked against what remains before anything is allocated, so a decoder fed
//! garbage can neither panic nor allocate more than its input.

use std::fmt;

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(pub(crate) String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

/// Appends little-endian values to a buffer.
pub(crate) struct Enc<'a>(pub(crate) &'a mut Vec<u8>);

impl Enc<'_> {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
}

/// Reads little-endian values from a slice, failing (never panicking) when
/// the slice is too short.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return err(format!(
                "{what}: needs {n} bytes, {} left",
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn finish(&self, what: &str) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return err(format!("{what}: {} trailing bytes", self.remaining()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_primitives() {
        let mut v = Vec::new();
        let mut e = Enc(&mut v);
        e.u8(1);
        e.u16(0x0203);
        e.u32(0x0405_0607);
        e.u64(0x0809_0a0b_0c0d_0e0f);
        e.bytes(b"xy");
        let mut d = Dec::new(&v);
        assert_eq!(d.u8("a").unwrap(), 1);
        assert_eq!(d.u16("b").unwrap(), 0x0203);
        assert_eq!(d.u32("c").unwrap(), 0x0405_0607);
        assert_eq!(d.u64("d").unwrap(), 0x0809_0a0b_0c0d_0e0f);
        assert_eq!(d.take(2, "e").unwrap(), b"xy");
        d.finish("end").unwrap();
        // Little-endian on disk whatever the host.
        assert_eq!(&v[1..3], &[0x03, 0x02]);
    }

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        let mut d = Dec::new(&[1, 2, 3]);
        assert!(d.u32("x").is_err());
        assert!(d.take(usize::MAX, "y").is_err());
        assert_eq!(d.u16("z").unwrap(), 0x0201);
        assert!(d.finish("end").is_err());
    }
}

//! XDR (RFC 4506) codec with strict bounds.
//!
//! The decoder works over one complete, already length-checked RPC record held
//! in memory. It never allocates from an untrusted length: every variable-length
//! item is checked against both the caller's protocol maximum and the bytes
//! actually remaining before anything is copied, so a hostile count costs
//! nothing. Any violation is an [`XdrError`], which the RPC layer answers with
//! `GARBAGE_ARGS`.

use thiserror::Error;

/// What was wrong with the XDR input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum XdrError {
    /// The input ended before the item was complete.
    #[error("XDR: truncated reading {what} at byte {offset} (need {need}, have {have})")]
    Truncated {
        what: &'static str,
        offset: usize,
        need: usize,
        have: usize,
    },
    /// A length prefix exceeded the protocol maximum for that item.
    #[error("XDR: {what} length {len} exceeds maximum {max} at byte {offset}")]
    TooLong {
        what: &'static str,
        len: u32,
        max: u32,
        offset: usize,
    },
    /// A discriminant or boolean had a value the protocol does not define.
    #[error("XDR: invalid value {value} for {what} at byte {offset}")]
    BadValue {
        what: &'static str,
        value: u32,
        offset: usize,
    },
    /// Padding bytes after opaque data were not zero (RFC 4506 §4.10).
    #[error("XDR: non-zero padding after {what} at byte {offset}")]
    BadPadding { what: &'static str, offset: usize },
}

/// Reads XDR items from a byte slice, front to back.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn pad4(n: usize) -> usize {
    (4 - (n % 4)) % 4
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    /// Byte offset of the next item.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], XdrError> {
        if self.remaining() < n {
            return Err(XdrError::Truncated {
                what,
                offset: self.pos,
                need: n,
                have: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, XdrError> {
        let b = self.take(what, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32, XdrError> {
        Ok(self.u32(what)? as i32)
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, XdrError> {
        let hi = self.u32(what)? as u64;
        let lo = self.u32(what)? as u64;
        Ok((hi << 32) | lo)
    }

    /// XDR bool: exactly 0 or 1.
    pub fn bool(&mut self, what: &'static str) -> Result<bool, XdrError> {
        let offset = self.pos;
        match self.u32(what)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(XdrError::BadValue {
                what,
                value,
                offset,
            }),
        }
    }

    fn skip_padding(&mut self, what: &'static str, n: usize) -> Result<(), XdrError> {
        let offset = self.pos;
        let p = self.take(what, pad4(n))?;
        if p.iter().any(|&b| b != 0) {
            return Err(XdrError::BadPadding { what, offset });
        }
        Ok(())
    }

    /// Fixed-length opaque of `n` bytes (plus padding).
    pub fn opaque_fixed(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], XdrError> {
        let s = self.take(what, n)?;
        self.skip_padding(what, n)?;
        Ok(s)
    }

    /// Variable-length opaque, at most `max` bytes. Borrowed: no allocation.
    pub fn opaque(&mut self, what: &'static str, max: u32) -> Result<&'a [u8], XdrError> {
        let offset = self.pos;
        let len = self.u32(what)?;
        if len > max {
            return Err(XdrError::TooLong {
                what,
                len,
                max,
                offset,
            });
        }
        self.opaque_fixed(what, len as usize)
    }

    /// XDR string: same wire form as opaque; returned as raw bytes because
    /// NFS names are byte strings, not necessarily UTF-8.
    pub fn string(&mut self, what: &'static str, max: u32) -> Result<&'a [u8], XdrError> {
        self.opaque(what, max)
    }

    /// An array count, checked against `max` and against the bytes left
    /// (each element takes at least `min_elem_size` bytes), so a caller can
    /// safely reserve `count` slots.
    pub fn array_len(
        &mut self,
        what: &'static str,
        max: u32,
        min_elem_size: usize,
    ) -> Result<usize, XdrError> {
        let offset = self.pos;
        let len = self.u32(what)?;
        if len > max {
            return Err(XdrError::TooLong {
                what,
                len,
                max,
                offset,
            });
        }
        let need = (len as usize).saturating_mul(min_elem_size.max(1));
        if need > self.remaining() {
            return Err(XdrError::Truncated {
                what,
                offset: self.pos,
                need,
                have: self.remaining(),
            });
        }
        Ok(len as usize)
    }

    /// Everything not yet consumed (e.g. procedure arguments after a header).
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
}

/// Appends XDR items to a growable buffer.
#[derive(Debug, Default, Clone)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Encoder { buf: Vec::new() }
    }

    pub fn with_capacity(n: usize) -> Self {
        Encoder {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn i32(&mut self, v: i32) {
        self.u32(v as u32);
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.u32(v as u32);
    }

    pub fn opaque_fixed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len() + pad4(data.len()), 0);
    }

    /// Variable-length opaque. Callers pass data they produced themselves
    /// and bounded by protocol limits (≤ 1 MiB), so the length fits in u32.
    pub fn opaque(&mut self, data: &[u8]) {
        self.u32(data.len() as u32);
        self.opaque_fixed(data);
    }

    pub fn string(&mut self, s: &[u8]) {
        self.opaque(s);
    }

    /// Drops everything after the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// Overwrites a u32 written earlier at `offset` (used for lengths known
    /// only after the body is written).
    pub fn patch_u32(&mut self, offset: usize, v: u32) {
        self.buf[offset..offset + 4].copy_from_slice(&v.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_scalars_and_opaque() {
        let mut e = Encoder::new();
        e.u32(7);
        e.u64(0x0102_0304_0506_0708);
        e.bool(true);
        e.opaque(b"abcde");
        e.string(b"xy");
        let b = e.into_inner();
        assert_eq!(b.len(), 4 + 8 + 4 + 4 + 8 + 4 + 4);
        let mut d = Decoder::new(&b);
        assert_eq!(d.u32("a").unwrap(), 7);
        assert_eq!(d.u64("b").unwrap(), 0x0102_0304_0506_0708);
        assert!(d.bool("c").unwrap());
        assert_eq!(d.opaque("d", 16).unwrap(), b"abcde");
        assert_eq!(d.string("e", 16).unwrap(), b"xy");
        assert_eq!(d.remaining(), 0);
    }

    #[test]
    fn oversized_and_truncated_lengths_are_rejected() {
        let mut e = Encoder::new();
        e.u32(u32::MAX);
        let b = e.into_inner();
        assert!(matches!(
            Decoder::new(&b).opaque("name", 255),
            Err(XdrError::TooLong { len: u32::MAX, .. })
        ));
        // Within the maximum but more than the buffer holds.
        let mut e = Encoder::new();
        e.u32(100);
        e.u32(0);
        let b = e.into_inner();
        assert!(matches!(
            Decoder::new(&b).opaque("data", 1 << 20),
            Err(XdrError::Truncated { .. })
        ));
        assert!(matches!(
            Decoder::new(&b).array_len("gids", 16, 4),
            Err(XdrError::TooLong { .. })
        ));
    }

    #[test]
    fn bad_bool_and_padding() {
        let b = 2u32.to_be_bytes();
        assert!(matches!(
            Decoder::new(&b).bool("flag"),
            Err(XdrError::BadValue { value: 2, .. })
        ));
        let b = [0, 0, 0, 1, b'a', 1, 0, 0];
        assert!(matches!(
            Decoder::new(&b).opaque("x", 8),
            Err(XdrError::BadPadding { .. })
        ));
    }
}

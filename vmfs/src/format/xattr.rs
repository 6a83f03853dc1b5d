//! Extended-attribute block: every extended attribute of one inode, in one
//! small block that the inode's `xattr` field addresses.
//!
//! ```text
//! offset size field
//!      0   16 envelope   (magic "VXAT", crc32, self_addr)
//!     16    8 owner      u64: inode number that owns this block
//!     24    8 generation u64: the owner's generation when it was written
//!     32    4 count      u32: entries
//!     36    4 used       u32: bytes of entries from offset 40
//!     40    … entries, sorted by name (bytewise), packed:
//!              0  1 name_len  u8 (1..=255)
//!              1  4 value_len u32 (≤ 65536)
//!              5  … name (full name, "user.…"), then value
//!   rest      zero
//! ```

use super::block::{get_u32, get_u64, put_u32, put_u64, seal, verify};
use super::FormatError;

/// Magic of an extended-attribute block ("VXAT").
pub const XATTR_MAGIC: u32 = u32::from_le_bytes(*b"VXAT");
const ENTRIES_OFF: usize = 40;
const ENTRY_HEAD: usize = 5;
const KIND: &str = "xattr block";
/// Longest attribute name (with its namespace prefix).
pub const XATTR_NAME_MAX: usize = 255;
/// Largest attribute value (Linux's XATTR_SIZE_MAX).
pub const XATTR_VALUE_MAX: usize = 65536;

/// Decoded extended-attribute block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XattrBlock {
    pub addr: u64,
    pub owner: u64,
    pub generation: u64,
    /// (name, value), sorted by name, names unique.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Bytes one entry takes.
pub fn entry_len(name: &[u8], value: &[u8]) -> usize {
    ENTRY_HEAD + name.len() + value.len()
}

/// Bytes of a block of `size` left for entries.
pub fn capacity(size: usize) -> usize {
    size - ENTRIES_OFF
}

impl XattrBlock {
    /// Bytes the entries take.
    pub fn used(&self) -> usize {
        self.entries.iter().map(|(n, v)| entry_len(n, v)).sum()
    }

    /// Encode to `size` bytes; `None` if the entries do not fit.
    pub fn encode(&self, size: usize) -> Option<Vec<u8>> {
        let used = self.used();
        if used > capacity(size) {
            return None;
        }
        let mut b = vec![0u8; size];
        put_u64(&mut b, 16, self.owner);
        put_u64(&mut b, 24, self.generation);
        put_u32(&mut b, 32, self.entries.len() as u32);
        put_u32(&mut b, 36, used as u32);
        let mut o = ENTRIES_OFF;
        for (n, v) in &self.entries {
            b[o] = n.len() as u8;
            put_u32(&mut b, o + 1, v.len() as u32);
            o += ENTRY_HEAD;
            b[o..o + n.len()].copy_from_slice(n);
            o += n.len();
            b[o..o + v.len()].copy_from_slice(v);
            o += v.len();
        }
        seal(&mut b, XATTR_MAGIC, self.addr);
        Some(b)
    }

    /// Decode and validate a block read from `addr`.
    pub fn decode(b: &[u8], addr: u64) -> Result<XattrBlock, FormatError> {
        if b.len() < ENTRIES_OFF {
            return Err(FormatError::Truncated {
                kind: KIND,
                addr,
                len: b.len(),
            });
        }
        verify(b, KIND, XATTR_MAGIC, addr)?;
        let count = get_u32(b, 32) as usize;
        let used = get_u32(b, 36) as usize;
        if used > capacity(b.len()) {
            return Err(bad(
                addr,
                "used",
                format!("{used} bytes of entries in {} bytes", b.len()),
            ));
        }
        let end = ENTRIES_OFF + used;
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(count.min(4096));
        let mut o = ENTRIES_OFF;
        for k in 0..count {
            if o + ENTRY_HEAD > end {
                return Err(bad(
                    addr,
                    "entries",
                    format!("entry {k} starts past `used`"),
                ));
            }
            let nl = b[o] as usize;
            let vl = get_u32(b, o + 1) as usize;
            if nl == 0 || vl > XATTR_VALUE_MAX || o + ENTRY_HEAD + nl + vl > end {
                return Err(bad(
                    addr,
                    "entries",
                    format!("entry {k}: name of {nl} bytes, value of {vl} bytes do not fit"),
                ));
            }
            o += ENTRY_HEAD;
            let name = b[o..o + nl].to_vec();
            let value = b[o + nl..o + nl + vl].to_vec();
            o += nl + vl;
            if let Some((prev, _)) = entries.last() {
                if *prev >= name {
                    return Err(bad(addr, "entries", format!("entry {k} out of order")));
                }
            }
            entries.push((name, value));
        }
        if o != end {
            return Err(bad(
                addr,
                "used",
                format!("entries end at {o}, used says {end}"),
            ));
        }
        Ok(XattrBlock {
            addr,
            owner: get_u64(b, 16),
            generation: get_u64(b, 24),
            entries,
        })
    }
}

fn bad(addr: u64, field: &'static str, why: String) -> FormatError {
    FormatError::BadField {
        kind: KIND,
        addr,
        field,
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let x = XattrBlock {
            addr: 1 << 20,
            owner: 7,
            generation: 3,
            entries: vec![
                (b"user.a".to_vec(), b"".to_vec()),
                (b"user.b".to_vec(), vec![9u8; 1000]),
            ],
        };
        let b = x.encode(65536).unwrap();
        assert_eq!(XattrBlock::decode(&b, 1 << 20).unwrap(), x);
        assert!(XattrBlock::decode(&b, 2 << 20).is_err(), "self address");
        let mut d = b.clone();
        d[50] ^= 1;
        assert!(XattrBlock::decode(&d, 1 << 20).is_err(), "checksum");
        let big = XattrBlock {
            entries: vec![(b"user.x".to_vec(), vec![0u8; 65536])],
            ..x
        };
        assert!(big.encode(65536).is_none(), "does not fit");
    }
}

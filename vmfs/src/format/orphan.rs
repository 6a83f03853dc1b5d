//! Orphan table: the inodes whose space is still being freed — unlinked
//! while open, or in the middle of a free that takes several transactions
//! (deleting or truncating a large file). One small block, addressed by the
//! root inode's `orphans` field, protected by the root directory's lock.
//!
//! ```text
//! offset size field
//!      0   16 envelope  (magic "VORP", crc32, self_addr)
//!     16    4 count     u32: entries in use
//!     20   12 reserved  zero
//!     32    … entries   { ino u64, generation u64 } × count, unordered
//!   rest      zero
//! ```

use super::block::{get_u32, get_u64, put_u32, put_u64, seal, verify};
use super::FormatError;

/// Magic of an orphan table ("VORP").
pub const ORPHAN_MAGIC: u32 = u32::from_le_bytes(*b"VORP");
const ENTRIES_OFF: usize = 32;
const ENTRY: usize = 16;
const KIND: &str = "orphan table";

/// Entries a table of `size` bytes holds.
pub fn capacity(size: usize) -> usize {
    (size - ENTRIES_OFF) / ENTRY
}

/// Decoded orphan table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanTable {
    pub addr: u64,
    /// (inode number, generation)
    pub entries: Vec<(u64, u64)>,
}

impl OrphanTable {
    /// Encode to `size` bytes; `None` if the entries do not fit.
    pub fn encode(&self, size: usize) -> Option<Vec<u8>> {
        if self.entries.len() > capacity(size) {
            return None;
        }
        let mut b = vec![0u8; size];
        put_u32(&mut b, 16, self.entries.len() as u32);
        for (k, (ino, generation)) in self.entries.iter().enumerate() {
            put_u64(&mut b, ENTRIES_OFF + k * ENTRY, *ino);
            put_u64(&mut b, ENTRIES_OFF + k * ENTRY + 8, *generation);
        }
        seal(&mut b, ORPHAN_MAGIC, self.addr);
        Some(b)
    }

    /// Decode and validate a table read from `addr`.
    pub fn decode(b: &[u8], addr: u64) -> Result<OrphanTable, FormatError> {
        if b.len() < ENTRIES_OFF {
            return Err(FormatError::Truncated {
                kind: KIND,
                addr,
                len: b.len(),
            });
        }
        verify(b, KIND, ORPHAN_MAGIC, addr)?;
        let count = get_u32(b, 16) as usize;
        if count > capacity(b.len()) {
            return Err(FormatError::BadField {
                kind: KIND,
                addr,
                field: "count",
                why: format!("{count} entries, {} fit", capacity(b.len())),
            });
        }
        let entries = (0..count)
            .map(|k| {
                let o = ENTRIES_OFF + k * ENTRY;
                (get_u64(b, o), get_u64(b, o + 8))
            })
            .collect();
        Ok(OrphanTable { addr, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let t = OrphanTable {
            addr: 65536,
            entries: vec![(5, 2), (9, 1)],
        };
        let b = t.encode(65536).unwrap();
        assert_eq!(OrphanTable::decode(&b, 65536).unwrap(), t);
        assert!(OrphanTable::decode(&b, 0).is_err(), "self address");
        let mut d = b.clone();
        d[40] ^= 1;
        assert!(OrphanTable::decode(&d, 65536).is_err(), "checksum");
        assert_eq!(capacity(65536), 4094);
    }
}

//! Pointer block: an array of block addresses, for files past the inode's
//! direct addresses.
//!
//! ```text
//! offset size field
//!      0   16 envelope (magic "VPTR", crc32, self_addr)
//!     16    8 owner     u64: inode number that owns this block
//!     24    1 level     u8: 1 = entries are data blocks, 2 = entries are level-1 pointer blocks
//!     25    7 reserved  zero
//!     32    … entries   u64 block addresses, (pointer_block_size - 32) / 8 of them (8188 at 64 KiB)
//! ```

use super::addr::{BlockAddr, ResourceKind};
use super::block::{get_u64, put_u64, seal, verify};
use super::FormatError;

/// Magic of a pointer block ("VPTR").
pub const POINTER_MAGIC: u32 = u32::from_le_bytes(*b"VPTR");
const ENTRIES_OFF: usize = 32;
const KIND: &str = "pointer block";

/// Entries in a pointer block of `size` bytes.
pub fn entries_per_block(size: u32) -> u64 {
    (u64::from(size) - ENTRIES_OFF as u64) / 8
}

/// Decoded pointer block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointerBlock {
    pub addr: u64,
    pub owner: u64,
    pub level: u8,
    pub entries: Vec<u64>,
}

impl PointerBlock {
    /// An empty pointer block of `size` bytes.
    pub fn new(addr: u64, owner: u64, level: u8, size: u32) -> PointerBlock {
        PointerBlock {
            addr,
            owner,
            level,
            entries: vec![0; entries_per_block(size) as usize],
        }
    }

    /// Encode to `size` bytes (the entry count fixes the size).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; ENTRIES_OFF + self.entries.len() * 8];
        put_u64(&mut b, 16, self.owner);
        b[24] = self.level;
        for (i, e) in self.entries.iter().enumerate() {
            put_u64(&mut b, ENTRIES_OFF + i * 8, *e);
        }
        seal(&mut b, POINTER_MAGIC, self.addr);
        b
    }

    /// Decode and validate a block read from `addr`.
    pub fn decode(b: &[u8], addr: u64) -> Result<PointerBlock, FormatError> {
        if b.len() < ENTRIES_OFF || (b.len() - ENTRIES_OFF) % 8 != 0 {
            return Err(FormatError::Truncated {
                kind: KIND,
                addr,
                len: b.len(),
            });
        }
        verify(b, KIND, POINTER_MAGIC, addr)?;
        let level = b[24];
        if !(1..=2).contains(&level) {
            return Err(bad(addr, "level", format!("level {level} not 1 or 2")));
        }
        let entries: Vec<u64> = (ENTRIES_OFF..b.len())
            .step_by(8)
            .map(|o| get_u64(b, o))
            .collect();
        for &e in &entries {
            match BlockAddr::decode(e).map_err(|why| bad(addr, "entry", why))? {
                Some(a) if level == 2 && a.kind != ResourceKind::PointerBlock => {
                    return Err(bad(
                        addr,
                        "entry",
                        format!("level-2 entry {e:#x} is not a pointer block"),
                    ))
                }
                Some(a) if level == 1 && a.kind == ResourceKind::PointerBlock => {
                    return Err(bad(
                        addr,
                        "entry",
                        format!("level-1 entry {e:#x} is a pointer block"),
                    ))
                }
                _ => {}
            }
        }
        Ok(PointerBlock {
            addr,
            owner: get_u64(b, 16),
            level,
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
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(owner in any::<u64>(), sets in prop::collection::vec((0usize..1020, 0u64..1 << 40), 0..50)) {
            let mut p = PointerBlock::new(1 << 20, owner, 1, 8192);
            for (i, idx) in sets {
                p.entries[i] = BlockAddr::new(ResourceKind::FileBlock, idx).encode();
            }
            prop_assert_eq!(PointerBlock::decode(&p.encode(), p.addr).unwrap(), p);
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..9000), addr in any::<u64>()) {
            let _ = PointerBlock::decode(&bytes, addr);
        }
    }

    #[test]
    fn sixty_four_kib_blocks_reach_62_tib() {
        let n = entries_per_block(64 << 10);
        assert_eq!(n, 8188);
        let blocks = super::super::inode::DIRECT as u64 + n + n * n;
        assert!(blocks * (1 << 20) >= 62 << 40, "{blocks} MiB");
    }
}

//! The COWD header: first 2048 bytes of an ESX `vmfsSparse` delta extent.
//!
//! ```text
//! offset size field
//!      0    4 magic            "COWD"
//!      4    4 version          1
//!      8    4 flags            3
//!     12    4 numSectors       capacity in sectors (u32: < 2 TiB)
//!     16    4 grainSize        sectors per grain (power of two)
//!     20    4 gdOffset         sector of the grain directory
//!     24    4 numGDEntries     ceil(numSectors / (4096 * grainSize))
//!     28    4 freeSector       next free sector in the file
//!     32   12 root geometry    cylinders, heads, sectors (union with the
//!                              1024-byte parent name of old hosted COW
//!                              disks; ESX keeps the parent in the descriptor)
//!   1060    4 generation
//!   1064   60 name
//!   1124  512 description
//!   1636    4 savedGeneration
//!   1640    8 reserved
//!   1648    4 uncleanShutdown
//!   1652  396 padding
//! ```
//! All integers little-endian. Grain directory and grain tables hold u32
//! sector numbers; 0 means not allocated. A grain table has 4096 entries.

use crate::format::block::{get_u32, put_u32};

pub const MAGIC: [u8; 4] = *b"COWD";
pub const HEADER_BYTES: usize = 2048;
pub const HEADER_SECTORS: u64 = 4;
pub const VERSION: u32 = 1;
pub const FLAGS: u32 = 3;
/// Entries of one grain table.
pub const GT_ENTRIES: u64 = 4096;
/// Bytes (and sectors) of one grain table.
pub const GT_BYTES: u64 = GT_ENTRIES * 4;
pub const GT_SECTORS: u64 = GT_BYTES / 512;
/// Largest grain accepted: 1 MiB.
pub const MAX_GRAIN_SECTORS: u32 = 2048;

/// Decoded COWD header (only the fields that mean something on ESX).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CowdHeader {
    pub version: u32,
    pub flags: u32,
    pub num_sectors: u32,
    pub grain_size: u32,
    pub gd_offset: u32,
    pub num_gd_entries: u32,
    pub free_sector: u32,
    pub cylinders: u32,
    pub heads: u32,
    pub sectors_per_track: u32,
    pub generation: u32,
    pub saved_generation: u32,
    pub unclean_shutdown: u32,
}

/// Grain-directory entries needed to cover `num_sectors` with `grain` sectors per grain.
pub fn gd_entries_for(num_sectors: u64, grain: u32) -> u64 {
    let coverage = GT_ENTRIES * grain.max(1) as u64;
    num_sectors.div_ceil(coverage)
}

impl CowdHeader {
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..4].copy_from_slice(&MAGIC);
        let fields = [
            (4, self.version),
            (8, self.flags),
            (12, self.num_sectors),
            (16, self.grain_size),
            (20, self.gd_offset),
            (24, self.num_gd_entries),
            (28, self.free_sector),
            (32, self.cylinders),
            (36, self.heads),
            (40, self.sectors_per_track),
            (1060, self.generation),
            (1636, self.saved_generation),
            (1648, self.unclean_shutdown),
        ];
        for (off, v) in fields {
            put_u32(&mut b, off, v);
        }
        b
    }

    /// Decode; `None` if the buffer is short or the magic is not COWD.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < HEADER_BYTES || b[0..4] != MAGIC {
            return None;
        }
        Some(CowdHeader {
            version: get_u32(b, 4),
            flags: get_u32(b, 8),
            num_sectors: get_u32(b, 12),
            grain_size: get_u32(b, 16),
            gd_offset: get_u32(b, 20),
            num_gd_entries: get_u32(b, 24),
            free_sector: get_u32(b, 28),
            cylinders: get_u32(b, 32),
            heads: get_u32(b, 36),
            sectors_per_track: get_u32(b, 40),
            generation: get_u32(b, 1060),
            saved_generation: get_u32(b, 1636),
            unclean_shutdown: get_u32(b, 1648),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_and_layout() {
        let h = CowdHeader {
            version: VERSION,
            flags: FLAGS,
            num_sectors: 123456,
            grain_size: 8,
            gd_offset: 4,
            num_gd_entries: 4,
            free_sector: 5,
            cylinders: 7,
            heads: 255,
            sectors_per_track: 63,
            generation: 9,
            saved_generation: 10,
            unclean_shutdown: 1,
        };
        let b = h.encode();
        assert_eq!(&b[0..4], b"COWD");
        assert_eq!(get_u32(&b, 12), 123456);
        assert_eq!(get_u32(&b, 28), 5);
        assert_eq!(CowdHeader::decode(&b), Some(h));
        assert_eq!(CowdHeader::decode(&b[..100]), None);
        let mut bad = b;
        bad[0] = b'K';
        assert_eq!(CowdHeader::decode(&bad), None);
    }

    #[test]
    fn gd_entries_cover_capacity() {
        assert_eq!(gd_entries_for(1, 1), 1);
        assert_eq!(gd_entries_for(4096, 1), 1);
        assert_eq!(gd_entries_for(4097, 1), 2);
        assert_eq!(gd_entries_for(4096 * 8 * 3, 8), 3);
    }
}

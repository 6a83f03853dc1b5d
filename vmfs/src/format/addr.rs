//! Block addresses as stored in inodes and pointer blocks.
//!
//! ```text
//! bit 63..62  kind   00 none (the whole address is 0: a hole)
//!                    01 file block, 10 small block, 11 pointer block
//! bit 61      TBZ    to-be-zeroed: allocated, reads as zeros until written
//! bit 60..48  zero   reserved
//! bit 47..0   index  resource number within its kind
//! ```

use serde::Serialize;

/// Kind of resource an address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ResourceKind {
    Inode,
    FileBlock,
    SmallBlock,
    PointerBlock,
}

impl ResourceKind {
    /// All kinds, in on-disk order of their cluster areas.
    pub const ALL: [ResourceKind; 4] = [
        ResourceKind::Inode,
        ResourceKind::FileBlock,
        ResourceKind::SmallBlock,
        ResourceKind::PointerBlock,
    ];

    /// The code stored in cluster headers.
    pub fn code(self) -> u8 {
        match self {
            ResourceKind::Inode => 1,
            ResourceKind::FileBlock => 2,
            ResourceKind::SmallBlock => 3,
            ResourceKind::PointerBlock => 4,
        }
    }

    /// Inverse of [`ResourceKind::code`].
    pub fn from_code(c: u8) -> Option<ResourceKind> {
        Some(match c {
            1 => ResourceKind::Inode,
            2 => ResourceKind::FileBlock,
            3 => ResourceKind::SmallBlock,
            4 => ResourceKind::PointerBlock,
            _ => return None,
        })
    }

    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        usize::from(self.code() - 1)
    }

    /// Name used in messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ResourceKind::Inode => "inode",
            ResourceKind::FileBlock => "file block",
            ResourceKind::SmallBlock => "small block",
            ResourceKind::PointerBlock => "pointer block",
        }
    }
}

const KIND_SHIFT: u32 = 62;
const TBZ_BIT: u64 = 1 << 61;
const RESERVED_MASK: u64 = 0x1fff << 48;
/// Largest resource index an address can hold.
pub const MAX_INDEX: u64 = (1 << 48) - 1;

/// A decoded block address: `None` for a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockAddr {
    pub kind: ResourceKind,
    pub index: u64,
    /// Lazy-zeroed: the block is allocated but reads as zeros until written.
    pub to_be_zeroed: bool,
}

impl BlockAddr {
    /// A data or pointer block address.
    pub fn new(kind: ResourceKind, index: u64) -> BlockAddr {
        BlockAddr {
            kind,
            index,
            to_be_zeroed: false,
        }
    }

    /// Encode; holes are encoded by the caller as 0.
    pub fn encode(self) -> u64 {
        let k: u64 = match self.kind {
            ResourceKind::FileBlock => 1,
            ResourceKind::SmallBlock => 2,
            ResourceKind::PointerBlock => 3,
            // Inodes are named by number, never by block address.
            ResourceKind::Inode => unreachable!("inodes have no block address"),
        };
        (k << KIND_SHIFT) | if self.to_be_zeroed { TBZ_BIT } else { 0 } | (self.index & MAX_INDEX)
    }

    /// Decode a raw address: `Ok(None)` is a hole, `Err` an impossible value
    /// (reserved bits set, or TBZ on a pointer block or a hole).
    pub fn decode(raw: u64) -> Result<Option<BlockAddr>, String> {
        if raw == 0 {
            return Ok(None);
        }
        if raw & RESERVED_MASK != 0 {
            return Err(format!("block address {raw:#018x} has reserved bits set"));
        }
        let kind = match raw >> KIND_SHIFT {
            1 => ResourceKind::FileBlock,
            2 => ResourceKind::SmallBlock,
            3 => ResourceKind::PointerBlock,
            _ => return Err(format!("block address {raw:#018x} has no kind")),
        };
        let to_be_zeroed = raw & TBZ_BIT != 0;
        if to_be_zeroed && kind == ResourceKind::PointerBlock {
            return Err(format!(
                "pointer block address {raw:#018x} marked to-be-zeroed"
            ));
        }
        Ok(Some(BlockAddr {
            kind,
            index: raw & MAX_INDEX,
            to_be_zeroed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(kind in 0usize..3, index in 0..=MAX_INDEX, tbz in any::<bool>()) {
            let kind = [ResourceKind::FileBlock, ResourceKind::SmallBlock, ResourceKind::PointerBlock][kind];
            let a = BlockAddr { kind, index, to_be_zeroed: tbz && kind != ResourceKind::PointerBlock };
            prop_assert_eq!(BlockAddr::decode(a.encode()).unwrap(), Some(a));
        }

        #[test]
        fn any_u64_decodes_without_panic(raw in any::<u64>()) {
            let _ = BlockAddr::decode(raw);
        }
    }

    #[test]
    fn zero_is_a_hole() {
        assert_eq!(BlockAddr::decode(0).unwrap(), None);
        assert!(BlockAddr::decode(1 << 48).is_err());
    }
}

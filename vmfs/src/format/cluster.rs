//! Resource cluster metadata: one 4 KiB unit per cluster,
//! `[lock record 512 B][cluster header + bitmap 3584 B]`, so the lock record
//! sits just before the bitmap it protects.
//!
//! ```text
//! cluster header (at unit + 512, 3584 bytes)
//! offset size field
//!      0   16 envelope (magic "VCLS", crc32, self_addr)
//!     16    1 kind            u8: 1 inode, 2 file block, 3 small block, 4 pointer block
//!     17    3 reserved        zero
//!     20    4 cluster         u32: cluster number within its kind
//!     24    8 first_resource  u64: resource number of bit 0
//!     32    4 resource_count  u32: resources in this cluster (bits used)
//!     36    4 free_count      u32: zero bits among them
//!     40   24 reserved        zero
//!     64 3520 bitmap          bit i (LSB first) set = resource first_resource+i in use
//! ```
//! Invariant: `free_count` equals the number of clear bits below
//! `resource_count`, and bits at or above it are clear. Decoding checks both.

use super::addr::ResourceKind;
use super::block::{get_u32, get_u64, put_u32, put_u64, seal, verify_sized};
use super::{FormatError, SECTOR};

/// Magic of a cluster header ("VCLS").
pub const CLUSTER_MAGIC: u32 = u32::from_le_bytes(*b"VCLS");
/// Bytes of the cluster header block (after the lock record).
pub const CLUSTER_HEADER_LEN: usize = 4096 - SECTOR;
const BITMAP_OFF: usize = 64;
/// Most resources one cluster can track.
pub const MAX_PER_CLUSTER: u32 = ((CLUSTER_HEADER_LEN - BITMAP_OFF) * 8) as u32;

const KIND: &str = "cluster header";

/// Decoded cluster header with its bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHeader {
    /// Byte offset of this header block (unit offset + 512).
    pub addr: u64,
    pub kind: ResourceKind,
    pub cluster: u32,
    pub first_resource: u64,
    pub resource_count: u32,
    bitmap: Vec<u8>,
    free: u32,
}

impl ClusterHeader {
    /// An empty cluster.
    pub fn new(
        addr: u64,
        kind: ResourceKind,
        cluster: u32,
        first_resource: u64,
        resource_count: u32,
    ) -> ClusterHeader {
        assert!(resource_count <= MAX_PER_CLUSTER, "cluster too large");
        ClusterHeader {
            addr,
            kind,
            cluster,
            first_resource,
            resource_count,
            bitmap: vec![0; CLUSTER_HEADER_LEN - BITMAP_OFF],
            free: resource_count,
        }
    }

    /// Free resources in this cluster.
    pub fn free_count(&self) -> u32 {
        self.free
    }

    /// Is resource `i` (relative to the cluster) in use?
    pub fn is_set(&self, i: u32) -> bool {
        i < self.resource_count && self.bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0
    }

    /// Mark resource `i` in use or free; returns the previous state.
    pub fn set(&mut self, i: u32, used: bool) -> bool {
        assert!(i < self.resource_count, "bit {i} outside cluster");
        let was = self.is_set(i);
        let byte = &mut self.bitmap[(i / 8) as usize];
        if used {
            *byte |= 1 << (i % 8);
        } else {
            *byte &= !(1 << (i % 8));
        }
        match (was, used) {
            (false, true) => self.free -= 1,
            (true, false) => self.free += 1,
            _ => {}
        }
        was
    }

    /// First free resource at or after `from` (wrapping), if any.
    pub fn find_free(&self, from: u32) -> Option<u32> {
        if self.free == 0 {
            return None;
        }
        let n = self.resource_count;
        let from = from % n;
        (0..n)
            .map(|k| ((u64::from(from) + u64::from(k)) % u64::from(n)) as u32)
            .find(|&i| !self.is_set(i))
    }

    /// Encode to the 3584-byte header block.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; CLUSTER_HEADER_LEN];
        b[16] = self.kind.code();
        put_u32(&mut b, 20, self.cluster);
        put_u64(&mut b, 24, self.first_resource);
        put_u32(&mut b, 32, self.resource_count);
        put_u32(&mut b, 36, self.free);
        b[BITMAP_OFF..].copy_from_slice(&self.bitmap);
        seal(&mut b, CLUSTER_MAGIC, self.addr);
        b
    }

    /// Decode and validate a header block read from `addr`.
    pub fn decode(b: &[u8], addr: u64) -> Result<ClusterHeader, FormatError> {
        verify_sized(b, CLUSTER_HEADER_LEN, KIND, CLUSTER_MAGIC, addr)?;
        let kind = ResourceKind::from_code(b[16])
            .ok_or_else(|| bad(addr, "kind", format!("unknown resource kind {}", b[16])))?;
        let resource_count = get_u32(b, 32);
        if resource_count > MAX_PER_CLUSTER {
            return Err(bad(
                addr,
                "resource_count",
                format!("{resource_count} > {MAX_PER_CLUSTER}"),
            ));
        }
        let h = ClusterHeader {
            addr,
            kind,
            cluster: get_u32(b, 20),
            first_resource: get_u64(b, 24),
            resource_count,
            bitmap: b[BITMAP_OFF..].to_vec(),
            free: get_u32(b, 36),
        };
        // Whole bytes, then the partial last byte (counting bit by bit made
        // this the hottest function of a check).
        let (whole, rest) = ((resource_count / 8) as usize, resource_count % 8);
        let mut used: u32 = h.bitmap[..whole].iter().map(|b| b.count_ones()).sum();
        if rest > 0 {
            used += (h.bitmap[whole] & ((1u8 << rest) - 1)).count_ones();
        }
        if used + h.free != resource_count {
            return Err(bad(
                addr,
                "free_count",
                format!(
                    "{} free recorded, bitmap says {}",
                    h.free,
                    resource_count - used
                ),
            ));
        }
        let stray = (rest > 0 && h.bitmap[whole] >> rest != 0)
            || h.bitmap[whole + usize::from(rest > 0)..]
                .iter()
                .any(|&b| b != 0);
        if stray {
            return Err(bad(addr, "bitmap", "bits set beyond resource_count".into()));
        }
        Ok(h)
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
        fn round_trip(count in 1u32..=MAX_PER_CLUSTER, bits in prop::collection::vec(any::<u32>(), 0..200), first in any::<u32>()) {
            let mut h = ClusterHeader::new(4096 + 512, ResourceKind::FileBlock, 3, u64::from(first), count);
            for b in bits {
                h.set(b % count, true);
            }
            let d = ClusterHeader::decode(&h.encode(), h.addr).unwrap();
            prop_assert_eq!(d.free_count(), h.free_count());
            prop_assert_eq!(d, h);
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), CLUSTER_HEADER_LEN..=CLUSTER_HEADER_LEN), addr in any::<u64>()) {
            let _ = ClusterHeader::decode(&bytes, addr);
        }

        #[test]
        fn bit_flips_are_detected(bit in 0usize..CLUSTER_HEADER_LEN * 8) {
            let mut h = ClusterHeader::new(512, ResourceKind::Inode, 0, 0, 1024);
            h.set(5, true);
            let mut b = h.encode();
            b[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(ClusterHeader::decode(&b, 512).is_err());
        }
    }

    #[test]
    fn set_find_free_and_counts() {
        let mut h = ClusterHeader::new(512, ResourceKind::SmallBlock, 0, 100, 10);
        assert_eq!(h.find_free(0), Some(0));
        for i in 0..10 {
            h.set(i, true);
        }
        assert_eq!(h.find_free(3), None);
        h.set(7, false);
        assert_eq!(h.find_free(8), Some(7));
        assert_eq!(h.free_count(), 1);
    }
}

//! Space accounting from the cluster bitmaps (read-only, no locks).

use serde::Serialize;

use super::Volume;
use crate::dev::DevError;
use crate::format::cluster::ClusterHeader;
use crate::format::header::META_BLOCK;
use crate::format::{ResourceKind, SECTOR};

/// Totals for one resource kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindSpace {
    pub kind: &'static str,
    pub total: u64,
    pub free: u64,
    pub clusters: u32,
    /// Clusters whose header failed its checks: counted as having no free
    /// resources (a damaged bitmap is never read as free).
    pub damaged_clusters: u32,
    pub resource_size: u32,
}

/// Totals for every kind.
#[derive(Debug, Clone, Serialize)]
pub struct SpaceReport {
    pub inodes: KindSpace,
    pub file_blocks: KindSpace,
    pub small_blocks: KindSpace,
    pub pointer_blocks: KindSpace,
}

impl SpaceReport {
    /// Bytes free for file data (file blocks).
    pub fn free_bytes(&self) -> u64 {
        self.file_blocks.free * u64::from(self.file_blocks.resource_size)
    }
}

impl Volume {
    /// Count free resources of one kind by reading every cluster header.
    pub fn kind_space(&self, kind: ResourceKind) -> Result<KindSpace, DevError> {
        let reg = *self.header.region(kind);
        const BATCH: u32 = 256;
        let mut free = 0u64;
        let mut damaged = 0u32;
        let mut c = 0;
        while c < reg.clusters {
            let n = BATCH.min(reg.clusters - c);
            let base = self.cluster_lock_addr(kind, c);
            let mut buf = vec![0u8; n as usize * META_BLOCK as usize];
            self.dev.read_at(&mut buf, base)?;
            for i in 0..n as usize {
                let o = i * META_BLOCK as usize;
                let addr = base + o as u64 + SECTOR as u64;
                match ClusterHeader::decode(&buf[o + SECTOR..o + META_BLOCK as usize], addr) {
                    Ok(h) if h.kind == kind => free += u64::from(h.free_count()),
                    _ => damaged += 1,
                }
            }
            c += n;
        }
        Ok(KindSpace {
            kind: kind.name(),
            total: reg.count,
            free,
            clusters: reg.clusters,
            damaged_clusters: damaged,
            resource_size: reg.resource_size,
        })
    }

    /// Space of every kind.
    pub fn space(&self) -> Result<SpaceReport, DevError> {
        Ok(SpaceReport {
            inodes: self.kind_space(ResourceKind::Inode)?,
            file_blocks: self.kind_space(ResourceKind::FileBlock)?,
            small_blocks: self.kind_space(ResourceKind::SmallBlock)?,
            pointer_blocks: self.kind_space(ResourceKind::PointerBlock)?,
        })
    }
}

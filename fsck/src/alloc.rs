//! Allocation without a host (fsck repairs, the wreck tool): find a clear
//! bit in a cluster whose header decodes, set it, write the header whole
//! and flush, so the resource is marked in use before anything points at
//! it (a repair cut short leaves a leak, never a shared block).

use vmfs::format::cluster::ClusterHeader;
use vmfs::format::header::META_BLOCK;
use vmfs::format::{ResourceKind, SECTOR};
use vmfs::volume::Volume;

use crate::{Disk, FsckError};

/// Cluster `c` of `kind`, if its header decodes and matches the layout.
pub fn read_cluster(
    disk: &Disk,
    vol: &Volume,
    kind: ResourceKind,
    c: u32,
) -> Result<Option<ClusterHeader>, FsckError> {
    let addr = vol.cluster_header_addr(kind, c);
    let b = disk.read(addr, META_BLOCK as usize - SECTOR)?;
    let per = u64::from(vol.header.region(kind).per_cluster);
    Ok(ClusterHeader::decode(&b, addr).ok().filter(|h| {
        h.kind == kind
            && h.cluster == c
            && h.first_resource == u64::from(c) * per
            && h.resource_count == vol.cluster_len(kind, c)
    }))
}

/// Is resource `r` marked in use? `None`: its cluster is damaged.
pub fn is_allocated(
    disk: &Disk,
    vol: &Volume,
    kind: ResourceKind,
    r: u64,
) -> Result<Option<bool>, FsckError> {
    if r >= vol.header.region(kind).count {
        return Ok(Some(false));
    }
    let (c, i) = vol.cluster_of(kind, r);
    Ok(read_cluster(disk, vol, kind, c)?.map(|h| h.is_set(i)))
}

/// Set or clear resource `r`'s bit (its cluster must decode).
pub fn set_bit(
    disk: &Disk,
    vol: &Volume,
    kind: ResourceKind,
    r: u64,
    used: bool,
) -> Result<bool, FsckError> {
    let (c, i) = vol.cluster_of(kind, r);
    let Some(mut h) = read_cluster(disk, vol, kind, c)? else {
        return Ok(false);
    };
    if i >= h.resource_count {
        return Ok(false);
    }
    h.set(i, used);
    disk.write(h.addr, &h.encode())?;
    Ok(true)
}

/// Allocate one resource of `kind` (never inode 0); flushed.
pub fn alloc(disk: &Disk, vol: &Volume, kind: ResourceKind) -> Result<u64, FsckError> {
    for c in 0..vol.header.region(kind).clusters {
        let Some(mut h) = read_cluster(disk, vol, kind, c)? else {
            continue;
        };
        while let Some(i) = h.find_free(0) {
            let r = h.first_resource + u64::from(i);
            if r == 0 && kind == ResourceKind::Inode {
                // Inode 0 is never used: it is always marked in use.
                h.set(i, true);
                continue;
            }
            h.set(i, true);
            disk.write(h.addr, &h.encode())?;
            disk.flush()?;
            return Ok(r);
        }
    }
    Err(FsckError::Refused(format!(
        "no free {} to repair with",
        kind.name()
    )))
}

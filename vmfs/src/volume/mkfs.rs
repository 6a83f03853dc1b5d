//! mkfs: write a fresh volume. Order for crash safety: invalidate any old
//! headers first, write all other metadata, flush, then the headers, flush.
//! A crash before the final flush leaves a device with no valid header,
//! never a half-formatted volume that looks valid.

use rand::RngCore;

use super::plan::{plan, MkfsOptions, PlanError};
use super::read_header;
use crate::dev::{DevError, SharedDev};
use crate::format::cluster::ClusterHeader;
use crate::format::header::{Header, HEADER_LEN, META_BLOCK};
use crate::format::{HeartbeatSlot, Inode, LockRecord, ResourceKind, SECTOR};

/// Why mkfs refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MkfsError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Device(#[from] DevError),
    #[error("{device} already holds vmfs volume '{label}' ({uuid}); use --force to overwrite it")]
    AlreadyFormatted {
        device: String,
        label: String,
        uuid: String,
    },
    #[error("{device} has {block_size}-byte logical blocks; vmfs needs 512-byte sectors for its heartbeat slots and lock records")]
    UnsupportedBlockSize { device: String, block_size: u32 },
}

/// Format `dev`. Returns the new header.
pub fn mkfs(dev: &SharedDev, opts: &MkfsOptions, force: bool) -> Result<Header, MkfsError> {
    if dev.logical_block_size() as usize != SECTOR {
        return Err(MkfsError::UnsupportedBlockSize {
            device: dev.name().to_string(),
            block_size: dev.logical_block_size(),
        });
    }
    let mut uuid = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut uuid);
    // RFC 4122 version 4 bits, so tools that parse UUIDs accept it.
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let h = plan(dev.size(), opts, uuid, now)?;

    if !force {
        // Refuse if either header copy checks, whatever else is wrong.
        let backup = (dev.size() / (1 << 20) * (1 << 20)).checked_sub(HEADER_LEN as u64);
        for addr in std::iter::once(0).chain(backup) {
            if let Ok(old) = read_header(dev, addr)? {
                return Err(MkfsError::AlreadyFormatted {
                    device: dev.name().to_string(),
                    label: old.label.clone(),
                    uuid: old.uuid_string(),
                });
            }
        }
    }
    // Invalidate old headers (primary, and any backup where a volume of
    // this device's size would keep it) before anything else.
    let zeros = vec![0u8; HEADER_LEN];
    dev.write_at(&zeros, 0)?;
    for addr in [
        h.backup_offset(),
        dev.size() / HEADER_LEN as u64 * HEADER_LEN as u64 - HEADER_LEN as u64,
    ] {
        if let Ok(Ok(_)) = read_header(dev, addr) {
            dev.write_at(&zeros, addr)?;
        }
    }
    dev.flush()?;

    write_heartbeat_region(dev, &h)?;
    for slot in 0..h.max_hosts {
        let addr = h.journal_offset + u64::from(slot) * h.journal_size;
        dev.write_zeroes(addr, META_BLOCK)?;
    }
    for kind in ResourceKind::ALL {
        write_clusters(dev, &h, kind)?;
    }
    write_root(dev, &h, now)?;
    dev.flush()?;
    dev.write_at(&h.encode(h.backup_offset()), h.backup_offset())?;
    dev.write_at(&h.encode(0), 0)?;
    dev.flush()?;
    Ok(h)
}

fn write_heartbeat_region(dev: &SharedDev, h: &Header) -> Result<(), DevError> {
    let mut buf = Vec::with_capacity(h.max_hosts as usize * SECTOR);
    for slot in 0..u64::from(h.max_hosts) {
        let addr = h.heartbeat_offset + slot * SECTOR as u64;
        let journal = h.journal_offset + slot * h.journal_size;
        buf.extend_from_slice(&HeartbeatSlot::free(addr, journal, h.journal_size).encode());
    }
    dev.write_at(&buf, h.heartbeat_offset)
}

/// Lock record `resource` field of a cluster lock: kind code in the top
/// byte, cluster number below (informative; fsck checks it).
pub fn cluster_lock_resource(kind: ResourceKind, cluster: u32) -> u64 {
    (u64::from(kind.code()) << 56) | u64::from(cluster)
}

fn write_clusters(dev: &SharedDev, h: &Header, kind: ResourceKind) -> Result<(), DevError> {
    let reg = *h.region(kind);
    // 256 units (1 MiB) per write keeps a 64 TiB mkfs to a few hundred writes.
    const BATCH: u32 = 256;
    let mut c = 0;
    while c < reg.clusters {
        let n = BATCH.min(reg.clusters - c);
        let base = reg.cluster_meta_offset + u64::from(c) * META_BLOCK;
        let mut buf = vec![0u8; n as usize * META_BLOCK as usize];
        for i in 0..n {
            let cl = c + i;
            let unit = base + u64::from(i) * META_BLOCK;
            let first = u64::from(cl) * u64::from(reg.per_cluster);
            let len = (reg.count - first).min(u64::from(reg.per_cluster)) as u32;
            let mut ch = ClusterHeader::new(unit + SECTOR as u64, kind, cl, first, len);
            if kind == ResourceKind::Inode && cl == 0 {
                ch.set(0, true); // inode 0 is never used
                ch.set(h.root_ino as u32, true);
            }
            let o = (i as usize) * META_BLOCK as usize;
            buf[o..o + SECTOR]
                .copy_from_slice(&LockRecord::free(unit, cluster_lock_resource(kind, cl)).encode());
            buf[o + SECTOR..o + META_BLOCK as usize].copy_from_slice(&ch.encode());
        }
        dev.write_at(&buf, base)?;
        c += n;
    }
    Ok(())
}

fn write_root(dev: &SharedDev, h: &Header, now: u64) -> Result<(), DevError> {
    let reg = h.region(ResourceKind::Inode);
    let addr = reg.resource_offset + h.root_ino * u64::from(reg.resource_size);
    let mut ino = Inode::new(addr + SECTOR as u64, h.root_ino, 1, libc::S_IFDIR | 0o755);
    ino.nlink = 2;
    ino.parent = h.root_ino;
    let now = now as i64;
    (ino.atime_ns, ino.mtime_ns, ino.ctime_ns, ino.btime_ns) = (now, now, now, now);
    let mut buf = vec![0u8; 4096];
    buf[..SECTOR].copy_from_slice(&LockRecord::free(addr, h.root_ino).encode());
    buf[SECTOR..].copy_from_slice(&ino.encode());
    dev.write_at(&buf, addr)
}

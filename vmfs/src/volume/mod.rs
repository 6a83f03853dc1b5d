//! A formatted volume: opening it (read-only, no locks, no heartbeat slot),
//! the offset arithmetic every other module uses, mkfs, and space accounting.

mod mkfs;
mod plan;
mod space;

pub use mkfs::{cluster_lock_resource, mkfs, MkfsError};
pub use plan::{minimum_size, plan, MkfsOptions, PlanError, MAX_VOLUME, ROOT_INO};
pub use space::{KindSpace, SpaceReport};

use crate::dev::{DevError, SharedDev};
use crate::format::header::{Header, HEADER_LEN, META_BLOCK};
use crate::format::{FormatError, ResourceKind, SECTOR};

/// Why a volume could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(transparent)]
    Device(#[from] DevError),
    #[error("{device}: no vmfs volume found (primary header: {primary}; backup header: {backup})")]
    NoVolume {
        device: String,
        primary: Box<FormatError>,
        backup: Box<FormatError>,
    },
    #[error("{device}: the volume is {volume_size} bytes but the device has only {device_size}")]
    DeviceTooSmall {
        device: String,
        volume_size: u64,
        device_size: u64,
    },
}

/// An opened volume: its device and header.
#[derive(Debug, Clone)]
pub struct Volume {
    pub dev: SharedDev,
    pub header: Header,
    /// The primary header was bad and the backup was used.
    pub from_backup: bool,
}

/// Offset of the backup header for a device of `dev_size` bytes whose
/// primary header cannot be read (volumes are sized in whole MiB).
fn backup_guess(dev_size: u64) -> Option<u64> {
    let vol = dev_size / (1 << 20) * (1 << 20);
    vol.checked_sub(HEADER_LEN as u64)
}

/// Read the header at `addr`.
pub fn read_header(dev: &SharedDev, addr: u64) -> Result<Result<Header, FormatError>, DevError> {
    let mut b = vec![0u8; HEADER_LEN];
    if addr + HEADER_LEN as u64 > dev.size() {
        return Ok(Err(FormatError::Truncated {
            kind: "volume header",
            addr,
            len: dev.size().saturating_sub(addr) as usize,
        }));
    }
    dev.read_at(&mut b, addr)?;
    Ok(Header::decode(&b, addr))
}

impl Volume {
    /// Open the volume on `dev`: the primary header, or the backup when the
    /// primary is damaged (with a warning). Takes no lock and needs no
    /// heartbeat slot, so it works while other hosts are live.
    pub fn open(dev: SharedDev) -> Result<Volume, VolumeError> {
        let primary = read_header(&dev, 0)?;
        let (header, from_backup) = match primary {
            Ok(h) => (h, false),
            Err(primary) => {
                let backup = match backup_guess(dev.size()) {
                    Some(addr) => read_header(&dev, addr)?,
                    None => Err(FormatError::Truncated {
                        kind: "volume header",
                        addr: 0,
                        len: dev.size() as usize,
                    }),
                };
                match backup {
                    Ok(h) => {
                        tracing::warn!(
                            device = dev.name(),
                            "primary volume header is damaged ({primary}); using the backup"
                        );
                        (h, true)
                    }
                    Err(backup) => {
                        return Err(VolumeError::NoVolume {
                            device: dev.name().to_string(),
                            primary: Box::new(primary),
                            backup: Box::new(backup),
                        })
                    }
                }
            }
        };
        if header.volume_size > dev.size() {
            return Err(VolumeError::DeviceTooSmall {
                device: dev.name().to_string(),
                volume_size: header.volume_size,
                device_size: dev.size(),
            });
        }
        Ok(Volume {
            dev,
            header,
            from_backup,
        })
    }

    /// Offset of heartbeat slot `slot`.
    pub fn heartbeat_slot_addr(&self, slot: u32) -> u64 {
        self.header.heartbeat_offset + u64::from(slot) * SECTOR as u64
    }

    /// Offset of host slot `slot`'s journal.
    pub fn journal_addr(&self, slot: u32) -> u64 {
        self.header.journal_offset + u64::from(slot) * self.header.journal_size
    }

    /// Offset of cluster `c`'s lock record.
    pub fn cluster_lock_addr(&self, kind: ResourceKind, c: u32) -> u64 {
        self.header.region(kind).cluster_meta_offset + u64::from(c) * META_BLOCK
    }

    /// Offset of cluster `c`'s header + bitmap block.
    pub fn cluster_header_addr(&self, kind: ResourceKind, c: u32) -> u64 {
        self.cluster_lock_addr(kind, c) + SECTOR as u64
    }

    /// Cluster holding resource `r`, and its index within the cluster.
    pub fn cluster_of(&self, kind: ResourceKind, r: u64) -> (u32, u32) {
        let per = u64::from(self.header.region(kind).per_cluster);
        ((r / per) as u32, (r % per) as u32)
    }

    /// Resources in cluster `c` (the last cluster may be short).
    pub fn cluster_len(&self, kind: ResourceKind, c: u32) -> u32 {
        let reg = self.header.region(kind);
        let first = u64::from(c) * u64::from(reg.per_cluster);
        (reg.count - first).min(u64::from(reg.per_cluster)) as u32
    }

    /// Offset of resource `r` of `kind` (an inode's lock record, a block).
    pub fn resource_addr(&self, kind: ResourceKind, r: u64) -> u64 {
        let reg = self.header.region(kind);
        reg.resource_offset + r * u64::from(reg.resource_size)
    }

    /// Offset of inode `ino` (its lock record; the body follows at +512).
    pub fn inode_addr(&self, ino: u64) -> u64 {
        self.resource_addr(ResourceKind::Inode, ino)
    }
}

#[cfg(test)]
mod tests;

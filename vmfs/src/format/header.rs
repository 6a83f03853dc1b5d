//! Volume header: primary at offset 0, backup in the last 4 KiB of the
//! volume. Byte layout in `docs/format.md`.

use serde::Serialize;

use super::addr::ResourceKind;
use super::block::{get_u32, get_u64, put_u32, put_u64, seal, verify_sized};
use super::FormatError;

/// Magic of the volume header ("VMFS").
pub const HEADER_MAGIC: u32 = u32::from_le_bytes(*b"VMFS");
/// On-disk format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the header block.
pub const HEADER_LEN: usize = 4096;
/// Bytes kept for the label.
pub const LABEL_LEN: usize = 64;
/// Metadata block size: cluster metadata units, inodes.
pub const META_BLOCK: u64 = 4096;
/// Incompatible feature: regular files may keep their data in small blocks
/// (inode flag SMALL_BLOCKS). A build that does not know a feature bit
/// refuses the volume rather than calling such files corrupt.
pub const FEATURE_SMALL_FILES: u32 = 1;
/// Every incompatible feature this build knows.
pub const KNOWN_FEATURES: u32 = FEATURE_SMALL_FILES;

const KIND: &str = "volume header";
const REGIONS_OFF: usize = 184;
const REGION_LEN: usize = 48;

/// Where one kind of resource lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResourceRegion {
    /// Offset of cluster 0's metadata unit (lock record + cluster header).
    pub cluster_meta_offset: u64,
    /// Number of clusters.
    pub clusters: u32,
    /// Resources per cluster (the last cluster may hold fewer).
    pub per_cluster: u32,
    /// Offset of resource 0.
    pub resource_offset: u64,
    /// Number of resources of this kind.
    pub count: u64,
    /// Bytes per resource.
    pub resource_size: u32,
}

/// Timeout minimums every host must honour (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimeoutMinimums {
    pub io_timeout_ms: u32,
    pub heartbeat_ms: u32,
    pub self_fence_ms: u32,
    pub dead_after_ms: u32,
}

impl Default for TimeoutMinimums {
    fn default() -> Self {
        TimeoutMinimums {
            io_timeout_ms: 8_000,
            heartbeat_ms: 3_000,
            self_fence_ms: 16_000,
            dead_after_ms: 25_000,
        }
    }
}

/// Decoded volume header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    pub version: u32,
    /// Incompatible features in use (`FEATURE_*`); unknown bits refuse the volume.
    pub features: u32,
    pub uuid: [u8; 16],
    pub label: String,
    /// Bytes of the device the volume uses (the backup header ends here).
    pub volume_size: u64,
    pub created_unix_ns: u64,
    pub file_block_size: u32,
    pub small_block_size: u32,
    pub pointer_block_size: u32,
    pub inode_size: u32,
    pub max_hosts: u32,
    pub heartbeat_offset: u64,
    pub journal_offset: u64,
    /// Bytes of each host's journal.
    pub journal_size: u64,
    pub timeouts: TimeoutMinimums,
    /// Indexed by [`ResourceKind::index`].
    pub regions: [ResourceRegion; 4],
    pub root_ino: u64,
    pub mkfs_version: String,
}

impl Header {
    /// The region of one resource kind.
    pub fn region(&self, kind: ResourceKind) -> &ResourceRegion {
        &self.regions[kind.index()]
    }

    /// Offset of the backup header.
    pub fn backup_offset(&self) -> u64 {
        self.volume_size - HEADER_LEN as u64
    }

    /// UUID in the usual 8-4-4-4-12 text form.
    pub fn uuid_string(&self) -> String {
        uuid_string(&self.uuid)
    }

    /// Encode the header for offset `addr` (0 or the backup offset).
    pub fn encode(&self, addr: u64) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        put_u32(&mut b, 16, self.version);
        put_u32(&mut b, 20, self.features);
        b[24..40].copy_from_slice(&self.uuid);
        put_str(&mut b[40..40 + LABEL_LEN], &self.label);
        put_u64(&mut b, 104, self.volume_size);
        put_u64(&mut b, 112, self.created_unix_ns);
        put_u32(&mut b, 120, self.file_block_size);
        put_u32(&mut b, 124, self.small_block_size);
        put_u32(&mut b, 128, self.pointer_block_size);
        put_u32(&mut b, 132, self.inode_size);
        put_u32(&mut b, 136, self.max_hosts);
        put_u64(&mut b, 144, self.heartbeat_offset);
        put_u64(&mut b, 152, self.journal_offset);
        put_u64(&mut b, 160, self.journal_size);
        put_u32(&mut b, 168, self.timeouts.io_timeout_ms);
        put_u32(&mut b, 172, self.timeouts.heartbeat_ms);
        put_u32(&mut b, 176, self.timeouts.self_fence_ms);
        put_u32(&mut b, 180, self.timeouts.dead_after_ms);
        for (i, r) in self.regions.iter().enumerate() {
            let o = REGIONS_OFF + i * REGION_LEN;
            put_u64(&mut b, o, r.cluster_meta_offset);
            put_u32(&mut b, o + 8, r.clusters);
            put_u32(&mut b, o + 12, r.per_cluster);
            put_u64(&mut b, o + 16, r.resource_offset);
            put_u64(&mut b, o + 24, r.count);
            put_u32(&mut b, o + 32, r.resource_size);
        }
        put_u64(&mut b, 376, self.root_ino);
        put_str(&mut b[384..416], &self.mkfs_version);
        seal(&mut b, HEADER_MAGIC, addr);
        b
    }

    /// Decode and validate a header block read from `addr`.
    pub fn decode(b: &[u8], addr: u64) -> Result<Header, FormatError> {
        verify_sized(b, HEADER_LEN, KIND, HEADER_MAGIC, addr)?;
        let version = get_u32(b, 16);
        let features = get_u32(b, 20);
        if features & !KNOWN_FEATURES != 0 {
            return Err(bad(
                addr,
                "features",
                format!(
                    "incompatible features {features:#x}; this build knows {KNOWN_FEATURES:#x}"
                ),
            ));
        }
        if version != FORMAT_VERSION {
            return Err(bad(
                addr,
                "version",
                format!("format version {version}; this build reads version {FORMAT_VERSION}"),
            ));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[24..40]);
        let mut regions = [ResourceRegion {
            cluster_meta_offset: 0,
            clusters: 0,
            per_cluster: 0,
            resource_offset: 0,
            count: 0,
            resource_size: 0,
        }; 4];
        for (i, r) in regions.iter_mut().enumerate() {
            let o = REGIONS_OFF + i * REGION_LEN;
            *r = ResourceRegion {
                cluster_meta_offset: get_u64(b, o),
                clusters: get_u32(b, o + 8),
                per_cluster: get_u32(b, o + 12),
                resource_offset: get_u64(b, o + 16),
                count: get_u64(b, o + 24),
                resource_size: get_u32(b, o + 32),
            };
        }
        let h = Header {
            version,
            features,
            uuid,
            label: get_str(&b[40..40 + LABEL_LEN], addr, "label")?,
            volume_size: get_u64(b, 104),
            created_unix_ns: get_u64(b, 112),
            file_block_size: get_u32(b, 120),
            small_block_size: get_u32(b, 124),
            pointer_block_size: get_u32(b, 128),
            inode_size: get_u32(b, 132),
            max_hosts: get_u32(b, 136),
            heartbeat_offset: get_u64(b, 144),
            journal_offset: get_u64(b, 152),
            journal_size: get_u64(b, 160),
            timeouts: TimeoutMinimums {
                io_timeout_ms: get_u32(b, 168),
                heartbeat_ms: get_u32(b, 172),
                self_fence_ms: get_u32(b, 176),
                dead_after_ms: get_u32(b, 180),
            },
            regions,
            root_ino: get_u64(b, 376),
            mkfs_version: get_str(&b[384..416], addr, "mkfs_version")?,
        };
        h.validate(addr)?;
        Ok(h)
    }

    /// Geometry checks: everything inside the volume, nothing overlapping,
    /// sizes sane. A header that passes can be used for offset arithmetic
    /// without overflow.
    pub fn validate(&self, addr: u64) -> Result<(), FormatError> {
        let err = |field, why: String| Err(bad(addr, field, why));
        for (field, v, lo, hi) in [
            ("file_block_size", self.file_block_size, 1 << 20, 64 << 20),
            ("small_block_size", self.small_block_size, 4096, 1 << 20),
            ("pointer_block_size", self.pointer_block_size, 4096, 1 << 20),
            ("inode_size", self.inode_size, 4096, 4096),
        ] {
            if !v.is_power_of_two() || v < lo || v > hi {
                return err(field, format!("{v} is not a power of two in {lo}..={hi}"));
            }
        }
        if self.max_hosts == 0 || self.max_hosts > super::MAX_HOSTS {
            return err(
                "max_hosts",
                format!("{} not in 1..={}", self.max_hosts, super::MAX_HOSTS),
            );
        }
        if self.volume_size < HEADER_LEN as u64 * 2 || self.volume_size % META_BLOCK != 0 {
            return err(
                "volume_size",
                format!("{} is not a usable size", self.volume_size),
            );
        }
        if self.journal_size < META_BLOCK || self.journal_size % META_BLOCK != 0 {
            return err(
                "journal_size",
                format!("{} is not a multiple of 4096", self.journal_size),
            );
        }
        let mut spans: Vec<(&'static str, u64, u64)> = vec![
            ("header", 0, HEADER_LEN as u64),
            (
                "heartbeat region",
                self.heartbeat_offset,
                u64::from(self.max_hosts) * 512,
            ),
            (
                "journal region",
                self.journal_offset,
                match u64::from(self.max_hosts).checked_mul(self.journal_size) {
                    Some(v) => v,
                    None => return err("journal_size", "journal region overflows".into()),
                },
            ),
            ("backup header", self.backup_offset(), HEADER_LEN as u64),
        ];
        let names = ["inode", "file block", "small block", "pointer block"];
        let expected_sizes = [
            u64::from(self.inode_size),
            u64::from(self.file_block_size),
            u64::from(self.small_block_size),
            u64::from(self.pointer_block_size),
        ];
        for (i, r) in self.regions.iter().enumerate() {
            if u64::from(r.resource_size) != expected_sizes[i] {
                return err(
                    "regions",
                    format!("{} size {} disagrees", names[i], r.resource_size),
                );
            }
            if r.per_cluster == 0 || r.per_cluster > super::cluster::MAX_PER_CLUSTER {
                return err(
                    "regions",
                    format!("{} clusters hold {} resources", names[i], r.per_cluster),
                );
            }
            let needed = r.count.div_ceil(u64::from(r.per_cluster));
            if needed != u64::from(r.clusters) || r.count == 0 || r.count > super::addr::MAX_INDEX {
                return err(
                    "regions",
                    format!(
                        "{} count {} does not fit {} clusters",
                        names[i], r.count, r.clusters
                    ),
                );
            }
            let data_len = match r.count.checked_mul(u64::from(r.resource_size)) {
                Some(v) => v,
                None => return err("regions", format!("{} area overflows", names[i])),
            };
            spans.push((
                names[i],
                r.cluster_meta_offset,
                u64::from(r.clusters) * META_BLOCK,
            ));
            spans.push((names[i], r.resource_offset, data_len));
        }
        for &(name, off, len) in &spans {
            match off.checked_add(len) {
                Some(end) if end <= self.volume_size => {}
                _ => {
                    return err(
                        "regions",
                        format!(
                            "{name} area {off}+{len} runs past the volume end {}",
                            self.volume_size
                        ),
                    )
                }
            }
        }
        spans.sort_by_key(|s| s.1);
        for w in spans.windows(2) {
            if w[0].1 + w[0].2 > w[1].1 {
                return err(
                    "regions",
                    format!("{} area overlaps {} area", w[0].0, w[1].0),
                );
            }
        }
        if self.root_ino == 0 || self.root_ino >= self.region(ResourceKind::Inode).count {
            return err(
                "root_ino",
                format!("root inode {} out of range", self.root_ino),
            );
        }
        Ok(())
    }
}

/// UUID in the usual 8-4-4-4-12 text form.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn put_str(dst: &mut [u8], s: &str) {
    let mut n = s.len().min(dst.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
}

fn get_str(src: &[u8], addr: u64, field: &'static str) -> Result<String, FormatError> {
    let end = src.iter().position(|&c| c == 0).unwrap_or(src.len());
    std::str::from_utf8(&src[..end])
        .map(str::to_string)
        .map_err(|e| bad(addr, field, format!("not UTF-8: {e}")))
}

fn bad(addr: u64, field: &'static str, why: String) -> FormatError {
    FormatError::BadField {
        kind: KIND,
        addr,
        field,
        why,
    }
}

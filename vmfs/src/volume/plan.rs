//! Where everything goes: the pure arithmetic that turns a device size and
//! mkfs options into a [`Header`]. No I/O here.

use crate::format::header::{
    Header, ResourceRegion, TimeoutMinimums, FEATURE_SMALL_FILES, FORMAT_VERSION, META_BLOCK,
};
use crate::format::{cluster, ResourceKind, MAX_HOSTS, SECTOR};

const MIB: u64 = 1 << 20;

/// What `mkfs` was asked for.
#[derive(Debug, Clone)]
pub struct MkfsOptions {
    pub label: String,
    pub file_block_size: u32,
    pub max_hosts: u32,
    /// Bytes of each host's journal (multiple of 1 MiB).
    pub journal_size: u64,
    /// Inodes; `None` picks one per 256 KiB of volume (4,096 to 4,194,304).
    pub inodes: Option<u64>,
    pub timeouts: TimeoutMinimums,
}

impl Default for MkfsOptions {
    fn default() -> Self {
        MkfsOptions {
            label: String::new(),
            file_block_size: 1 << 20,
            max_hosts: 128,
            journal_size: 8 * MIB,
            inodes: None,
            timeouts: TimeoutMinimums::default(),
        }
    }
}

/// Why a layout cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("invalid option {option}: {why}")]
    BadOption { option: &'static str, why: String },
    #[error("a volume of {size} bytes is too small for these options: at least {minimum} bytes ({} MiB) are needed", minimum.div_ceil(MIB))]
    TooSmall { size: u64, minimum: u64 },
}

/// Small blocks: 64 KiB, for directories and small files.
pub const SMALL_BLOCK_SIZE: u32 = 64 << 10;
/// Pointer blocks: 64 KiB = 8188 addresses, so double indirection reaches
/// 63.9 TiB at 1 MiB file blocks.
pub const POINTER_BLOCK_SIZE: u32 = 64 << 10;
/// Largest volume we format.
pub const MAX_VOLUME: u64 = 64 << 40;
/// Fewest file blocks a volume may have.
const MIN_FILE_BLOCKS: u64 = 64;
/// Inode number of the root directory (0 is never used).
pub const ROOT_INO: u64 = 1;

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

fn bad(option: &'static str, why: String) -> PlanError {
    PlanError::BadOption { option, why }
}

fn check_options(o: &MkfsOptions) -> Result<(), PlanError> {
    if o.label.is_empty() || o.label.len() > crate::format::header::LABEL_LEN {
        return Err(bad(
            "--label",
            format!("must be 1 to 64 bytes, got {}", o.label.len()),
        ));
    }
    if o.label.contains(['/', '\0']) {
        return Err(bad(
            "--label",
            "must not contain '/' or NUL (it names the NFS export)".into(),
        ));
    }
    if !o.file_block_size.is_power_of_two() || !(1 << 20..=64 << 20).contains(&o.file_block_size) {
        return Err(bad(
            "--block-size",
            format!(
                "must be a power of two from 1M to 64M, got {}",
                o.file_block_size
            ),
        ));
    }
    if o.max_hosts == 0 || o.max_hosts > MAX_HOSTS {
        return Err(bad(
            "--max-hosts",
            format!("must be 1 to {MAX_HOSTS}, got {}", o.max_hosts),
        ));
    }
    if o.journal_size < MIB || o.journal_size % MIB != 0 || o.journal_size > 1 << 30 {
        return Err(bad(
            "--journal-size",
            format!(
                "must be a multiple of 1M from 1M to 1G, got {}",
                o.journal_size
            ),
        ));
    }
    if let Some(n) = o.inodes {
        if !(64..=1 << 26).contains(&n) {
            return Err(bad(
                "--inodes",
                format!("must be 64 to {}, got {n}", 1u64 << 26),
            ));
        }
    }
    let t = &o.timeouts;
    if t.heartbeat_ms == 0
        || t.self_fence_ms <= t.heartbeat_ms
        || t.dead_after_ms <= t.self_fence_ms
    {
        return Err(bad(
            "timeouts",
            "need 0 < heartbeat < self-fence < dead-after".into(),
        ));
    }
    Ok(())
}

fn region(
    count: u64,
    per_cluster: u32,
    size: u32,
    meta: &mut u64,
    data: &mut u64,
) -> ResourceRegion {
    let clusters = count.div_ceil(u64::from(per_cluster));
    let r = ResourceRegion {
        cluster_meta_offset: *meta,
        clusters: clusters as u32,
        per_cluster,
        resource_offset: *data,
        count,
        resource_size: size,
    };
    *meta += round_up(clusters * META_BLOCK, MIB);
    *data += round_up(count * u64::from(size), MIB);
    r
}

/// Lay out a volume of `size` bytes (rounded down to 1 MiB).
pub fn plan(size: u64, o: &MkfsOptions, uuid: [u8; 16], now_ns: u64) -> Result<Header, PlanError> {
    check_options(o)?;
    if size > MAX_VOLUME {
        return Err(bad(
            "--size",
            format!("{size} bytes is above the 64 TiB maximum"),
        ));
    }
    try_plan(size, o, uuid, now_ns).ok_or_else(|| PlanError::TooSmall {
        size,
        minimum: minimum_size(o),
    })
}

fn try_plan(size: u64, o: &MkfsOptions, uuid: [u8; 16], now_ns: u64) -> Option<Header> {
    let volume_size = size / MIB * MIB;
    if volume_size < 4 * MIB {
        return None;
    }
    let fbs = u64::from(o.file_block_size);
    let hosts = u64::from(o.max_hosts);
    let heartbeat_offset = MIB;
    let journal_offset = heartbeat_offset + round_up(hosts * SECTOR as u64, MIB);
    let meta_start = journal_offset + hosts * o.journal_size;
    let inodes = o
        .inodes
        .unwrap_or((volume_size / (256 << 10)).clamp(4096, 1 << 22));
    let small = (volume_size / 32 / u64::from(SMALL_BLOCK_SIZE)).clamp(256, 1 << 20);
    let pointers = (volume_size / fbs / 64).clamp(256, 1 << 20);
    // The file-block count depends on what is left; reserve its cluster
    // metadata for the most file blocks that could fit, then fill.
    let max_file_blocks = volume_size / fbs;
    let file_per_cluster = (max_file_blocks / 64).clamp(64, 8192) as u32;
    let file_clusters_max = max_file_blocks.div_ceil(u64::from(file_per_cluster));

    // At least 16 clusters per kind where the count allows, so hosts
    // allocating at once rarely meet in one cluster.
    let per = |count: u64, cap: u64| (count / 16).clamp(16, cap) as u32;
    let (inode_pc, small_pc, ptr_pc) = (per(inodes, 1024), per(small, 512), per(pointers, 256));
    let mut meta = meta_start;
    let meta_len: u64 = [
        inodes.div_ceil(u64::from(inode_pc)),
        small.div_ceil(u64::from(small_pc)),
        pointers.div_ceil(u64::from(ptr_pc)),
        file_clusters_max,
    ]
    .iter()
    .map(|c| round_up(c * META_BLOCK, MIB))
    .sum();
    let mut data = meta_start + meta_len;
    let inode_r = region(inodes, inode_pc, 4096, &mut meta, &mut data);
    let small_r = region(small, small_pc, SMALL_BLOCK_SIZE, &mut meta, &mut data);
    let ptr_r = region(pointers, ptr_pc, POINTER_BLOCK_SIZE, &mut meta, &mut data);
    let file_start = round_up(data, fbs);
    // The last MiB holds the backup header.
    let end = volume_size - MIB;
    if file_start >= end {
        return None;
    }
    let file_blocks = (end - file_start) / fbs;
    if file_blocks < MIN_FILE_BLOCKS {
        return None;
    }
    let mut file_data = file_start;
    let file_r = region(
        file_blocks,
        file_per_cluster,
        o.file_block_size,
        &mut meta,
        &mut file_data,
    );
    let mut regions = [inode_r; 4];
    regions[ResourceKind::Inode.index()] = inode_r;
    regions[ResourceKind::FileBlock.index()] = file_r;
    regions[ResourceKind::SmallBlock.index()] = small_r;
    regions[ResourceKind::PointerBlock.index()] = ptr_r;
    let h = Header {
        version: FORMAT_VERSION,
        features: FEATURE_SMALL_FILES,
        uuid,
        label: o.label.clone(),
        volume_size,
        created_unix_ns: now_ns,
        file_block_size: o.file_block_size,
        small_block_size: SMALL_BLOCK_SIZE,
        pointer_block_size: POINTER_BLOCK_SIZE,
        inode_size: 4096,
        max_hosts: o.max_hosts,
        heartbeat_offset,
        journal_offset,
        journal_size: o.journal_size,
        timeouts: o.timeouts,
        regions,
        root_ino: ROOT_INO,
        mkfs_version: format!("vmfs {}", env!("CARGO_PKG_VERSION")),
    };
    debug_assert!(file_r.per_cluster <= cluster::MAX_PER_CLUSTER);
    h.validate(0).ok()?;
    Some(h)
}

/// The smallest size (a multiple of 1 MiB) these options can be laid out in.
pub fn minimum_size(o: &MkfsOptions) -> u64 {
    let fits = |s: u64| try_plan(s, o, [0; 16], 0).is_some();
    let (mut lo, mut hi) = (4 * MIB, 8 * MIB);
    while !fits(hi) {
        lo = hi;
        hi *= 2;
        if hi > MAX_VOLUME {
            return MAX_VOLUME;
        }
    }
    // fits(hi), !fits(lo): binary search in MiB steps.
    while hi - lo > MIB {
        let mid = (lo + hi) / 2 / MIB * MIB;
        if fits(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opts() -> MkfsOptions {
        MkfsOptions {
            label: "ds1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn sixty_four_tib_layout_is_valid_and_keeps_files_large() {
        let h = plan(64 << 40, &opts(), [1; 16], 0).unwrap();
        let f = h.region(ResourceKind::FileBlock);
        assert!(f.count * u64::from(h.file_block_size) > 63 << 40);
        assert!(f.clusters >= 8000);
        let meta: u64 = h.regions.iter().map(|r| u64::from(r.clusters) * 4096).sum();
        assert!(meta < 100 << 20, "cluster metadata {meta} bytes");
    }

    #[test]
    fn new_volumes_have_small_files_and_unknown_features_are_refused() {
        let h = plan(4 << 30, &opts(), [1; 16], 0).unwrap();
        assert_eq!(h.features, FEATURE_SMALL_FILES);
        let mut b = h.encode(0);
        crate::format::block::put_u32(&mut b, 20, FEATURE_SMALL_FILES | 0x10);
        crate::format::block::seal(&mut b, crate::format::header::HEADER_MAGIC, 0);
        let e = Header::decode(&b, 0).unwrap_err().to_string();
        assert!(e.contains("incompatible features 0x11"), "{e}");
        let mut old = h.clone();
        old.features = 0;
        assert_eq!(Header::decode(&old.encode(0), 0).unwrap(), old);
    }

    #[test]
    fn small_volume_has_several_clusters_per_kind() {
        let h = plan(4 << 30, &opts(), [1; 16], 0).unwrap();
        for r in &h.regions {
            assert!(r.clusters >= 4, "{r:?}");
        }
    }

    #[test]
    fn too_small_names_the_minimum() {
        let min = minimum_size(&opts());
        assert!(plan(min, &opts(), [0; 16], 0).is_ok());
        match plan(min - MIB, &opts(), [0; 16], 0) {
            Err(PlanError::TooSmall { minimum, .. }) => assert_eq!(minimum, min),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let mut o = opts();
        o.file_block_size = 3 << 20;
        assert!(matches!(
            plan(1 << 30, &o, [0; 16], 0),
            Err(PlanError::BadOption {
                option: "--block-size",
                ..
            })
        ));
        let mut o = opts();
        o.max_hosts = 0;
        assert!(plan(1 << 30, &o, [0; 16], 0).is_err());
        let mut o = opts();
        o.label = "a/b".into();
        assert!(plan(1 << 30, &o, [0; 16], 0).is_err());
        assert!(plan(65 << 40, &opts(), [0; 16], 0).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_plan_validates_and_round_trips(size_mib in 1024u64..(1 << 22), hosts in 1u32..300, bs in 0u32..3) {
            let o = MkfsOptions { max_hosts: hosts, file_block_size: (1 << 20) << bs, ..opts() };
            if let Ok(h) = plan(size_mib << 20, &o, [9; 16], 5) {
                h.validate(0).unwrap();
                let enc = h.encode(0);
                prop_assert_eq!(Header::decode(&enc, 0).unwrap(), h.clone());
                let b = h.backup_offset();
                prop_assert_eq!(Header::decode(&h.encode(b), b).unwrap(), h);
            }
        }
    }
}

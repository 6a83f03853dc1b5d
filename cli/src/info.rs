//! `vmfs info`: the header, capacity, free space and region layout.

use vmfs::format::header::uuid_string;
use vmfs::format::ResourceKind;
use vmfs::volume::Volume;

use crate::device::open_device;
use crate::units::human;

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Image file, block device, or iscsi://HOST[:PORT]/IQN/LUN holding the volume.
    pub device: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &InfoArgs) -> Result<(), String> {
    let dev = open_device(&a.device, None, true)?;
    let v = Volume::open(dev).map_err(|e| e.to_string())?;
    let space = v.space().map_err(|e| e.to_string())?;
    let h = &v.header;
    let mut layout = vec![
        ("header", 0u64, 4096u64),
        (
            "heartbeat region",
            h.heartbeat_offset,
            u64::from(h.max_hosts) * 512,
        ),
        (
            "journals",
            h.journal_offset,
            u64::from(h.max_hosts) * h.journal_size,
        ),
    ];
    for kind in ResourceKind::ALL {
        let r = h.region(kind);
        layout.push((
            cluster_name(kind),
            r.cluster_meta_offset,
            u64::from(r.clusters) * 4096,
        ));
        layout.push((
            data_name(kind),
            r.resource_offset,
            r.count * u64::from(r.resource_size),
        ));
    }
    layout.push(("backup header", h.backup_offset(), 4096));
    layout.sort_by_key(|l| l.1);
    if a.json {
        let j = serde_json::json!({
            "label": h.label,
            "uuid": uuid_string(&h.uuid),
            "version": h.version,
            "features": feature_names(h.features),
            "capacity_bytes": h.volume_size,
            "free_bytes": space.free_bytes(),
            "created_unix_ns": h.created_unix_ns,
            "mkfs_version": h.mkfs_version,
            "file_block_size": h.file_block_size,
            "small_block_size": h.small_block_size,
            "pointer_block_size": h.pointer_block_size,
            "max_hosts": h.max_hosts,
            "journal_size": h.journal_size,
            "timeouts_ms": h.timeouts,
            "from_backup_header": v.from_backup,
            "space": space,
            "layout": layout.iter().map(|(n, o, l)| serde_json::json!({"region": n, "offset": o, "length": l})).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&j).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    if v.from_backup {
        println!(
            "WARNING: primary header damaged; values come from the backup header (run vmfs-fsck)"
        );
    }
    println!("volume '{}' {}", h.label, uuid_string(&h.uuid));
    println!(
        "  format        version {} ({}), features: {}",
        h.version,
        h.mkfs_version,
        match feature_names(h.features) {
            f if f.is_empty() => "none".to_string(),
            f => f.join(", "),
        }
    );
    println!(
        "  capacity      {} ({} bytes)",
        human(h.volume_size),
        h.volume_size
    );
    let fb = &space.file_blocks;
    println!(
        "  free          {} ({} of {} file blocks of {})",
        human(space.free_bytes()),
        fb.free,
        fb.total,
        human(u64::from(h.file_block_size))
    );
    for k in [&space.inodes, &space.small_blocks, &space.pointer_blocks] {
        let damaged = if k.damaged_clusters > 0 {
            format!(", {} DAMAGED clusters", k.damaged_clusters)
        } else {
            String::new()
        };
        println!(
            "  {:13} {} free of {} in {} clusters{damaged}",
            format!("{}s", k.kind),
            k.free,
            k.total,
            k.clusters
        );
    }
    println!(
        "  hosts         up to {}, journal {} each",
        h.max_hosts,
        human(h.journal_size)
    );
    let t = &h.timeouts;
    println!(
        "  timeouts      I/O {} ms, heartbeat {} ms, self-fence {} ms, dead-after {} ms (minimums)",
        t.io_timeout_ms, t.heartbeat_ms, t.self_fence_ms, t.dead_after_ms
    );
    println!("  layout:");
    println!("    {:<22} {:>18} {:>18}", "region", "offset", "length");
    for (n, o, l) in layout {
        println!("    {n:<22} {o:>18} {l:>18}");
    }
    Ok(())
}

fn cluster_name(k: ResourceKind) -> &'static str {
    match k {
        ResourceKind::Inode => "inode clusters",
        ResourceKind::FileBlock => "file-block clusters",
        ResourceKind::SmallBlock => "small-block clusters",
        ResourceKind::PointerBlock => "pointer-block clusters",
    }
}

fn data_name(k: ResourceKind) -> &'static str {
    match k {
        ResourceKind::Inode => "inode table",
        ResourceKind::FileBlock => "file blocks",
        ResourceKind::SmallBlock => "small blocks",
        ResourceKind::PointerBlock => "pointer blocks",
    }
}

/// Names of the header's incompatible features.
fn feature_names(features: u32) -> Vec<&'static str> {
    let mut out = Vec::new();
    if features & vmfs::format::header::FEATURE_SMALL_FILES != 0 {
        out.push("small-files");
    }
    out
}

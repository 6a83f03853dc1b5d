//! `vmfs mkfs`.

use std::path::Path;
use std::time::Instant;

use vmfs::format::header::TimeoutMinimums;
use vmfs::volume::{mkfs, MkfsOptions};

use crate::device::open_device;
use crate::units::{human, parse_size};

#[derive(clap::Args, Debug)]
pub struct MkfsArgs {
    /// Image file, block device, or iscsi://HOST[:PORT]/IQN/LUN to format.
    pub device: String,
    /// Volume label (also the NFS export name).
    #[arg(long)]
    pub label: String,
    /// Create a sparse image file of this size when DEVICE does not exist (e.g. 64G, 64T).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// File block size (1M to 64M, power of two).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub block_size: u64,
    /// Heartbeat slots: how many hosts may mount the volume at once.
    #[arg(long, default_value_t = 128)]
    pub max_hosts: u32,
    /// Journal size per host.
    #[arg(long, default_value = "8M", value_parser = parse_size)]
    pub journal_size: u64,
    /// Number of inodes (default: one per 256 KiB of volume).
    #[arg(long)]
    pub inodes: Option<u64>,
    /// Overwrite a device that already holds a volume.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: &MkfsArgs) -> Result<(), String> {
    // A device URL names something that exists (or fails to open with its
    // own error); only paths may be created.
    let is_url = matches!(
        vmfs::dev::DeviceUrl::parse(&a.device),
        Ok(vmfs::dev::DeviceUrl::Iscsi(_))
    );
    if is_url && a.size.is_some() {
        return Err(format!(
            "{}: --size only applies when creating an image file",
            a.device
        ));
    }
    let exists = is_url || Path::new(&a.device).exists();
    if exists {
        if let Some(size) = a.size {
            let have = std::fs::metadata(&a.device).map(|m| m.len()).unwrap_or(0);
            let is_file = std::fs::metadata(&a.device)
                .map(|m| m.is_file())
                .unwrap_or(false);
            if is_file && have != size {
                return Err(format!(
                    "{}: exists with size {} ({}); --size only applies when creating a new image",
                    a.device,
                    have,
                    human(have)
                ));
            }
        }
    }
    let block_size = u32::try_from(a.block_size)
        .map_err(|_| format!("--block-size {} is too large", a.block_size))?;
    let opts = MkfsOptions {
        label: a.label.clone(),
        file_block_size: block_size,
        max_hosts: a.max_hosts,
        journal_size: a.journal_size,
        inodes: a.inodes,
        timeouts: TimeoutMinimums::default(),
    };
    // Validate everything we can before creating a file.
    if !exists {
        let Some(size) = a.size else {
            return Err(format!(
                "{}: no such file; give --size to create a sparse image",
                a.device
            ));
        };
        vmfs::volume::plan(size, &opts, [0; 16], 0).map_err(|e| e.to_string())?;
    }
    let dev = match open_device(&a.device, a.size, false) {
        Ok(d) => d,
        Err(e) => {
            if !exists {
                let _ = std::fs::remove_file(&a.device);
            }
            if e.contains("os error 27") {
                return Err(format!(
                    "{e}\n  the filesystem holding {} cannot hold a file this large (ext4 stops at 16 TiB); put the image on XFS, btrfs or tmpfs",
                    a.device
                ));
            }
            return Err(e);
        }
    };
    let start = Instant::now();
    let h = match mkfs(&dev, &opts, a.force) {
        Ok(h) => h,
        Err(e) => {
            drop(dev);
            if !exists {
                let _ = std::fs::remove_file(&a.device);
            }
            return Err(e.to_string());
        }
    };
    println!(
        "formatted {} as vmfs volume '{}' ({}) in {:.2?}: {} , {} hosts, {} file blocks, {} inodes",
        a.device,
        h.label,
        h.uuid_string(),
        start.elapsed(),
        human(h.volume_size),
        h.max_hosts,
        human(u64::from(h.file_block_size)),
        h.region(vmfs::format::ResourceKind::Inode).count
    );
    Ok(())
}

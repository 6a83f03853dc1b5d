//! vmfs-fsck: check and repair a vmfs volume, phase by phase, every problem
//! with a stable code (`docs/fsck.md`). Repairs write directly (no journal,
//! no heartbeat slot) on a quiet volume, ordered so that a repair cut short
//! leaves a volume fsck can still check: references are fixed before the
//! bitmap bits they free, new resources are marked in use before anything
//! points at them, every block is written whole with its checksum, and the
//! device is flushed between steps.
//!
//! `wreck` is the other half: it creates each problem by code on a volume
//! that has files, so every code is proven detected and repaired.

pub mod alloc;
pub mod codes;
pub mod dirs;
pub mod disk;
mod features;
mod header;
mod heartbeat;
mod journals;
mod locks;
pub mod readahead;
pub mod report;
mod tree;
mod tree_fix;
pub mod vmdk;
pub mod wreck;
mod wreck_vmdk;

use std::sync::Arc;
use std::time::Duration;

pub use codes::Code;
pub use disk::Disk;
pub use report::{Outcome, Problem, Progress};

use readahead::ReadAhead;
use vmfs::dev::SharedDev;
use vmfs::format::inode::INODE_SIZE;
use vmfs::volume::Volume;

/// Why fsck could not do its job (exit 8).
#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    #[error(transparent)]
    Device(#[from] vmfs::dev::DevError),
    #[error(transparent)]
    Volume(#[from] vmfs::volume::VolumeError),
    #[error(transparent)]
    Fs(#[from] vmfs::fs::FsError),
    #[error(transparent)]
    Cluster(#[from] vmfs::cluster::ClusterError),
    #[error("{device}: {len} bytes at offset {offset} are outside the device")]
    Range {
        device: String,
        offset: u64,
        len: u64,
    },
    #[error("internal error: a write at offset {offset} was attempted without --repair")]
    ReadOnly { offset: u64 },
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Wreck(String),
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub repair: bool,
    /// Repair even while another host is live.
    pub force: bool,
    /// Longest wait for the liveness samples (None: the volume's 2 × H).
    pub sample_cap: Option<Duration>,
}

/// State shared by the phases of one run.
pub(crate) struct Run<'a> {
    pub disk: &'a Disk,
    pub vol: Volume,
    pub opts: &'a Options,
    pub out: &'a mut Outcome,
    pub progress: &'a dyn Progress,
    /// Slots whose host is live (not to be touched).
    pub live_slots: Vec<u32>,
    /// Slots whose host is dead (LIVE/RECOVERING but silent).
    pub dead_slots: Vec<u32>,
}

/// Check (and with `opts.repair`, repair) the volume on `dev`.
pub fn fsck(dev: SharedDev, opts: &Options, progress: &dyn Progress) -> Outcome {
    let mut out = Outcome::default();
    let ra = Arc::new(ReadAhead::new(dev));
    let disk = Disk::new(ra.clone(), opts.repair);
    if let Err(e) = pass(&disk, &ra, opts, &mut out, progress) {
        out.error = Some(e.to_string());
        return out.finish();
    }
    if opts.repair && !out.problems.is_empty() {
        // Verify: a read-only pass over the repaired volume.
        let check = Options {
            repair: false,
            force: true,
            ..opts.clone()
        };
        let ro = Disk::new(disk.dev.clone(), false);
        let mut after = Outcome::default();
        match pass(&ro, &ra, &check, &mut after, progress) {
            Ok(()) => out.remaining = after.problems,
            Err(e) => out.error = Some(format!("verifying the repair: {e}")),
        }
    }
    out.writes = disk.writes();
    out.finish()
}

fn pass(
    disk: &Disk,
    ra: &ReadAhead,
    opts: &Options,
    out: &mut Outcome,
    progress: &dyn Progress,
) -> Result<(), FsckError> {
    progress.phase(1, "volume header");
    let vol = header::check(disk, out)?;
    let table = vol.inode_addr(0);
    let inodes = vol.header.region(vmfs::format::ResourceKind::Inode).count;
    ra.cache(
        table,
        table.saturating_add(inodes.saturating_mul(INODE_SIZE)),
    );
    let mut run = Run {
        disk,
        vol,
        opts,
        out,
        progress,
        live_slots: Vec::new(),
        dead_slots: Vec::new(),
    };
    progress.phase(2, "heartbeat region");
    let slots = heartbeat::check(&mut run)?;
    progress.phase(3, "journals");
    journals::check(&mut run)?;
    heartbeat::repair(&mut run, &slots)?;
    progress.phase(2, "locks");
    locks::check(&mut run)?;
    disk.flush()?;
    progress.phase(4, "clusters, inodes and directories");
    let model = tree::check(&mut run)?;
    features::check(&mut run, &model)?;
    disk.flush()?;
    progress.phase(7, "VMDK disks and swap files");
    vmdk::check(&mut run, &model)?;
    disk.flush()?;
    progress.done();
    Ok(())
}

//! `vmfs disk …`: the vmkfstools jobs on VMDK disks inside the volume.
//! Each command joins the volume as a short-lived host, takes the disk's
//! locks (so a disk in use by a running VM is refused, with who holds it),
//! does the job and leaves cleanly.

mod clone;
mod create;
mod import;
mod info;
mod resize;
mod snapshot;

use std::sync::Arc;

use vmfs::disk::{FsStore, ReadLock, WriteLock};
use vmfs::fs::Fs;
use vmfs::vmdk::{ExtentStore, Provisioning};

use crate::session::{HostArgs, Session};

#[derive(clap::Subcommand, Debug)]
pub enum DiskCommand {
    /// Create a disk: descriptor PATH.vmdk plus its -flat.vmdk extent.
    Create(create::CreateArgs),
    /// Show a disk: size, type, snapshot chain, space used, who holds it.
    Info(info::InfoArgs),
    /// Grow a disk (no snapshots); thick disks get the new space reserved.
    Extend(resize::ExtendArgs),
    /// Turn a thin or lazily zeroed disk into eager-zeroed thick.
    Inflate(resize::InflateArgs),
    /// Copy a disk (through its snapshot chain) into a new flat disk,
    /// reading only the parts that hold data.
    Clone(clone::CloneArgs),
    /// Import a raw image or a VMDK (with its snapshot chain) from the host into a new disk.
    Import(import::ImportArgs),
    /// Delete a disk and its snapshot chain (every file of every layer).
    Delete(create::DeleteArgs),
    /// Snapshots: create, revert, delete (merge the top into its parent),
    /// consolidate (merge every snapshot into the base).
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
}

pub fn run(c: &DiskCommand) -> Result<(), String> {
    match c {
        DiskCommand::Create(a) => create::run(a),
        DiskCommand::Info(a) => info::run(a),
        DiskCommand::Extend(a) => resize::extend(a),
        DiskCommand::Inflate(a) => resize::inflate(a),
        DiskCommand::Clone(a) => clone::run(a),
        DiskCommand::Import(a) => import::run(a),
        DiskCommand::Delete(a) => create::delete(a),
        DiskCommand::Snapshot(c) => snapshot::run(c),
    }
}

/// `--type` values.
pub fn parse_type(s: &str) -> Result<Provisioning, String> {
    Provisioning::from_name(s).ok_or_else(|| {
        format!("'{s}' is not a disk type (use thin, zeroedthick or eagerzeroedthick)")
    })
}

/// The device and disk path every disk command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct DiskPath {
    /// Image file or block device holding the volume.
    pub device: String,
    /// The disk's descriptor, a path inside the volume (e.g. vm1/vm1.vmdk).
    pub path: String,
    #[command(flatten)]
    pub host: HostArgs,
}

/// A store writing EXCLUSIVE, reading SHARED_READ (refused while another
/// host writes).
pub fn store(fs: &Fs) -> Arc<dyn ExtentStore> {
    Arc::new(FsStore::new(
        fs.clone(),
        WriteLock::Exclusive,
        ReadLock::Shared,
    ))
}

/// Create the missing directories above `path`.
pub fn make_parents(fs: &Fs, path: &str) -> Result<(), String> {
    let Some((dir, _)) = path.trim_matches('/').rsplit_once('/') else {
        return Ok(());
    };
    FsStore::new(fs.clone(), WriteLock::Exclusive, ReadLock::Shared)
        .mkdir_p(dir)
        .map(|_| ())
        .map_err(|e| format!("creating directory {dir}: {e}"))
}

/// Explain a failure to take a disk: who holds it and what to do.
pub fn explain(s: &Session, path: &str, e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    if text.contains("busy") || text.contains("Busy") {
        s.err(format!(
            "{path}: {text}; the disk is in use on another host (power the VM off there, or \
             see `vmfs locks {} {path}`)",
            s.device
        ))
    } else {
        s.err(format!("{path}: {text}"))
    }
}

/// Make `len` bytes of file `flat` (from 0) eager-zeroed thick, with a
/// progress bar: holes allocated and zeroed, lazily zeroed blocks zeroed.
pub fn make_eager(s: &Session, flat: &str, len: u64, what: &str) -> Result<(), String> {
    let pb = crate::progress::bytes(what, len);
    let r = vmfs::disk::jobs::make_eager(&s.fs, flat, len, |done, _| pb.set_position(done));
    pb.finish_and_clear();
    r.map_err(|e| explain(s, flat, e))
}

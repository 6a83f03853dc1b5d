//! Virtual disks and swap files on the volume, for a VMM on each host.
//!
//! - [`VirtualDisk`]: a VMDK (descriptor path inside the volume) opened
//!   EXCLUSIVE, SHARED_READ or MULTI_WRITER; async read / write / flush /
//!   discard / write-zeroes by byte offset; thin disks allocate on first
//!   write; reads fall through snapshot chains; live-migration hand-off.
//! - [`FsStore`]: the VMDK library's file traits over [`crate::fs::Fs`].
//! - [`swap`]: `.vswp` files, fully allocated and held EXCLUSIVE while the
//!   VM runs, and the reclaim of a dead host's swap files.
//!
//! # Embedding in a Rust VMM
//!
//! A VMM process joins the volume as a host, mounts the filesystem, opens
//! its disks and keeps the host's heartbeat running for as long as it
//! serves them. Requests return [`IoFuture`]s: `.await` them under any
//! executor, or call [`IoFuture::wait`] from a device thread (a vhost-user
//! backend's epoll loop). Watch [`crate::cluster::HostEvent::Fenced`]: a
//! fenced host has lost its locks and must stop the VM.
//!
//! ```
//! use std::sync::Arc;
//! use vmfs::cluster::{Host, HostConfig};
//! use vmfs::dev::{MemDev, SharedDev};
//! use vmfs::disk::{DiskOptions, FsStore, ReadLock, VirtualDisk, WriteLock};
//! use vmfs::fs::Fs;
//! use vmfs::vmdk::{create_flat_disk, FlatDiskOptions};
//! use vmfs::volume::{mkfs, MkfsOptions, Volume};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A volume (an image file or LUN in real life).
//! let dev: SharedDev = Arc::new(MemDev::new(256 << 20, 512));
//! let opts = MkfsOptions {
//!     label: "ds1".into(),
//!     max_hosts: 8,
//!     journal_size: 1 << 20,
//!     ..Default::default()
//! };
//! mkfs(&dev, &opts, false)?;
//! // Join as a host, start the heartbeat, mount.
//! let host = Host::join(Volume::open(dev)?, HostConfig::new("esx-a"))?;
//! host.start();
//! let fs = Fs::mount(host.clone())?;
//! fs.mkdir(fs.root(), b"vm1", 0o755, 0, 0)?;
//! // A 64 MiB thin disk (what `vmfs disk create` does).
//! let store = FsStore::new(fs.clone(), WriteLock::Exclusive, ReadLock::Shared);
//! create_flat_disk(&store, "vm1/vm1.vmdk", 64 << 20, &FlatDiskOptions::default())?;
//!
//! // The VMM's side: open EXCLUSIVE and serve the guest's requests.
//! let disk = VirtualDisk::open(&fs, "vm1/vm1.vmdk", &DiskOptions::default())?;
//! disk.write(1 << 20, vec![0xab; 4096]).wait()?; // or `.await`
//! disk.flush().wait()?;
//! assert_eq!(disk.read(1 << 20, 4096).wait()?, vec![0xab; 4096]);
//! disk.close()?;
//!
//! fs.unmount()?;
//! drop(fs);
//! host.leave()?;
//! # Ok(())
//! # }
//! ```

mod error;
mod handoff;
pub mod jobs;
mod pool;
mod store;
pub mod swap;
mod virtual_disk;

#[cfg(test)]
mod tests;

pub use error::{DiskError, DiskResult};
pub use pool::IoFuture;
pub use store::{io_error, FsFile, FsStore, ReadLock, WriteLock};
pub use virtual_disk::{DiskLock, DiskOptions, VirtualDisk};

//! vmfs: a clustered datastore filesystem shared by several hosts through
//! one block device, coordinated only by heartbeats and locks on the disk.
//!
//! Module map (see `docs/` for the byte layouts and the lock protocol):
//! - [`dev`]: block devices (image file, memory, fault injection).
//! - [`format`]: on-disk structures, encode/decode with CRC and self address.
//! - [`volume`]: opening a volume, offset arithmetic, mkfs, space accounting.
//! - [`cluster`]: heartbeats, on-disk locks, the per-host journal, recovery.
//! - [`fs`]: files and directories on a joined host (allocator, block map,
//!   hashed directories, POSIX operations, consistency walker).
//! - [`vmdk`]: VMDK descriptors, flat extents and COWD snapshot deltas.

pub mod cluster;
pub mod dev;
pub mod disk;
pub mod format;
pub mod fs;
pub mod fuse;
pub mod vmdk;
pub mod volume;

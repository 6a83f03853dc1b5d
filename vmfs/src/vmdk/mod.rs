//! VMDK virtual disks: descriptor, flat extents, ESX COWD snapshot deltas,
//! and the chain of a disk and its parents. See `docs/vmdk.md`.
//!
//! Written against [`ExtentIo`] / [`ExtentStore`] so the vmfs filesystem
//! can serve its files; [`DirStore`] and `std::fs::File` serve host files.

pub mod chain;
pub mod cowd;
pub mod descriptor;
pub mod error;
pub mod flat;
pub mod io;
pub mod layer;
pub mod snapshot;
pub mod store;
mod zero;

pub use chain::DiskChain;
pub use cowd::CowdExtent;
pub use descriptor::{Descriptor, DescriptorError, Provisioning};
pub use error::{Result, VmdkError};
pub use flat::{create_flat_disk, FlatDiskOptions};
pub use io::{ExtentIo, MemExtent};
pub use snapshot::{create_snapshot, DEFAULT_GRAIN_SECTORS};
pub use store::{DirStore, ExtentStore, MemStore};

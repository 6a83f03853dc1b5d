//! vhost-user-blk daemon: serves a [`BlockBackend`] (a VMDK on a vmfs volume,
//! or a plain file) to a VMM (cloud-hypervisor, QEMU, crosvm, firecracker)
//! over a vhost-user unix socket. See docs/vhost-user-blk.md.
//!
//! [`frontend`] is the other side — a minimal VMM-style driver with real
//! split virtqueues in shared memory — used by the tests and the bench.

pub mod backend;
pub mod config;
mod device;
pub mod file_backend;
pub mod frontend;
pub mod mem_backend;
pub mod request;
mod server;
mod signals;

pub use backend::{BackendError, BackendResult, BlockBackend};
pub use file_backend::{FileBackend, FileBackendError};
pub use mem_backend::MemBackend;
pub use server::{serve, ServeError, ServeOptions, ShutdownHandle};
pub use signals::shutdown_on_signals;

//! The frontend (VMM) side of vhost-user-blk, as a small library: connect
//! to the daemon's socket, negotiate features, share guest RAM, set up split
//! virtqueues in it and issue virtio-blk requests through them.
//!
//! It exists to test and benchmark the daemon the way a VMM drives it; it is
//! not a general virtio driver (no packed rings, one RAM region).

mod connect;
mod queue;
mod ram;
mod virtqueue;

use std::io;
use std::time::Duration;

pub use connect::{BlkConfig, BlkFrontend, DriverOptions};
pub use queue::{BlkQueue, Completion, Layout, Request, Segment, STATUS_UNWRITTEN};
pub use ram::{GuestRam, RAM_BASE};
pub use virtqueue::{Buf, RingAddrs, Virtqueue};

/// What the driver side can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("guest RAM: {0}")]
    Ram(#[source] io::Error),
    #[error("guest RAM exhausted: {wanted} more bytes wanted of {size}")]
    RamExhausted { wanted: u64, size: u64 },
    #[error("eventfd/epoll: {0}")]
    EventFd(#[source] io::Error),
    #[error("vhost-user {op}: {message}")]
    Vhost { op: &'static str, message: String },
    #[error("device does not offer {what}")]
    MissingFeature { what: &'static str },
    #[error("queue {queue}: guest memory access to the {what} failed: {message}")]
    Memory {
        queue: u16,
        what: &'static str,
        message: String,
    },
    #[error("queue {queue}: {wanted} descriptors wanted, {free} free")]
    QueueFull {
        queue: u16,
        wanted: usize,
        free: usize,
    },
    #[error("queue {queue}: no free request slot ({slots} in flight)")]
    NoSlot { queue: u16, slots: usize },
    #[error("queue {queue}: {len} data bytes exceed the {max}-byte slot")]
    TooLarge { queue: u16, len: usize, max: u32 },
    #[error("queue {queue}: device used unknown descriptor id {id}")]
    BogusUsed { queue: u16, id: u32 },
    #[error("queue {queue}: no completion within {waited:?}")]
    Timeout { queue: u16, waited: Duration },
    #[error("queue {queue}: {op} completed with status {status} (0 ok, 1 ioerr, 2 unsupp)")]
    Status {
        queue: u16,
        op: &'static str,
        status: u8,
    },
}

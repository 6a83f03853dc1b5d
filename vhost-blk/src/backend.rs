//! The block backend contract the daemon serves.
//!
//! Everything the virtio-blk device does ends in one of these calls. Offsets
//! and lengths are in **bytes**; the daemon only ever passes values that are
//! multiples of 512 (a virtio-blk sector) and that lie inside `size()`, so an
//! implementation may treat anything else as a bug in the caller and return
//! [`BackendError::Invalid`]. Calls may come from several queue worker threads
//! at once, so implementations must be `Send + Sync` and safe under concurrent
//! use (writes to overlapping ranges from two queues are the guest's problem,
//! exactly as on real hardware).

use std::io;

/// What a backend operation can fail with. Every variant carries the
/// operation and byte range so that the daemon's log line names them.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend's storage failed.
    #[error("{op} at byte {offset} (+{len}): {source}")]
    Io {
        op: &'static str,
        offset: u64,
        len: u64,
        #[source]
        source: io::Error,
    },
    /// The request lies (partly) outside the disk.
    #[error("{op} at byte {offset} (+{len}) is beyond the end of the {size}-byte disk")]
    OutOfRange {
        op: &'static str,
        offset: u64,
        len: u64,
        size: u64,
    },
    /// The backend was opened read-only.
    #[error("{op} at byte {offset} (+{len}) refused: the disk is read-only")]
    ReadOnly {
        op: &'static str,
        offset: u64,
        len: u64,
    },
    /// The arguments break the contract (e.g. not sector aligned).
    #[error("{op} at byte {offset} (+{len}): {reason}")]
    Invalid {
        op: &'static str,
        offset: u64,
        len: u64,
        reason: &'static str,
    },
    /// The backend does not implement this operation.
    #[error("{op} is not supported by this backend")]
    Unsupported { op: &'static str },
}

/// Result of a backend operation.
pub type BackendResult<T> = Result<T, BackendError>;

/// A disk the vhost-user-blk daemon can serve.
///
/// Contract (the VirtualDisk adapter must keep it):
/// - `size()` is the capacity in bytes, a multiple of 512; it does not change
///   while the disk is served.
/// - `block_size()` is the logical block size reported to the guest (512 or
///   4096); requests are still addressed in 512-byte sectors.
/// - `read_at` fills the whole buffer or fails; holes / unwritten space read
///   as zeros.
/// - `write_at` writes the whole buffer or fails. It need not be durable
///   before `flush`.
/// - `flush` returns only when every write that completed before the call is
///   durable (survives power loss / host crash): fdatasync semantics.
/// - `discard` is a hint: the range may afterwards read as zeros or as the
///   old data, and the backend may free its space. It may do nothing.
/// - `write_zeroes` makes the range read as zeros. With `may_unmap` the
///   backend may free the space (punch a hole) instead of writing zeros.
/// - `read_only()` true makes the daemon advertise VIRTIO_BLK_F_RO and refuse
///   every modifying request itself; the backend is then never asked to write.
pub trait BlockBackend: Send + Sync {
    /// Capacity in bytes (multiple of 512).
    fn size(&self) -> u64;
    /// Logical block size in bytes reported to the guest (power of two >= 512).
    fn block_size(&self) -> u32 {
        512
    }
    /// Whether the backend refuses writes.
    fn read_only(&self) -> bool;
    /// Read `buf.len()` bytes at byte `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> BackendResult<()>;
    /// Write all of `buf` at byte `offset`.
    fn write_at(&self, offset: u64, buf: &[u8]) -> BackendResult<()>;
    /// Make every completed write durable.
    fn flush(&self) -> BackendResult<()>;
    /// Hint that `len` bytes at `offset` are no longer needed.
    fn discard(&self, offset: u64, len: u64) -> BackendResult<()>;
    /// Make `len` bytes at `offset` read as zeros; may deallocate if `may_unmap`.
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> BackendResult<()>;
}

/// Check the common preconditions of a modifying or reading call: sector
/// alignment and range. Backends call this first so that their own errors
/// name the right operation.
pub fn check_range(op: &'static str, offset: u64, len: u64, size: u64) -> BackendResult<()> {
    if offset % 512 != 0 || len % 512 != 0 {
        return Err(BackendError::Invalid {
            op,
            offset,
            len,
            reason: "offset and length must be multiples of 512",
        });
    }
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BackendError::OutOfRange {
            op,
            offset,
            len,
            size,
        }),
    }
}

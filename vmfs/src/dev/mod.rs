//! Block-device layer: one trait, every backend behind it.
//!
//! All offsets and lengths are in **bytes** and must be multiples of the
//! device's [`BlockDev::logical_block_size`]. Every backend is shared between
//! threads (`&self` methods, `Send + Sync`), because one host process runs its
//! heartbeat, lock traffic and data I/O concurrently.
//!
//! `compare_and_write` is the atomic test-and-set (SCSI COMPARE AND WRITE,
//! VAAI "ATS") that all on-disk locking rests on. See `docs/locking.md`.

mod engine;
mod error;
mod fault;
mod file;
pub mod iscsi;
mod mapping;
mod mem;
mod open;
mod sys;
mod uring;
pub mod url;
mod wrapper;

pub use error::{DevError, DevOp};
pub use fault::{CrashMode, FaultDev, FaultOps, LogEntry};
pub use file::{FileDev, FileDevOptions};
pub use iscsi::{IscsiDev, IscsiOptions};
pub use mem::MemDev;
pub use open::{open_device, OpenError, OpenOptions, OpenedDevice};
pub use url::{DeviceUrl, IscsiUrl, UrlError};
pub use wrapper::DevWrapper;

use std::sync::Arc;

/// Result of [`BlockDev::compare_and_write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The device held `expected`; `new` is now written.
    Done,
    /// The device did not hold `expected`; nothing was written. Carries the
    /// bytes the device held at the time of the comparison.
    Miscompare(Vec<u8>),
    /// We cannot tell whether the write landed (timeout, lost response,
    /// transport reset). The caller resolves this by re-reading: every lock
    /// image carries a random write nonce that says whether *our* write landed.
    Indeterminate,
}

/// What a backend can promise. Callers check these before multi-host use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DevCapabilities {
    /// `compare_and_write` is atomic against writers on *other machines*
    /// (real SCSI COMPARE AND WRITE). False for the emulated ATS of
    /// [`FileDev`] on a device other machines can reach.
    pub cross_machine_atomic_cas: bool,
    /// `unmap` really deallocates and later reads return zeros.
    pub unmap_zeroes: bool,
    /// SCSI persistent reservations are available for fencing.
    pub persistent_reservations: bool,
}

/// A shared block device (LUN, image file, block special file).
pub trait BlockDev: Send + Sync + std::fmt::Debug {
    /// Human-readable name used in every error (path, URL, `mem:N`).
    fn name(&self) -> &str;

    /// Capacity in bytes (a multiple of the logical block size).
    fn size(&self) -> u64;

    /// Smallest unit of atomic, aligned I/O in bytes (512 or 4096).
    fn logical_block_size(&self) -> u32;

    /// What this backend can promise.
    fn capabilities(&self) -> DevCapabilities;

    /// Read exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DevError>;

    /// Read exactly `buf.len()` bytes at `offset` only if that needs no
    /// wait for the medium (the bytes are in the host's page cache):
    /// `Ok(false)` when it would wait, and then `buf` holds nothing
    /// defined. Lets a caller that must not block (the FUSE session
    /// thread) serve cached data itself and hand the rest to a thread that
    /// may wait. Default: not supported, always `Ok(false)`.
    fn read_cached(&self, _buf: &mut [u8], _offset: u64) -> Result<bool, DevError> {
        Ok(false)
    }

    /// The `len` bytes at `offset` as a slice of the backend's memory
    /// mapping of the device, if it maps the device and the host's page
    /// cache holds them all right now (so that copying them waits for no
    /// medium); `Ok(None)` otherwise — read them with
    /// [`BlockDev::read_cached`] or [`BlockDev::read_at`]. Any byte range
    /// inside the device (no alignment needed). Lets the FUSE session
    /// thread reply straight from the image's page cache (one copy less
    /// than reading into a buffer first).
    ///
    /// The bytes are the device's *now*: a write to the range, by this or
    /// another process, shows through the slice as it would race a read.
    /// Hand them to the kernel (a `write`/`writev`), do not read them on
    /// the CPU: a mapped image truncated from outside would make a CPU
    /// read past its new end raise SIGBUS, where the kernel's copy fails
    /// with EFAULT. Default: not supported, always `Ok(None)`.
    fn cached_view(&self, _offset: u64, _len: u64) -> Result<Option<&[u8]>, DevError> {
        Ok(None)
    }

    /// A hint that `len` bytes at `offset` will be read soon: the backend
    /// may start fetching them now, without waiting. No effect on what any
    /// read returns. Default: nothing.
    fn prefetch(&self, _offset: u64, _len: u64) {}

    /// Write all of `buf` at `offset`. Not durable until [`BlockDev::flush`].
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DevError>;

    /// Make every completed write durable (SYNCHRONIZE CACHE / fdatasync).
    fn flush(&self) -> Result<(), DevError>;

    /// Write zeros over `len` bytes at `offset` (allocating).
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DevError>;

    /// Discard `len` bytes at `offset` (punch hole / SCSI UNMAP). Later reads
    /// return zeros when [`DevCapabilities::unmap_zeroes`] is set.
    fn unmap(&self, offset: u64, len: u64) -> Result<(), DevError>;

    /// Atomically: if the `expected.len()` bytes at `offset` equal `expected`,
    /// write `new` there. `expected` and `new` have equal length, a multiple of
    /// the logical block size. A `Done` write is durable when this returns
    /// (SCSI requires COMPARE AND WRITE to be; lock protocol relies on it).
    fn compare_and_write(
        &self,
        offset: u64,
        expected: &[u8],
        new: &[u8],
    ) -> Result<CasOutcome, DevError>;

    /// Perform `op` at `offset` only if the heartbeat slot named by `fence`
    /// still admits it, atomically with respect to `compare_and_write` of
    /// that slot (so a host declared dead by a slot CAS can never land a
    /// write afterwards). The default checks, then writes: correct only when
    /// the device offers no better; backends override it.
    fn write_fenced(
        &self,
        op: FencedOp<'_>,
        offset: u64,
        fence: &FenceToken,
    ) -> Result<(), DevError> {
        check_then_apply(self, op, offset, fence)
    }
}

/// The default [`BlockDev::write_fenced`]: read the slot, check, then
/// perform `op`, all through `dev`. Not atomic against a slot
/// compare-and-write; for devices (and wrappers) with nothing better.
pub fn check_then_apply<D: BlockDev + ?Sized>(
    dev: &D,
    op: FencedOp<'_>,
    offset: u64,
    fence: &FenceToken,
) -> Result<(), DevError> {
    let mut sector = [0u8; 512];
    dev.read_at(&mut sector, fence.slot_addr)?;
    if !fence.admits(&sector) {
        return Err(fence.refused(dev.name()));
    }
    apply_op(dev, op, offset)
}

/// Perform a [`FencedOp`] without a fence check.
pub fn apply_op<D: BlockDev + ?Sized>(
    dev: &D,
    op: FencedOp<'_>,
    offset: u64,
) -> Result<(), DevError> {
    match op {
        FencedOp::Write(buf) => dev.write_at(buf, offset),
        FencedOp::WriteZeroes(len) => dev.write_zeroes(offset, len),
        FencedOp::Unmap(len) => dev.unmap(offset, len),
    }
}

/// The identity a host's writes are fenced by: its heartbeat slot must still
/// be LIVE under this generation and mount nonce when a fenced write lands.
/// This is the on-disk analogue of a SCSI persistent-reservation key: once
/// another host has compare-and-written the slot (declaring this host dead),
/// no fenced write of the old incarnation can land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceToken {
    /// Byte offset of the host's heartbeat slot sector.
    pub slot_addr: u64,
    pub hb_gen: u64,
    pub mount_nonce: u64,
}

impl FenceToken {
    /// Does the heartbeat slot image `sector` still admit this host's writes?
    pub fn admits(&self, sector: &[u8]) -> bool {
        match crate::format::HeartbeatSlot::decode(sector, self.slot_addr) {
            // LIVE, or RECOVERING by this very process (a host that claims a
            // dead slot replays its journal before going LIVE in it).
            Ok(s) => {
                matches!(
                    s.state,
                    crate::format::SlotState::Live | crate::format::SlotState::Recovering
                ) && s.hb_gen == self.hb_gen
                    && s.mount_nonce == self.mount_nonce
            }
            Err(_) => false,
        }
    }

    /// The error a refused fenced write returns.
    pub fn refused(&self, device: &str) -> DevError {
        DevError::Fenced {
            device: device.to_string(),
            why: format!(
                "heartbeat slot at offset {} no longer holds generation {} of this host",
                self.slot_addr, self.hb_gen
            ),
        }
    }
}

/// What a fenced modification does.
#[derive(Debug, Clone, Copy)]
pub enum FencedOp<'a> {
    Write(&'a [u8]),
    WriteZeroes(u64),
    Unmap(u64),
}

/// Shared handle to a device.
pub type SharedDev = Arc<dyn BlockDev>;

/// Check a compare-and-write's buffers and range; used by every backend.
pub fn check_cas(
    dev: &dyn BlockDev,
    offset: u64,
    expected: &[u8],
    new: &[u8],
) -> Result<(), DevError> {
    if expected.len() != new.len() {
        return Err(DevError::CasLength {
            device: dev.name().to_string(),
            expected: expected.len(),
            new: new.len(),
        });
    }
    check_io(dev, DevOp::CompareAndWrite, offset, new.len() as u64)
}

impl FencedOp<'_> {
    /// Bytes the operation covers.
    pub fn len(&self) -> u64 {
        match self {
            FencedOp::Write(b) => b.len() as u64,
            FencedOp::WriteZeroes(l) | FencedOp::Unmap(l) => *l,
        }
    }

    /// True for a zero-length operation.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The device operation it is, for errors and checks.
    pub fn dev_op(&self) -> DevOp {
        match self {
            FencedOp::Write(_) => DevOp::Write,
            FencedOp::WriteZeroes(_) => DevOp::WriteZeroes,
            FencedOp::Unmap(_) => DevOp::Unmap,
        }
    }
}

/// Check alignment and range of an I/O; used by every backend.
pub fn check_io(dev: &dyn BlockDev, op: DevOp, offset: u64, len: u64) -> Result<(), DevError> {
    let bs = u64::from(dev.logical_block_size());
    if offset % bs != 0 || len % bs != 0 {
        return Err(DevError::Misaligned {
            device: dev.name().to_string(),
            op,
            offset,
            len,
            block_size: dev.logical_block_size(),
        });
    }
    match offset.checked_add(len) {
        Some(end) if end <= dev.size() => Ok(()),
        _ => Err(DevError::OutOfRange {
            device: dev.name().to_string(),
            op,
            offset,
            len,
            size: dev.size(),
        }),
    }
}

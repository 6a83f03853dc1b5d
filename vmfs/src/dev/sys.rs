//! Thin wrappers over the Linux calls the file backend needs: block-device
//! ioctls, fallocate and fdatasync; the open-file-description (OFD) range locks
//! and the non-blocking cached read are the iSCSI target's.

use std::io;
use std::os::fd::RawFd;

// Linux block-device ioctls (include/uapi/linux/fs.h).
const BLKSSZGET: libc::c_ulong = 0x1268;
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKDISCARD: libc::c_ulong = 0x1277;
const BLKZEROOUT: libc::c_ulong = 0x127f;

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Size in bytes of a block device.
pub fn block_device_size(fd: RawFd) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid
    // and exclusively borrowed for the call.
    check(unsafe { libc::ioctl(fd, BLKGETSIZE64, &mut size as *mut u64) })?;
    Ok(size)
}

/// Logical block size of a block device.
pub fn block_device_sector_size(fd: RawFd) -> io::Result<u32> {
    let mut ssz: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, valid for the call.
    check(unsafe { libc::ioctl(fd, BLKSSZGET, &mut ssz as *mut libc::c_int) })?;
    u32::try_from(ssz).map_err(|_| io::Error::other(format!("bad sector size {ssz}")))
}

/// Discard (BLKDISCARD) or zero (BLKZEROOUT) a range of a block device.
pub fn block_device_range(fd: RawFd, zero: bool, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    let req = if zero { BLKZEROOUT } else { BLKDISCARD };
    // SAFETY: both ioctls read two u64s (start, length) from the pointer,
    // which points at a live array of exactly that shape.
    check(unsafe { libc::ioctl(fd, req, range.as_ptr()) })
}

/// fallocate(2) with the given mode.
pub fn fallocate(fd: RawFd, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    let off = libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::other("length too large"))?;
    loop {
        // SAFETY: plain syscall on a file descriptor we own; no pointers.
        let r = unsafe { libc::fallocate(fd, mode, off, len) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `preadv2(RWF_NOWAIT)`: the iSCSI target's (its file backing serves
/// cached READs inline the same way).
pub use iscsi_target::scsi::page_cache::pread_nowait;

/// posix_fadvise(WILLNEED): start reading the range into the page cache
/// (the kernel queues the reads and returns without waiting for them).
pub fn will_need(fd: RawFd, offset: u64, len: u64) -> io::Result<()> {
    let off = libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::other("length too large"))?;
    // SAFETY: plain syscall on a file descriptor we own; no pointers.
    let r = unsafe { libc::posix_fadvise(fd, off, len, libc::POSIX_FADV_WILLNEED) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// fdatasync(2), retried on EINTR.
pub fn fdatasync(fd: RawFd) -> io::Result<()> {
    loop {
        // SAFETY: plain syscall on a file descriptor we own.
        let r = unsafe { libc::fdatasync(fd) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// OFD byte-range locks: the very type the iSCSI target takes on a file it
/// serves, so a `FileDev` host and a host reaching the same file through
/// the target follow one locking rule (exclusive around compare-and-write,
/// shared around fenced writes). OFD locks belong to the open file
/// description: they exclude other processes and descriptions, not threads
/// sharing ours, so callers pair them with an in-process mutex.
pub use iscsi_target::scsi::ofd::OfdRangeLock;

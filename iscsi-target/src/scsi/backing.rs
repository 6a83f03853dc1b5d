//! The LUN's backing store: a regular (possibly sparse) file or a block
//! device, accessed with positional I/O. Thin provisioning uses
//! fallocate(PUNCH_HOLE) and lseek(SEEK_DATA/SEEK_HOLE).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::ofd::OfdRangeLock;

/// An open backing file.
#[derive(Debug)]
pub struct Backing {
    file: File,
    path: PathBuf,
    size: u64,
    is_block_device: bool,
    read_only: bool,
}

/// Allocation state of a byte range (from SEEK_DATA/SEEK_HOLE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    Mapped(u64),
    Hole(u64),
}

impl Backing {
    pub fn open(path: &Path, read_only: bool) -> io::Result<Backing> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        let meta = file.metadata()?;
        let is_block_device = meta.file_type().is_block_device();
        let size = if is_block_device {
            // SAFETY: lseek on a valid, owned descriptor has no memory effects.
            let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
            if end < 0 {
                return Err(io::Error::last_os_error());
            }
            end as u64
        } else {
            meta.len()
        };
        Ok(Backing {
            file,
            path: path.to_path_buf(),
            size,
            is_block_device,
            read_only,
        })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn read_only(&self) -> bool {
        self.read_only
    }
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, off)
    }
    /// Reads `buf` at `off` only if that needs no waiting (the pages are in
    /// the page cache): `preadv2(RWF_NOWAIT)`. Returns false when the read
    /// would block (or the kernel cannot tell), so the caller takes the
    /// blocking path instead.
    pub fn read_cached(&self, buf: &mut [u8], off: u64) -> bool {
        // Any error (EINTR aside, retried): take the slow path.
        super::page_cache::pread_nowait(self.file.as_raw_fd(), buf, off).unwrap_or(false)
    }
    pub fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.file.write_all_at(buf, off)
    }
    /// Write-locks a byte range against other processes (COMPARE AND WRITE).
    pub fn lock_exclusive(&self, off: u64, len: u64) -> io::Result<OfdRangeLock> {
        OfdRangeLock::exclusive(self.file.as_raw_fd(), off, len)
    }
    /// Read-locks a byte range against other processes' COMPARE AND WRITE.
    pub fn lock_shared(&self, off: u64, len: u64) -> io::Result<OfdRangeLock> {
        OfdRangeLock::shared(self.file.as_raw_fd(), off, len)
    }
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    /// Deallocates a range; it reads back as zeroes afterwards.
    pub fn punch_hole(&self, off: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        if self.is_block_device {
            let range = [off, len];
            // SAFETY: BLKDISCARD reads two u64 from the pointer, which points at a live array.
            let r = unsafe { libc::ioctl(self.file.as_raw_fd(), 0x1277, range.as_ptr()) };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            return Ok(());
        }
        // SAFETY: fallocate on a valid descriptor; no pointers involved.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off as libc::off_t,
                len as libc::off_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    /// Whether holes can be punched and found (regular files).
    pub fn thin(&self) -> bool {
        !self.is_block_device
    }
    /// The extent containing `off`: mapped or hole, and where it ends
    /// (clipped to the file size).
    pub fn extent_at(&self, off: u64) -> io::Result<Extent> {
        if self.is_block_device {
            return Ok(Extent::Mapped(self.size));
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: lseek on a valid descriptor.
        let data = unsafe { libc::lseek(fd, off as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                return Ok(Extent::Hole(self.size));
            }
            return Err(e);
        }
        if data as u64 > off {
            return Ok(Extent::Hole((data as u64).min(self.size)));
        }
        // SAFETY: lseek on a valid descriptor.
        let hole = unsafe { libc::lseek(fd, off as libc::off_t, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Extent::Mapped((hole as u64).min(self.size)))
    }
}

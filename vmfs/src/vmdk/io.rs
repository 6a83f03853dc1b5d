//! The byte-file interface the VMDK code is written against.
//!
//! The vmfs filesystem plugs in by implementing [`ExtentIo`] for its open
//! files; tests use `std::fs::File` (implemented here) or [`MemExtent`].

use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::sync::{Arc, Mutex};

/// Random-access byte file holding one extent or descriptor.
///
/// `read_at` and `write_at` transfer the whole buffer or fail; a read that
/// runs past the end of the file fails with `UnexpectedEof`.
pub trait ExtentIo: Send + Sync {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Current size of the file in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Grow (sparsely) or shrink the file.
    fn set_size(&self, size: u64) -> io::Result<()>;
    /// Reserve storage for the range without writing it (thick, lazily
    /// zeroed). The range reads as zeros afterwards.
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Release the storage of the range; it reads as zeros afterwards.
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Make written data and size durable.
    fn sync(&self) -> io::Result<()>;
}

impl<T: ExtentIo + ?Sized> ExtentIo for Arc<T> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
    fn set_size(&self, size: u64) -> io::Result<()> {
        (**self).set_size(size)
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        (**self).allocate(offset, len)
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        (**self).punch_hole(offset, len)
    }
    fn sync(&self) -> io::Result<()> {
        (**self).sync()
    }
}

fn to_off(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl ExtentIo for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn set_size(&self, size: u64) -> io::Result<()> {
        self.set_len(size)
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (off, l) = (to_off(offset)?, to_off(len)?);
        // SAFETY: fallocate only reads its integer arguments; the descriptor
        // is owned by `self` and stays open for the duration of the call.
        let rc = unsafe { libc::fallocate(self.as_raw_fd(), 0, off, l) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
            // Filesystem without fallocate: reserve by writing zeros.
            write_zeros(self, offset, len)
        } else {
            Err(err)
        }
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (off, l) = (to_off(offset)?, to_off(len)?);
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: as in `allocate`: integer arguments and a descriptor owned
        // by `self`.
        let rc = unsafe { libc::fallocate(self.as_raw_fd(), mode, off, l) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
            write_zeros(self, offset, len)
        } else {
            Err(err)
        }
    }
    fn sync(&self) -> io::Result<()> {
        self.sync_all()
    }
}

/// Write `len` zero bytes at `offset`, in 1 MiB pieces.
pub fn write_zeros(io: &(impl ExtentIo + ?Sized), offset: u64, len: u64) -> io::Result<()> {
    const PIECE: u64 = 1 << 20;
    let zeros = vec![0u8; PIECE.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = PIECE.min(len - done);
        io.write_at(&zeros[..n as usize], offset + done)?;
        done += n;
    }
    Ok(())
}

/// In-memory extent file (unit tests, and a model of the interface).
#[derive(Debug, Default)]
pub struct MemExtent {
    data: Mutex<Vec<u8>>,
}

impl MemExtent {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the whole content.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock cannot leave the Vec invalid.
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn end_of(offset: u64, len: usize) -> io::Result<usize> {
    offset
        .checked_add(len as u64)
        .and_then(|e| usize::try_from(e).ok())
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))
}

impl ExtentIo for MemExtent {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let d = self.lock();
        let end = end_of(offset, buf.len())?;
        if end > d.len() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        buf.copy_from_slice(&d[offset as usize..end]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut d = self.lock();
        let end = end_of(offset, buf.len())?;
        if end > d.len() {
            d.resize(end, 0);
        }
        d[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.lock().len() as u64)
    }
    fn set_size(&self, size: u64) -> io::Result<()> {
        let size = end_of(size, 0)?;
        self.lock().resize(size, 0);
        Ok(())
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = end_of(
            offset,
            usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?,
        )?;
        let mut d = self.lock();
        if end > d.len() {
            d.resize(end, 0);
        }
        Ok(())
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut d = self.lock();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(d.len());
        let end = end_of(
            offset,
            usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?,
        )
        .unwrap_or(usize::MAX)
        .min(d.len());
        if start < end {
            d[start..end].fill(0);
        }
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

//! A plain host file (or block device node) as the disk: the backend the
//! tests compare against and the bench's raw reference.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{fallocate, FallocateFlags};

use crate::backend::{check_range, BackendError, BackendResult, BlockBackend};

/// Why a file could not be opened as a disk.
#[derive(Debug, thiserror::Error)]
pub enum FileBackendError {
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is {size} bytes, not a multiple of the 512-byte sector")]
    Unaligned { path: PathBuf, size: u64 },
}

/// A file served as a disk, byte for byte.
pub struct FileBackend {
    file: File,
    size: u64,
    read_only: bool,
}

impl FileBackend {
    /// Open `path` (which must exist, with a size that is a multiple of 512).
    pub fn open(path: &Path, read_only: bool) -> Result<Self, FileBackendError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| FileBackendError::Open {
                path: path.to_owned(),
                source,
            })?;
        let size = file_size(&file).map_err(|source| FileBackendError::Open {
            path: path.to_owned(),
            source,
        })?;
        if size % 512 != 0 {
            return Err(FileBackendError::Unaligned {
                path: path.to_owned(),
                size,
            });
        }
        Ok(FileBackend {
            file,
            size,
            read_only,
        })
    }
}

/// Length of a regular file, or of a block device (whose metadata says 0).
fn file_size(file: &File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    let mut f = file;
    f.seek(SeekFrom::End(0))
}

fn io_err(op: &'static str, offset: u64, len: u64) -> impl FnOnce(io::Error) -> BackendError {
    move |source| BackendError::Io {
        op,
        offset,
        len,
        source,
    }
}

impl FileBackend {
    fn writable(&self, op: &'static str, offset: u64, len: u64) -> BackendResult<()> {
        if self.read_only {
            return Err(BackendError::ReadOnly { op, offset, len });
        }
        check_range(op, offset, len, self.size)
    }

    fn write_zero_bytes(&self, offset: u64, len: u64) -> BackendResult<()> {
        let zeros = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64);
            self.file
                .write_all_at(&zeros[..n as usize], offset + done)
                .map_err(io_err("write-zeroes", offset, len))?;
            done += n;
        }
        Ok(())
    }
}

impl BlockBackend for FileBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> BackendResult<()> {
        check_range("read", offset, buf.len() as u64, self.size)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(io_err("read", offset, buf.len() as u64))
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> BackendResult<()> {
        self.writable("write", offset, buf.len() as u64)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(io_err("write", offset, buf.len() as u64))
    }

    fn flush(&self) -> BackendResult<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data().map_err(io_err("flush", 0, self.size))
    }

    fn discard(&self, offset: u64, len: u64) -> BackendResult<()> {
        self.writable("discard", offset, len)?;
        // Punching a hole frees the space; a file system without hole support
        // makes this a no-op, which the discard contract allows.
        match fallocate(
            &self.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(()),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP => Ok(()),
            Err(e) => Err(io_err("discard", offset, len)(e.into())),
        }
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> BackendResult<()> {
        self.writable("write-zeroes", offset, len)?;
        let mode = if may_unmap {
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE
        } else {
            FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE
        };
        match fallocate(&self.file, mode, offset, len) {
            Ok(()) => Ok(()),
            // Block devices and some file systems lack these modes: write zeros.
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NODEV => {
                self.write_zero_bytes(offset, len)
            }
            Err(e) => Err(io_err("write-zeroes", offset, len)(e.into())),
        }
    }
}

//! The VMDK library's [`ExtentStore`] / [`ExtentIo`] over the vmfs
//! filesystem: names are paths inside the volume (relative to its root; a
//! leading `/` means the same), files are [`Fs`] handles whose inode locks
//! say who may write them.

use std::io;

use crate::fs::{Falloc, Fs, FsError, MultiWriterFile, SetAttr};
use crate::vmdk::{ExtentIo, ExtentStore};

/// How a store opens files for write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteLock {
    /// EXCLUSIVE: this host alone (the usual VM disk).
    Exclusive,
    /// MULTI_WRITER: several hosts at once (clustered guests); the file
    /// must be eager-zeroed thick.
    MultiWriter,
}

/// How a store opens files for read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadLock {
    /// SHARED_READ, refused while another host writes the file (parents of
    /// a chain, read-only disks).
    Shared,
    /// SHARED_READ if possible, else no lock: follow another host's writes
    /// (inspection: `vmfs disk info` on a disk in use).
    Follow,
}

/// Files of the volume for the VMDK code.
#[derive(Debug, Clone)]
pub struct FsStore {
    fs: Fs,
    write: WriteLock,
    read: ReadLock,
}

/// Turn a filesystem error into the `io::Error` the VMDK traits carry,
/// keeping the message (inode, what) and the errno's kind.
pub fn io_error(e: FsError) -> io::Error {
    let kind = io::Error::from_raw_os_error(e.errno()).kind();
    io::Error::new(kind, e)
}

/// Split a volume path into its components (no empty, `.` or `..`).
pub fn components(path: &str) -> io::Result<Vec<&str>> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") || path.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad path {path:?} inside the volume (no '..', not empty)"),
        ));
    }
    Ok(parts)
}

impl FsStore {
    pub fn new(fs: Fs, write: WriteLock, read: ReadLock) -> FsStore {
        FsStore { fs, write, read }
    }

    pub fn fs(&self) -> &Fs {
        &self.fs
    }

    /// Inode of `path` (a file or directory of the volume).
    pub fn lookup(&self, path: &str) -> io::Result<u64> {
        let mut ino = self.fs.root();
        for part in components(path)? {
            ino = self.fs.lookup(ino, part.as_bytes()).map_err(io_error)?.ino;
        }
        Ok(ino)
    }

    /// (parent directory inode, last component) of `path`.
    pub fn parent_of<'a>(&self, path: &'a str) -> io::Result<(u64, &'a str)> {
        let parts = components(path)?;
        let (name, dirs) = parts.split_last().expect("non-empty");
        let mut ino = self.fs.root();
        for d in dirs {
            ino = self.fs.lookup(ino, d.as_bytes()).map_err(io_error)?.ino;
        }
        Ok((ino, name))
    }

    /// Create directory `path` and any missing parents (mode 0755); its
    /// inode.
    pub fn mkdir_p(&self, path: &str) -> io::Result<u64> {
        let mut ino = self.fs.root();
        for part in components(path)? {
            ino = match self.fs.lookup(ino, part.as_bytes()) {
                Ok(a) => a.ino,
                Err(FsError::NotFound(_)) => {
                    let a = self.fs.mkdir(ino, part.as_bytes(), 0o755, 0, 0);
                    a.map_err(io_error)?.ino
                }
                Err(e) => return Err(io_error(e)),
            };
        }
        Ok(ino)
    }

    /// Byte ranges `(offset, len)` of file `path` that hold data (holes
    /// skipped), from SEEK_DATA / SEEK_HOLE.
    pub fn data_ranges(&self, path: &str) -> io::Result<Vec<(u64, u64)>> {
        let ino = self.lookup(path)?;
        let fh = self.fs.open(ino, false).map_err(io_error)?;
        let r = (|| {
            let size = self.fs.getattr(ino)?.size;
            let mut out = Vec::new();
            let mut pos = 0;
            while pos < size {
                let Some(d) = self.fs.seek(fh, pos, true)? else {
                    break;
                };
                let h = self.fs.seek(fh, d, false)?.unwrap_or(size).min(size);
                if h > d {
                    out.push((d, h - d));
                }
                pos = h.max(d + 1);
            }
            Ok(out)
        })();
        let _ = self.fs.close(fh);
        r.map_err(io_error)
    }
}

impl ExtentStore for FsStore {
    fn open(&self, name: &str, writable: bool) -> io::Result<Box<dyn ExtentIo>> {
        let ino = self.lookup(name)?;
        let fs = self.fs.clone();
        if writable && self.write == WriteLock::MultiWriter {
            let f = fs.open_multi_writer(ino).map_err(io_error)?;
            return Ok(Box::new(FsFile::Multi(Box::new(f))));
        }
        let fh = match (writable, self.read) {
            (true, _) => fs.open(ino, true),
            (false, ReadLock::Shared) => fs.open_shared_read(ino),
            (false, ReadLock::Follow) => fs.open(ino, false),
        }
        .map_err(io_error)?;
        Ok(Box::new(FsFile::Handle { fs, ino, fh }))
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn ExtentIo>> {
        let (dir, leaf) = self.parent_of(name)?;
        let attr = self
            .fs
            .create(dir, leaf.as_bytes(), 0o600, 0, 0)
            .map_err(io_error)?;
        let fh = self.fs.open(attr.ino, true).map_err(io_error)?;
        Ok(Box::new(FsFile::Handle {
            fs: self.fs.clone(),
            ino: attr.ino,
            fh,
        }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let (dir, leaf) = self.parent_of(name)?;
        self.fs.unlink(dir, leaf.as_bytes()).map_err(io_error)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (d1, n1) = self.parent_of(from)?;
        let (d2, n2) = self.parent_of(to)?;
        self.fs
            .rename(d1, n1.as_bytes(), d2, n2.as_bytes())
            .map_err(io_error)
    }

    fn exists(&self, name: &str) -> io::Result<bool> {
        match self.lookup(name) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// One open file of the volume.
pub enum FsFile {
    /// An ordinary handle (EXCLUSIVE for write, SHARED_READ or unlocked).
    Handle { fs: Fs, ino: u64, fh: u64 },
    /// A MULTI_WRITER open.
    Multi(Box<MultiWriterFile>),
}

fn multi_only(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{what} on a multi-writer file (its size and blocks are fixed while open)"),
    )
}

impl ExtentIo for FsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            FsFile::Handle { fs, fh, .. } => {
                let got = fs.read(*fh, offset, buf.len()).map_err(io_error)?;
                if got.len() < buf.len() {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                buf.copy_from_slice(&got);
                Ok(())
            }
            FsFile::Multi(f) => ExtentIo::read_at(&**f, buf, offset),
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self {
            FsFile::Handle { fs, fh, .. } => {
                let mut done = 0;
                while done < buf.len() {
                    let n = fs
                        .write(*fh, offset + done as u64, &buf[done..])
                        .map_err(io_error)?;
                    if n == 0 {
                        return Err(io::Error::from(io::ErrorKind::WriteZero));
                    }
                    done += n;
                }
                Ok(())
            }
            FsFile::Multi(f) => ExtentIo::write_at(&**f, buf, offset),
        }
    }

    fn size(&self) -> io::Result<u64> {
        match self {
            FsFile::Handle { fs, ino, .. } => Ok(fs.getattr(*ino).map_err(io_error)?.size),
            FsFile::Multi(f) => Ok(f.size()),
        }
    }

    fn set_size(&self, size: u64) -> io::Result<()> {
        match self {
            FsFile::Handle { fs, ino, .. } => {
                let sa = SetAttr {
                    size: Some(size),
                    ..SetAttr::default()
                };
                fs.setattr(*ino, &sa).map(|_| ()).map_err(io_error)
            }
            FsFile::Multi(_) => Err(multi_only("resizing")),
        }
    }

    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        match self {
            FsFile::Handle { fs, fh, .. } => fs
                .fallocate(*fh, offset, len, Falloc::AllocateLazy { keep_size: false })
                .map_err(io_error),
            FsFile::Multi(_) => Err(multi_only("allocating")),
        }
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        match self {
            FsFile::Handle { fs, fh, .. } => fs
                .fallocate(*fh, offset, len, Falloc::PunchHole)
                .map_err(io_error),
            FsFile::Multi(f) => f.punch_hole(offset, len),
        }
    }

    fn sync(&self) -> io::Result<()> {
        match self {
            FsFile::Handle { fs, fh, .. } => fs.fsync(*fh).map_err(io_error),
            FsFile::Multi(f) => f.sync().map_err(io_error),
        }
    }
}

// A multi-writer file is an extent of its own (blocks fixed while open).
impl ExtentIo for MultiWriterFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset.saturating_add(buf.len() as u64) > MultiWriterFile::size(self) {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        MultiWriterFile::read_at(self, offset, buf).map_err(io_error)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        MultiWriterFile::write_at(self, offset, buf).map_err(io_error)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(MultiWriterFile::size(self))
    }
    fn set_size(&self, _: u64) -> io::Result<()> {
        Err(multi_only("resizing"))
    }
    fn allocate(&self, _: u64, _: u64) -> io::Result<()> {
        Err(multi_only("allocating"))
    }
    /// The blocks stay (no metadata changes under MULTI_WRITER); the range
    /// must still read as zeros.
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        crate::vmdk::io::write_zeros(self, offset, len)
    }
    fn sync(&self) -> io::Result<()> {
        MultiWriterFile::sync(self).map_err(io_error)
    }
}

impl Drop for FsFile {
    fn drop(&mut self) {
        if let FsFile::Handle { fs, fh, ino } = self {
            match fs.close(*fh) {
                // Handed off to another host (live migration): nothing left.
                Ok(()) | Err(FsError::BadHandle(_)) => {}
                Err(e) => tracing::warn!("closing inode {ino}: {e}"),
            }
        }
    }
}

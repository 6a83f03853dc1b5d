//! An [`ExtentStore`] over a mounted [`Fs`] (paths inside the volume,
//! relative to its root), so `vmfs-wreck`, the tests and the benchmark can
//! make real VMDK disks on a volume with the VMDK library. Opening for
//! write takes the inode's EXCLUSIVE lock (as `Fs::open` does), held until
//! the file is dropped.

use std::io;

use vmfs::fs::{Falloc, Fs, FsError, SetAttr};
use vmfs::vmdk::{ExtentIo, ExtentStore};

fn to_io(what: &str, e: FsError) -> io::Error {
    io::Error::new(
        io::Error::from_raw_os_error(e.errno()).kind(),
        format!("{what}: {e}"),
    )
}

/// Files of a mounted volume.
#[derive(Debug, Clone)]
pub struct FsStore {
    fs: Fs,
}

impl FsStore {
    pub fn new(fs: Fs) -> FsStore {
        FsStore { fs }
    }

    pub fn fs(&self) -> &Fs {
        &self.fs
    }

    /// Inode of `path`.
    pub fn lookup(&self, path: &str) -> Result<u64, FsError> {
        let mut ino = self.fs.root();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self.fs.lookup(ino, part.as_bytes())?.ino;
        }
        Ok(ino)
    }

    /// Directory inode and last component of `path`.
    fn parent<'p>(&self, path: &'p str) -> Result<(u64, &'p str), FsError> {
        let path = path.trim_end_matches('/');
        match path.rsplit_once('/') {
            Some((dir, base)) => Ok((self.lookup(dir)?, base)),
            None => Ok((self.fs.root(), path)),
        }
    }

    /// Create directory `path` and any missing parents.
    pub fn mkdir_p(&self, path: &str) -> Result<u64, FsError> {
        let mut ino = self.fs.root();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = match self.fs.lookup(ino, part.as_bytes()) {
                Ok(a) => a.ino,
                Err(FsError::NotFound(_)) => self.fs.mkdir(ino, part.as_bytes(), 0o755, 0, 0)?.ino,
                Err(e) => return Err(e),
            };
        }
        Ok(ino)
    }

    fn file(&self, name: &str, ino: u64, write: bool) -> io::Result<Box<dyn ExtentIo>> {
        let fh = self.fs.open(ino, write).map_err(|e| to_io(name, e))?;
        Ok(Box::new(FsFile {
            fs: self.fs.clone(),
            ino,
            fh,
            name: name.to_string(),
        }))
    }
}

impl ExtentStore for FsStore {
    fn open(&self, name: &str, writable: bool) -> io::Result<Box<dyn ExtentIo>> {
        let ino = self.lookup(name).map_err(|e| to_io(name, e))?;
        self.file(name, ino, writable)
    }
    fn create(&self, name: &str) -> io::Result<Box<dyn ExtentIo>> {
        let (dir, base) = self.parent(name).map_err(|e| to_io(name, e))?;
        let a = self
            .fs
            .create(dir, base.as_bytes(), 0o644, 0, 0)
            .map_err(|e| to_io(name, e))?;
        self.file(name, a.ino, true)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        let (dir, base) = self.parent(name).map_err(|e| to_io(name, e))?;
        self.fs
            .unlink(dir, base.as_bytes())
            .map_err(|e| to_io(name, e))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (fd, fb) = self.parent(from).map_err(|e| to_io(from, e))?;
        let (td, tb) = self.parent(to).map_err(|e| to_io(to, e))?;
        self.fs
            .rename(fd, fb.as_bytes(), td, tb.as_bytes())
            .map_err(|e| to_io(from, e))
    }
    fn exists(&self, name: &str) -> io::Result<bool> {
        match self.lookup(name) {
            Ok(_) => Ok(true),
            Err(FsError::NotFound(_)) => Ok(false),
            Err(e) => Err(to_io(name, e)),
        }
    }
}

/// One open file of the volume.
struct FsFile {
    fs: Fs,
    ino: u64,
    fh: u64,
    name: String,
}

impl Drop for FsFile {
    fn drop(&mut self) {
        if let Err(e) = self.fs.close(self.fh) {
            eprintln!("{}: close: {e}", self.name);
        }
    }
}

impl ExtentIo for FsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let d = self
            .fs
            .read(self.fh, offset, buf.len())
            .map_err(|e| to_io(&self.name, e))?;
        if d.len() < buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: {} bytes at {offset} run past the end",
                    self.name,
                    buf.len()
                ),
            ));
        }
        buf.copy_from_slice(&d);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .fs
                .write(self.fh, offset + done as u64, &buf[done..])
                .map_err(|e| to_io(&self.name, e))?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!("{}: no space", self.name),
                ));
            }
            done += n;
        }
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self
            .fs
            .getattr(self.ino)
            .map_err(|e| to_io(&self.name, e))?
            .size)
    }
    fn set_size(&self, size: u64) -> io::Result<()> {
        let sa = SetAttr {
            size: Some(size),
            ..Default::default()
        };
        self.fs
            .setattr(self.ino, &sa)
            .map(|_| ())
            .map_err(|e| to_io(&self.name, e))
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fs
            .fallocate(
                self.fh,
                offset,
                len,
                Falloc::AllocateLazy { keep_size: false },
            )
            .map_err(|e| to_io(&self.name, e))
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fs
            .fallocate(self.fh, offset, len, Falloc::PunchHole)
            .map_err(|e| to_io(&self.name, e))
    }
    fn sync(&self) -> io::Result<()> {
        self.fs.fsync(self.fh).map_err(|e| to_io(&self.name, e))
    }
}

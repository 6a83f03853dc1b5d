//! The directory the files of a disk live in: descriptors, flat extents,
//! sparse deltas. Names are as written in descriptors (relative to the
//! directory of the descriptor that names them).

use super::error::{FileOp, Result, VmdkError};
use super::io::{ExtentIo, MemExtent};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Largest descriptor file read (qemu reads at most 1 MiB too).
pub const MAX_DESCRIPTOR_BYTES: u64 = 1 << 20;

/// A namespace of files (one datastore directory).
pub trait ExtentStore: Send + Sync {
    /// Open an existing file.
    fn open(&self, name: &str, writable: bool) -> io::Result<Box<dyn ExtentIo>>;
    /// Create a new, empty file; fails if `name` exists.
    fn create(&self, name: &str) -> io::Result<Box<dyn ExtentIo>>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Replace `to` by `from` atomically.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    fn exists(&self, name: &str) -> io::Result<bool>;
}

/// Read a whole (small) text file such as a descriptor.
pub fn read_small_file(store: &dyn ExtentStore, name: &str) -> Result<Vec<u8>> {
    let f = store
        .open(name, false)
        .map_err(|e| VmdkError::io(name, FileOp::Open, 0, 0, e))?;
    let size = f
        .size()
        .map_err(|e| VmdkError::io(name, FileOp::Size, 0, 0, e))?;
    if size > MAX_DESCRIPTOR_BYTES {
        return Err(VmdkError::corrupt(
            name,
            0,
            format!("descriptor is {size} bytes, more than the {MAX_DESCRIPTOR_BYTES} allowed"),
        ));
    }
    let mut buf = vec![0u8; size as usize];
    f.read_at(&mut buf, 0)
        .map_err(|e| VmdkError::io(name, FileOp::Read, 0, size, e))?;
    Ok(buf)
}

/// Write a small file atomically: a temporary file, synced, renamed over `name`.
pub fn replace_small_file(store: &dyn ExtentStore, name: &str, data: &[u8]) -> Result<()> {
    let tmp = format!("{name}.tmp");
    if store
        .exists(&tmp)
        .map_err(|e| VmdkError::io(&tmp, FileOp::Open, 0, 0, e))?
    {
        store
            .remove(&tmp)
            .map_err(|e| VmdkError::io(&tmp, FileOp::Remove, 0, 0, e))?;
    }
    let f = store
        .create(&tmp)
        .map_err(|e| VmdkError::io(&tmp, FileOp::Create, 0, 0, e))?;
    f.write_at(data, 0)
        .map_err(|e| VmdkError::io(&tmp, FileOp::Write, 0, data.len() as u64, e))?;
    f.sync()
        .map_err(|e| VmdkError::io(&tmp, FileOp::Sync, 0, 0, e))?;
    drop(f);
    store
        .rename(&tmp, name)
        .map_err(|e| VmdkError::io(name, FileOp::Rename, 0, 0, e))
}

/// Files of a host directory (tests; tools working on exported datastores).
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Host path of `name`: absolute names are used as they are.
    pub fn path(&self, name: &str) -> io::Result<PathBuf> {
        if name.is_empty() || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad file name {name:?}"),
            ));
        }
        let p = Path::new(name);
        Ok(if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        })
    }
}

impl ExtentStore for DirStore {
    fn open(&self, name: &str, writable: bool) -> io::Result<Box<dyn ExtentIo>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(self.path(name)?)?;
        Ok(Box::new(f))
    }
    fn create(&self, name: &str) -> io::Result<Box<dyn ExtentIo>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.path(name)?)?;
        Ok(Box::new(f))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path(name)?)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path(from)?, self.path(to)?)
    }
    fn exists(&self, name: &str) -> io::Result<bool> {
        self.path(name)?.try_exists()
    }
}

/// In-memory store (unit tests).
#[derive(Debug, Default)]
pub struct MemStore {
    files: Mutex<HashMap<String, Arc<MemExtent>>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Names of the files present, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<MemExtent>>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {name:?}"))
}

impl ExtentStore for MemStore {
    fn open(&self, name: &str, _writable: bool) -> io::Result<Box<dyn ExtentIo>> {
        let f = self
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))?;
        Ok(Box::new(f))
    }
    fn create(&self, name: &str) -> io::Result<Box<dyn ExtentIo>> {
        let mut files = self.lock();
        if files.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("file {name:?} exists"),
            ));
        }
        let f = Arc::new(MemExtent::new());
        files.insert(name.to_string(), f.clone());
        Ok(Box::new(f))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.lock()
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found(name))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut files = self.lock();
        let f = files.remove(from).ok_or_else(|| not_found(from))?;
        files.insert(to.to_string(), f);
        Ok(())
    }
    fn exists(&self, name: &str) -> io::Result<bool> {
        Ok(self.lock().contains_key(name))
    }
}

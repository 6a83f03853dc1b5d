//! [`VirtualDisk`]: a VMDK on the volume, opened under a lock mode, served
//! by byte offset through futures (see `pool.rs` for the async model).

use std::sync::{Arc, Mutex, RwLock};

use crate::format::{Holder, LockMode};
use crate::fs::Fs;
use crate::vmdk::layer::{resolve, ExtentData};
use crate::vmdk::{DiskChain, ExtentStore};

use super::error::{DiskError, DiskResult};
use super::pool::{IoFuture, Pool};
use super::store::{FsStore, ReadLock, WriteLock};

/// The lock a disk is opened under (its top disk's extent files; parents
/// are always SHARED_READ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskLock {
    /// This host alone reads and writes (a VM's own disk).
    Exclusive,
    /// Read-only; refused while another host writes it.
    SharedRead,
    /// Several hosts write at once (clustered guests). The disk must be a
    /// flat eager-zeroed thick disk without snapshots.
    MultiWriter,
}

impl DiskLock {
    pub fn mode(self) -> LockMode {
        match self {
            DiskLock::Exclusive => LockMode::Exclusive,
            DiskLock::SharedRead => LockMode::SharedRead,
            DiskLock::MultiWriter => LockMode::MultiWriter,
        }
    }
}

/// How to open a disk.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    pub lock: DiskLock,
    /// Worker threads serving this disk's requests.
    pub workers: usize,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            lock: DiskLock::Exclusive,
            workers: 2,
        }
    }
}

/// Where the disk stands with respect to a live-migration hand-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Running,
    /// Offered to another host: no I/O until settled.
    Offered(Holder),
    /// The other host took it: nothing more here.
    HandedOff,
}

pub(super) struct Inner {
    pub fs: Fs,
    pub path: String,
    pub lock: DiskLock,
    pub capacity: u64,
    pub chain: RwLock<Option<DiskChain>>,
    pub phase: Mutex<Phase>,
    /// Inodes of the top disk's extent files (the locks a hand-off moves).
    pub top_inos: Vec<u64>,
    pub pool: Pool,
}

/// A virtual disk on the volume, open on this host. Cloning shares it.
/// Requests run on the disk's worker threads; each returns an
/// [`IoFuture`]. A request is acknowledged (its future completes `Ok`)
/// once the data is in the filesystem; [`VirtualDisk::flush`] makes every
/// acknowledged write durable.
#[derive(Clone)]
pub struct VirtualDisk {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for VirtualDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualDisk")
            .field("path", &self.inner.path)
            .field("lock", &self.inner.lock)
            .field("capacity", &self.inner.capacity)
            .finish()
    }
}

/// Open the chain of `path` for `lock` through the filesystem.
pub(super) fn open_chain(fs: &Fs, path: &str, lock: DiskLock) -> DiskResult<DiskChain> {
    let (write, writable) = match lock {
        DiskLock::Exclusive => (WriteLock::Exclusive, true),
        DiskLock::SharedRead => (WriteLock::Exclusive, false),
        DiskLock::MultiWriter => (WriteLock::MultiWriter, true),
    };
    let store: Arc<dyn ExtentStore> = Arc::new(FsStore::new(fs.clone(), write, ReadLock::Shared));
    let mut chain = DiskChain::open(store, path, writable).map_err(|e| DiskError::vmdk(path, e))?;
    if lock == DiskLock::MultiWriter {
        let top = chain.top();
        let flat = top
            .extents
            .iter()
            .all(|e| matches!(e.data, ExtentData::Flat { .. }));
        if chain.layers().len() != 1 || !flat {
            return Err(DiskError::Unsupported {
                path: path.to_string(),
                what: "multi-writer needs a flat disk without snapshots".into(),
            });
        }
        chain.keep_content_id();
    }
    Ok(chain)
}

/// Inodes of the files holding the top disk's extents.
pub(super) fn top_extent_inodes(fs: &Fs, chain: &DiskChain) -> DiskResult<Vec<u64>> {
    let store = FsStore::new(fs.clone(), WriteLock::Exclusive, ReadLock::Follow);
    let top = chain.top();
    let mut out = Vec::new();
    for line in &top.descriptor.extents {
        if let Some(f) = &line.file {
            let name = resolve(&top.name, f);
            let ino = store.lookup(&name).map_err(|e| DiskError::Invalid {
                path: top.name.clone(),
                what: format!("extent {name}: {e}"),
            })?;
            if !out.contains(&ino) {
                out.push(ino);
            }
        }
    }
    Ok(out)
}

impl VirtualDisk {
    /// Open the disk whose descriptor is `path` (inside the volume).
    /// EXCLUSIVE and MULTI_WRITER fail with a busy error (see
    /// [`DiskError::is_busy`]) when another host holds it incompatibly.
    pub fn open(fs: &Fs, path: &str, opts: &DiskOptions) -> DiskResult<VirtualDisk> {
        let chain = open_chain(fs, path, opts.lock)?;
        Self::from_chain(fs, path, opts, chain)
    }

    pub(super) fn from_chain(
        fs: &Fs,
        path: &str,
        opts: &DiskOptions,
        chain: DiskChain,
    ) -> DiskResult<VirtualDisk> {
        let top_inos = top_extent_inodes(fs, &chain)?;
        Ok(VirtualDisk {
            inner: Arc::new(Inner {
                fs: fs.clone(),
                path: path.to_string(),
                lock: opts.lock,
                capacity: chain.capacity(),
                chain: RwLock::new(Some(chain)),
                phase: Mutex::new(Phase::Running),
                top_inos,
                pool: Pool::new("vmfs-disk", opts.workers),
            }),
        })
    }

    /// Descriptor path inside the volume.
    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// Size in bytes.
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
    }

    pub fn lock(&self) -> DiskLock {
        self.inner.lock
    }

    pub fn read_only(&self) -> bool {
        self.inner.lock == DiskLock::SharedRead
    }

    /// This host's identity in lock records (what a hand-off's source
    /// needs from its destination).
    pub fn holder(&self) -> Holder {
        self.inner.fs.host().holder()
    }

    /// Read `len` bytes at `offset`.
    pub fn read(&self, offset: u64, len: usize) -> IoFuture<DiskResult<Vec<u8>>> {
        self.run(move |path, chain| {
            let mut buf = vec![0u8; len];
            chain
                .read_at(offset, &mut buf)
                .map_err(|e| DiskError::vmdk(path, e))?;
            Ok(buf)
        })
    }

    /// Write `data` at `offset` (thin disks allocate on first write).
    pub fn write(&self, offset: u64, data: Vec<u8>) -> IoFuture<DiskResult<()>> {
        self.run_mut(move |path, chain| {
            chain
                .write_at(offset, &data)
                .map_err(|e| DiskError::vmdk(path, e))
        })
    }

    /// Make every acknowledged write durable.
    pub fn flush(&self) -> IoFuture<DiskResult<()>> {
        self.run(|path, chain| chain.flush().map_err(|e| DiskError::vmdk(path, e)))
    }

    /// The guest no longer needs the range (thin disks give the space back).
    pub fn discard(&self, offset: u64, len: u64) -> IoFuture<DiskResult<()>> {
        self.run_mut(move |path, chain| {
            chain
                .discard(offset, len)
                .map_err(|e| DiskError::vmdk(path, e))
        })
    }

    /// Make the range read as zeros.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> IoFuture<DiskResult<()>> {
        self.run_mut(move |path, chain| {
            chain
                .write_zeroes(offset, len)
                .map_err(|e| DiskError::vmdk(path, e))
        })
    }

    /// Flush and close: the disk's locks are released. Requests still
    /// queued complete first.
    pub fn close(self) -> DiskResult<()> {
        let r = self.flush().wait();
        let inner = &self.inner;
        inner.pool.shutdown();
        let chain = inner
            .chain
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(chain);
        match r {
            Err(DiskError::HandedOff { .. })
            | Err(DiskError::Closed { .. })
            | Err(DiskError::Aborted { .. }) => Ok(()),
            other => other,
        }
    }

    fn check_phase(inner: &Inner) -> DiskResult<()> {
        match *inner.phase.lock().unwrap_or_else(|e| e.into_inner()) {
            Phase::Running => Ok(()),
            Phase::Offered(_) => Err(DiskError::HandoffPending {
                path: inner.path.clone(),
            }),
            Phase::HandedOff => Err(DiskError::HandedOff {
                path: inner.path.clone(),
            }),
        }
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&str, &DiskChain) -> DiskResult<T> + Send + 'static,
    ) -> IoFuture<DiskResult<T>> {
        let inner = self.inner.clone();
        let path = self.inner.path.clone();
        self.inner.pool.submit(
            move || {
                let g = inner.chain.read().unwrap_or_else(|e| e.into_inner());
                Self::check_phase(&inner)?;
                match g.as_ref() {
                    Some(c) => f(&inner.path, c),
                    None => Err(DiskError::Closed {
                        path: inner.path.clone(),
                    }),
                }
            },
            move || Err(DiskError::Aborted { path: path.clone() }),
        )
    }

    fn run_mut<T: Send + 'static>(
        &self,
        f: impl FnOnce(&str, &mut DiskChain) -> DiskResult<T> + Send + 'static,
    ) -> IoFuture<DiskResult<T>> {
        let inner = self.inner.clone();
        let path = self.inner.path.clone();
        self.inner.pool.submit(
            move || {
                let mut g = inner.chain.write().unwrap_or_else(|e| e.into_inner());
                Self::check_phase(&inner)?;
                match g.as_mut() {
                    Some(c) => f(&inner.path, c),
                    None => Err(DiskError::Closed {
                        path: inner.path.clone(),
                    }),
                }
            },
            move || Err(DiskError::Aborted { path: path.clone() }),
        )
    }
}

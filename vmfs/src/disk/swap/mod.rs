//! VM swap files (`NAME/NAME-<id>.vswp`): fully allocated when created (a
//! swapping guest must never meet ENOSPC), held EXCLUSIVE by the host
//! running the VM, deleted at power-off — and reclaimed automatically when
//! that host dies (VMware leaves them behind; we must not).
//!
//! How a survivor knows a file is a dead host's swap file: the **swap
//! registry**, directory `/.vmfs-swap` on the volume. Before a host creates
//! (or takes over) a swap file it adds a symlink
//! `/.vmfs-swap/<slot>.<hb_gen>.<id>` → `/NAME/NAME-<id>.vswp` naming its
//! own incarnation; it removes the link when the VM powers off. Any host
//! whose registry scan ([`reclaim`]) finds a link whose incarnation is over
//! (the slot's `hb_gen` moved on and it is not RECOVERING — the dead host
//! was recovered, its journal replayed, its locks now breakable) deletes
//! the target (the unlink takes the file's inode lock, breaking the dead
//! holder's) and then the link. Every step is one journaled filesystem
//! operation and each is idempotent, so a crash anywhere leaves a state the
//! next scan finishes: link without file → link removed; file without
//! link (crash of the creator between the two) cannot happen, the link is
//! made first. Layout and crash argument: `docs/vmdk.md` "Swap files".

mod reclaim;
mod registry;

use crate::fs::{Falloc, Fs, FsError};

use super::error::{DiskError, DiskResult};
use super::store::components;

pub use reclaim::{reclaim, Reclaimed, Reclaimer};
pub use registry::{entries, parse_name, RegistryEntry, RECLAIM_LOG, REGISTRY_DIR};

use registry::unregister as registry_unregister;

/// A swap file open on this host (its inode held EXCLUSIVE).
#[derive(Debug)]
pub struct SwapFile {
    fs: Fs,
    path: String,
    entry: String,
    ino: u64,
    fh: Option<u64>,
    size: u64,
}

fn fs_err<'a>(path: &'a str, op: &'static str) -> impl FnOnce(FsError) -> DiskError + 'a {
    move |e| DiskError::fs(path, op, e)
}

/// Check a VM name: one directory name, no '/'.
fn check_vm_name(vm: &str) -> DiskResult<()> {
    let bad = vm.is_empty()
        || vm.len() > 200
        || vm.contains('/')
        || vm.contains('\0')
        || vm == "."
        || vm == ".."
        || vm.starts_with(".vmfs");
    if bad {
        return Err(DiskError::Invalid {
            path: vm.to_string(),
            what: "a VM name must be one directory name (no '/', not empty, at most 200 bytes)"
                .into(),
        });
    }
    Ok(())
}

/// Make directory `name` under the root if missing; its inode.
fn ensure_dir(fs: &Fs, name: &str) -> DiskResult<u64> {
    match fs.mkdir(fs.root(), name.as_bytes(), 0o755, 0, 0) {
        Ok(a) => Ok(a.ino),
        Err(FsError::Exists(_)) => fs
            .lookup(fs.root(), name.as_bytes())
            .map(|a| a.ino)
            .map_err(fs_err(name, "looking up the directory")),
        Err(e) => Err(DiskError::fs(name, "creating the directory", e)),
    }
}

/// Inode of a path inside the volume.
pub(crate) fn lookup_path(fs: &Fs, path: &str) -> Result<u64, FsError> {
    let parts = components(path).map_err(|e| FsError::Invalid(e.to_string()))?;
    let mut ino = fs.root();
    for p in parts {
        ino = fs.lookup(ino, p.as_bytes())?.ino;
    }
    Ok(ino)
}

/// (parent inode, leaf name) of a path inside the volume.
pub(crate) fn parent_of<'a>(fs: &Fs, path: &'a str) -> Result<(u64, &'a str), FsError> {
    let parts = components(path).map_err(|e| FsError::Invalid(e.to_string()))?;
    let (leaf, dirs) = parts.split_last().expect("non-empty");
    let mut ino = fs.root();
    for d in dirs {
        ino = fs.lookup(ino, d.as_bytes())?.ino;
    }
    Ok((ino, leaf))
}

impl SwapFile {
    /// Create `VM/VM-<id>.vswp` of `size` bytes (rounded up to 4 KiB),
    /// every block reserved, held EXCLUSIVE by this host until
    /// [`SwapFile::delete`] / [`SwapFile::release`] (or reclaimed if the
    /// host dies).
    pub fn create(fs: &Fs, vm: &str, size: u64) -> DiskResult<SwapFile> {
        check_vm_name(vm)?;
        if size == 0 {
            return Err(DiskError::Invalid {
                path: vm.to_string(),
                what: "swap size is 0 (memory equals the reservation): no swap file needed".into(),
            });
        }
        let size = size.div_ceil(4096) * 4096;
        let id = format!("{:08x}", rand::random::<u32>());
        let path = format!("/{vm}/{vm}-{id}.vswp");
        let dir = ensure_dir(fs, vm)?;
        // Registered first: a crash from here on leaves a link the
        // registry scan resolves.
        let entry = registry::register(fs, &id, &path)?;
        let made = (|| {
            let leaf = format!("{vm}-{id}.vswp");
            let attr = fs
                .create(dir, leaf.as_bytes(), 0o600, 0, 0)
                .map_err(fs_err(&path, "creating the swap file"))?;
            let fh = fs
                .open(attr.ino, true)
                .map_err(fs_err(&path, "opening the swap file"))?;
            let filled = fs
                .fallocate(fh, 0, size, Falloc::AllocateLazy { keep_size: false })
                .and_then(|_| fs.fsync(fh))
                .map_err(fs_err(&path, "reserving the swap file's space"));
            if let Err(e) = filled {
                let _ = fs.close(fh);
                let _ = fs.unlink(dir, leaf.as_bytes());
                return Err(e);
            }
            Ok((attr.ino, fh))
        })();
        match made {
            Ok((ino, fh)) => Ok(SwapFile {
                fs: fs.clone(),
                path,
                entry,
                ino,
                fh: Some(fh),
                size,
            }),
            Err(e) => {
                let _ = registry::unregister(fs, &entry);
                Err(e)
            }
        }
    }

    /// Take over an existing swap file (made by `vmfs swap create` without
    /// `--hold`): open it EXCLUSIVE and register it under this host.
    pub fn open(fs: &Fs, path: &str) -> DiskResult<SwapFile> {
        let leaf = path.rsplit('/').next().unwrap_or(path);
        let id = leaf
            .strip_suffix(".vswp")
            .and_then(|s| s.rsplit('-').next())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| DiskError::Invalid {
                path: path.to_string(),
                what: "not a swap file name (NAME-<id>.vswp)".into(),
            })?;
        let ino = lookup_path(fs, path).map_err(fs_err(path, "looking up the swap file"))?;
        let entry = registry::register(fs, id, &format!("/{}", path.trim_start_matches('/')))?;
        let opened = fs
            .open(ino, true)
            .and_then(|fh| Ok((fh, fs.getattr(ino)?.size)));
        match opened {
            Ok((fh, size)) => Ok(SwapFile {
                fs: fs.clone(),
                path: path.to_string(),
                entry,
                ino,
                fh: Some(fh),
                size,
            }),
            Err(e) => {
                let _ = registry::unregister(fs, &entry);
                Err(DiskError::fs(path, "opening the swap file", e))
            }
        }
    }

    /// Path inside the volume.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// The registry link naming this host as the holder.
    pub fn registry_entry(&self) -> &str {
        &self.entry
    }

    fn fh(&self) -> DiskResult<u64> {
        self.fh.ok_or_else(|| DiskError::Closed {
            path: self.path.clone(),
        })
    }

    /// Read guest pages back (`buf.len()` bytes at `off`).
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> DiskResult<()> {
        let got = self
            .fs
            .read(self.fh()?, off, buf.len())
            .map_err(fs_err(&self.path, "reading the swap file"))?;
        if got.len() != buf.len() {
            return Err(DiskError::Invalid {
                path: self.path.clone(),
                what: format!("read of {} bytes at {off} past the end", buf.len()),
            });
        }
        buf.copy_from_slice(&got);
        Ok(())
    }

    /// Write guest pages out (inside the file: it never grows).
    pub fn write_at(&self, off: u64, data: &[u8]) -> DiskResult<()> {
        if off
            .checked_add(data.len() as u64)
            .is_none_or(|e| e > self.size)
        {
            return Err(DiskError::Invalid {
                path: self.path.clone(),
                what: format!("write of {} bytes at {off} past the end", data.len()),
            });
        }
        self.fs
            .write(self.fh()?, off, data)
            .map_err(fs_err(&self.path, "writing the swap file"))?;
        Ok(())
    }

    /// Power-off: close, delete the file (its space returns), unregister.
    pub fn delete(mut self) -> DiskResult<()> {
        if let Some(fh) = self.fh.take() {
            self.fs
                .close(fh)
                .map_err(fs_err(&self.path, "closing the swap file"))?;
        }
        let (dir, leaf) =
            parent_of(&self.fs, &self.path).map_err(fs_err(&self.path, "looking up"))?;
        match self.fs.unlink(dir, leaf.as_bytes()) {
            Ok(()) | Err(FsError::NotFound(_)) => {}
            Err(e) => return Err(DiskError::fs(&self.path, "deleting the swap file", e)),
        }
        registry::unregister(&self.fs, &self.entry)
    }

    /// Keep the file but stop holding it: unregister, close. It is then an
    /// ordinary file until a VMM takes it over ([`SwapFile::open`]) or
    /// `vmfs swap delete` removes it.
    pub fn release(mut self) -> DiskResult<()> {
        registry::unregister(&self.fs, &self.entry)?;
        if let Some(fh) = self.fh.take() {
            self.fs
                .close(fh)
                .map_err(fs_err(&self.path, "closing the swap file"))?;
        }
        Ok(())
    }
}

impl Drop for SwapFile {
    /// Dropped without delete/release (the VM died with its process still
    /// running): the file is closed and stays registered, to be reclaimed
    /// once this host's incarnation is over.
    fn drop(&mut self) {
        if let Some(fh) = self.fh.take() {
            let _ = self.fs.close(fh);
        }
    }
}

/// `vmfs swap delete`: remove the swap file at `path` (refused while a host
/// holds it: power the VM off there first) and every registry link to it.
pub fn delete_swap(fs: &Fs, path: &str) -> DiskResult<()> {
    if !path.ends_with(".vswp") {
        return Err(DiskError::Invalid {
            path: path.to_string(),
            what: "not a swap file (name must end in .vswp)".into(),
        });
    }
    let (dir, leaf) = parent_of(fs, path).map_err(fs_err(path, "looking up"))?;
    fs.unlink(dir, leaf.as_bytes())
        .map_err(fs_err(path, "deleting the swap file"))?;
    let abs = format!("/{}", path.trim_start_matches('/'));
    for e in registry::entries(fs)? {
        if e.target == abs {
            registry::unregister(fs, &e.name)?;
        }
    }
    Ok(())
}

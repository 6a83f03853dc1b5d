//! The filesystem: POSIX operations over a joined [`Host`]. Design in
//! `docs/filesystem.md`; byte layouts in `docs/format.md`.
//!
//! Every metadata change is one journaled transaction ([`Host::run_txn`])
//! whose block images carry the generation of the lock that protects them:
//! an inode's lock (its body, pointer blocks, directory structures), a
//! cluster's lock (its bitmap). One host runs one metadata operation at a
//! time (a per-`Fs` mutex); reads and overwrites of allocated blocks do
//! their device I/O outside it under the open file's data guard
//! ([`DataGuard`], `io.rs`); hosts coordinate through the on-disk locks.

mod alloc;
mod bmap;
mod change;
mod change_wait;
pub mod check;
mod data;
pub mod dir;
mod discard;
mod error;
mod handles;
mod inode;
mod io;
mod lockmode;
mod namespace;
pub mod offline;
mod orphan;
mod promote;
mod readahead;
mod thick;
mod xattr;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_conc;
#[cfg(test)]
mod tests_multi;
#[cfg(test)]
mod tests_small;
#[cfg(test)]
mod tests_torn;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use crate::cluster::{HeldLock, Host};
use crate::format::LockMode;

pub use alloc::Allocator;
pub use bmap::{data_kind, is_small_file, small_limit_blocks, FileMap};
pub use change::Change;
pub use dir::DirEntry;
pub use error::{FsError, FsResult};
pub use handles::ReadVia;
pub use inode::{Attr, Ctx};
pub use lockmode::MultiWriterFile;
pub use xattr::XattrSet;

use inode::is_dir;

/// Largest name in a directory.
pub const NAME_MAX: usize = 255;
/// Longest symlink target.
pub const SYMLINK_MAX: usize = 4095;
/// Clusters unused this long (at most D/2) are released to other hosts.
const CLUSTER_IDLE: Duration = Duration::from_secs(2);
/// Data blocks freed per transaction when truncating or deleting.
const FREE_BATCH: usize = 64;
/// Housekeeping ticks (250 ms) between looks at the orphan table.
const ORPHAN_TICKS: u64 = 8;
/// Data blocks written per transaction.
const WRITE_BATCH: u64 = 32;

/// How a host holds an open file's inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenMode {
    /// Open for write here: EXCLUSIVE, everything cached.
    Exclusive,
    /// Open read-only here: SHARED_READ, nobody can change it.
    Shared,
    /// Open read-only while another host has it open for write: no lock;
    /// the block map is re-read for every read.
    Unlocked,
}

/// Counts of an open file.
#[derive(Debug, Clone, Copy, Default)]
struct OpenMeta {
    writers: u32,
    readers: u32,
    /// Unlinked while open: reclaimed at the last close.
    unlinked: bool,
    /// Where its reads go (prefetch for sequential readers).
    stream: readahead::ReadStream,
}

impl OpenMeta {
    /// The counts of a file's first open here.
    fn first(write: bool) -> OpenMeta {
        OpenMeta {
            writers: u32::from(write),
            readers: u32::from(!write),
            ..OpenMeta::default()
        }
    }
}

/// An open file's data guard. Device I/O done outside the `Fs` mutex
/// (reads, overwrites of allocated blocks) holds it shared from before the
/// mutex is dropped until the I/O is done; whatever frees, re-points or
/// re-zeroes the file's blocks, or lets its lock go (truncate, punch,
/// fallocate, materialize, the last close, a writer's close, a transfer),
/// holds it exclusive, so no I/O in flight can touch a block that has been
/// given to another file. Lock order: the mutex first; the guard is only
/// ever taken with the mutex held, and nobody takes the mutex while holding
/// the guard (a shared holder drops it before coming back for the mutex).
type DataGuard = Arc<RwLock<()>>;

fn shared(g: &RwLock<()>) -> RwLockReadGuard<'_, ()> {
    g.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive(g: &RwLock<()>) -> RwLockWriteGuard<'_, ()> {
    g.write().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
struct Open {
    map: FileMap,
    mode: OpenMode,
    meta: OpenMeta,
    data: DataGuard,
}

#[derive(Debug)]
struct State {
    alloc: Allocator,
    open: HashMap<u64, Open>,
    /// fh -> (ino, writable)
    handles: HashMap<u64, (u64, bool)>,
    next_fh: u64,
}

impl State {
    /// A new handle on the open file `ino`.
    fn new_handle(&mut self, ino: u64, write: bool) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, (ino, write));
        fh
    }
}

#[derive(Debug)]
struct Inner {
    ctx: Ctx,
    st: Mutex<State>,
    stop: AtomicBool,
    /// Longest wait for a directory or closed-file lock another host holds.
    lock_wait: Duration,
    /// Bytes of block images one transaction may carry.
    txn_limit: usize,
}

/// What to do with a lock taken for one operation when it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// Borrowed from an open file: put back.
    Open,
    /// Taken for this operation: release.
    Took,
    /// Upgraded from SHARED_READ: downgrade back.
    Upgraded,
}

/// An inode locked EXCLUSIVE for one operation.
#[derive(Debug)]
struct Locked {
    map: FileMap,
    how: How,
    /// The open-file counts when borrowed from an open file.
    open: Option<OpenMeta>,
    /// The open file's data guard when borrowed from an open file.
    data: Option<DataGuard>,
}

/// A mounted filesystem. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Fs {
    inner: Arc<Inner>,
}

/// Attributes to change (None: leave as is).
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime_ns: Option<i64>,
    pub mtime_ns: Option<i64>,
}

/// fallocate modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Falloc {
    /// Allocate and zero on the device now (eager-zeroed thick).
    Allocate { keep_size: bool },
    /// Allocate with the to-be-zeroed bit (lazy-zeroed thick): no I/O now.
    AllocateLazy { keep_size: bool },
    /// Free the blocks in the range (it reads as zeros); size unchanged.
    PunchHole,
}

/// One readdir item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirItem {
    pub name: Vec<u8>,
    pub ino: u64,
    /// `(st_mode & S_IFMT) >> 12`
    pub dtype: u8,
    /// Offset to pass to continue after this item.
    pub next: u64,
}

/// statfs figures (from the cluster bitmaps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFs {
    pub block_size: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    pub inodes: u64,
    pub inodes_free: u64,
    pub name_max: u64,
}

fn lock_st(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Check a name for a directory entry.
pub fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong(name.len()));
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(FsError::Invalid(format!(
            "name {:?} is empty or holds '/' or NUL",
            String::from_utf8_lossy(name)
        )));
    }
    if name == b"." || name == b".." {
        return Err(FsError::Exists(String::from_utf8_lossy(name).into_owned()));
    }
    Ok(())
}

impl Fs {
    /// Mount over a joined host (whose heartbeat the caller runs:
    /// [`Host::start`]). Starts a housekeeping thread that releases idle
    /// clusters.
    pub fn mount(host: Host) -> FsResult<Fs> {
        let ctx = Ctx::new(host.clone());
        ctx.read_inode(crate::volume::ROOT_INO)?;
        let t = host.timeouts();
        let journal = ctx.vol.header.journal_size as usize;
        let inner = Arc::new(Inner {
            st: Mutex::new(State {
                alloc: Allocator::new(host),
                open: HashMap::new(),
                handles: HashMap::new(),
                next_fh: 1,
            }),
            ctx,
            stop: AtomicBool::new(false),
            lock_wait: t.dead_after + t.io_timeout,
            txn_limit: journal / 4,
        });
        // Another host freeing into a cluster we hold waits up to D + T for
        // it: let idle clusters go well within that.
        let idle = CLUSTER_IDLE.min(t.dead_after / 2);
        // Orphans left by an earlier incarnation of this slot or by hosts
        // that crashed: finish their frees now.
        {
            let mut st = lock_st(&inner.st);
            if let Err(e) = inner.finish_orphans(&mut st) {
                tracing::warn!("finishing orphans at mount: {e}");
            }
        }
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        std::thread::spawn(move || {
            let mut tick = 0u64;
            loop {
                std::thread::sleep(Duration::from_millis(250));
                let Some(inner) = weak.upgrade() else { return };
                if inner.stop.load(Ordering::SeqCst) {
                    return;
                }
                let mut st = lock_st(&inner.st);
                if let Err(e) = st.alloc.release_idle(idle) {
                    tracing::warn!("releasing idle clusters: {e}");
                }
                tick += 1;
                // A crashed host's orphans become ours to finish once its
                // locks can be broken (after D): look every ORPHAN_TICKS.
                if tick % ORPHAN_TICKS == 0 {
                    if let Err(e) = inner.finish_orphans(&mut st) {
                        tracing::debug!("finishing orphans: {e}");
                    }
                }
            }
        });
        Ok(Fs { inner })
    }

    /// The host this filesystem runs on.
    pub fn host(&self) -> &Host {
        &self.inner.ctx.host
    }

    /// Root directory inode.
    pub fn root(&self) -> u64 {
        self.inner.ctx.vol.header.root_ino
    }

    /// Close every handle and release every lock this filesystem holds
    /// (before [`Host::leave`]).
    pub fn unmount(&self) -> FsResult<()> {
        self.inner.stop.store(true, Ordering::SeqCst);
        let fhs: Vec<u64> = lock_st(&self.inner.st).handles.keys().copied().collect();
        let mut first = None;
        for fh in fhs {
            if let Err(e) = self.close(fh) {
                first.get_or_insert(e);
            }
        }
        if let Err(e) = lock_st(&self.inner.st).alloc.release_all() {
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }

    /// Release clusters held for allocation (also done when idle).
    pub fn release_clusters(&self) -> FsResult<()> {
        lock_st(&self.inner.st).alloc.release_all()
    }

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let st = lock_st(&self.inner.st);
        self.inner.getattr(&st, ino)
    }

    /// Attributes of the inode a listed entry names ([`DirItem`]), or
    /// `None` when it is gone or no longer that entry's inode: another host
    /// removed the name since the listing, and maybe reused the number for
    /// a file of another type ([`Attr::matches_entry`]).
    pub fn entry_attr(&self, item: &DirItem) -> FsResult<Option<Attr>> {
        match self.getattr(item.ino) {
            Ok(a) => Ok(Some(a).filter(|a| a.matches_entry(item.dtype))),
            Err(FsError::NotFound(_) | FsError::Stale(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Change attributes (a size change truncates or extends).
    pub fn setattr(&self, ino: u64, sa: &SetAttr) -> FsResult<Attr> {
        let mut st = self.inner.lock_for_change(&[ino])?;
        let inner = &*self.inner;
        let mut l = inner.lock_inode(&mut st, ino)?;
        // A size change frees or zeroes blocks reads in flight may be on.
        let data = l.data.clone().filter(|_| sa.size.is_some());
        let drained = data.as_deref().map(exclusive);
        let r = inner.setattr_locked(&mut st, &mut l.map, sa);
        drop(drained);
        let attr = Attr::of(&l.map.inode, &inner.ctx.vol);
        inner.release(&mut st, l)?;
        r.map(|_| attr)
    }

    /// Space and inode figures from the cluster bitmaps.
    pub fn statfs(&self) -> FsResult<StatFs> {
        let sp = self.inner.ctx.vol.space()?;
        Ok(StatFs {
            block_size: u64::from(sp.file_blocks.resource_size),
            blocks: sp.file_blocks.total,
            blocks_free: sp.file_blocks.free,
            inodes: sp.inodes.total,
            inodes_free: sp.inodes.free,
            name_max: NAME_MAX as u64,
        })
    }
}

impl Inner {
    fn getattr(&self, st: &State, ino: u64) -> FsResult<Attr> {
        if let Some(o) = st.open.get(&ino) {
            if o.mode != OpenMode::Unlocked {
                return Ok(Attr::of(&o.map.inode, &self.ctx.vol));
            }
        }
        Ok(Attr::of(&self.ctx.read_inode(ino)?, &self.ctx.vol))
    }

    fn new_map(&self, ino: u64, lock: Option<HeldLock>) -> FsResult<FileMap> {
        let mut m = FileMap::new(&self.ctx, self.ctx.read_inode(ino)?, lock);
        m.txn_limit = self.txn_limit;
        Ok(m)
    }

    /// Lock `ino` EXCLUSIVE for one operation (waiting for another host
    /// that holds it briefly; EBUSY if it stays held, e.g. open for write).
    fn lock_inode(&self, st: &mut State, ino: u64) -> FsResult<Locked> {
        self.ctx.check_ino(ino)?;
        let addr = self.ctx.lock_addr(ino);
        if let Some(mut o) = st.open.remove(&ino) {
            match o.mode {
                OpenMode::Exclusive => {
                    return Ok(Locked {
                        map: o.map,
                        how: How::Open,
                        open: Some(o.meta),
                        data: Some(o.data),
                    })
                }
                OpenMode::Shared => match self.ctx.host.try_lock(addr, ino, LockMode::Exclusive)? {
                    Some(l) => {
                        o.map.lock = Some(l);
                        return Ok(Locked {
                            map: o.map,
                            how: How::Upgraded,
                            open: Some(o.meta),
                            data: Some(o.data),
                        });
                    }
                    None => {
                        st.open.insert(ino, o);
                        return Err(FsError::Busy {
                            ino,
                            why: "open read-only on another host too".into(),
                        });
                    }
                },
                OpenMode::Unlocked => {
                    st.open.insert(ino, o);
                    return Err(FsError::Busy {
                        ino,
                        why: "open for write on another host".into(),
                    });
                }
            }
        }
        // While we wait, the holder may be waiting for a resource cluster
        // we keep: let it have those it asks for.
        let alloc = &mut st.alloc;
        let mut yield_clusters = || {
            if let Err(e) = alloc.yield_wanted() {
                tracing::debug!("letting go of wanted clusters: {e}");
            }
        };
        let l = match self.ctx.host.lock_with(
            addr,
            ino,
            LockMode::Exclusive,
            self.lock_wait,
            &mut yield_clusters,
        ) {
            Ok(l) => l,
            Err(crate::cluster::ClusterError::Busy { holders, .. }) => {
                return Err(FsError::Busy {
                    ino,
                    why: format!("locked by {holders:?}"),
                })
            }
            Err(e) => return Err(e.into()),
        };
        match self.new_map(ino, Some(l)) {
            Ok(map) => Ok(Locked {
                map,
                how: How::Took,
                open: None,
                data: None,
            }),
            Err(e) => {
                let _ = self.ctx.host.unlock(addr);
                Err(e)
            }
        }
    }

    /// Lock a directory for one operation.
    fn lock_dir(&self, st: &mut State, ino: u64) -> FsResult<Locked> {
        let l = self.lock_inode(st, ino)?;
        if !is_dir(l.map.inode.mode) {
            self.release(st, l)?;
            return Err(FsError::NotDir(ino));
        }
        // Removed (by another host, or by us through another name the
        // caller raced): nothing may be added to it — an entry there would
        // name an inode no reachable directory names.
        if l.map.inode.nlink == 0 {
            self.release(st, l)?;
            return Err(FsError::NotFound(format!(
                "directory inode {ino} was removed"
            )));
        }
        Ok(l)
    }

    /// Undo [`Inner::lock_inode`].
    fn release(&self, st: &mut State, l: Locked) -> FsResult<()> {
        let ino = l.map.ino();
        let addr = self.ctx.lock_addr(ino);
        let meta = l.open.unwrap_or_default();
        let data = l.data.unwrap_or_default();
        match l.how {
            How::Took => self.ctx.host.unlock(addr)?,
            How::Open => {
                st.open.insert(
                    ino,
                    Open {
                        map: l.map,
                        mode: OpenMode::Exclusive,
                        meta,
                        data,
                    },
                );
            }
            How::Upgraded => {
                let mut map = l.map;
                map.lock = None;
                let r = self.ctx.host.try_lock(addr, ino, LockMode::SharedRead);
                st.open.insert(
                    ino,
                    Open {
                        map,
                        mode: OpenMode::Shared,
                        meta,
                        data,
                    },
                );
                r?;
            }
        }
        Ok(())
    }

    /// Commit `ch` with the changes of `maps`. On failure every cache that
    /// may be ahead of the disk is dropped.
    fn commit(&self, st: &mut State, mut ch: Change, maps: &mut [&mut FileMap]) -> FsResult<()> {
        let r = (|| {
            for m in maps.iter_mut() {
                m.stage(&mut ch)?;
            }
            st.alloc.seal(&mut ch);
            ch.run(&self.ctx.host)
        })();
        if r.is_ok() {
            st.alloc.committed(&mut ch);
        }
        if r.is_err() {
            st.alloc.invalidate(&ch);
            for m in maps.iter_mut() {
                let _ = m.reload(&self.ctx);
            }
        }
        r
    }
}

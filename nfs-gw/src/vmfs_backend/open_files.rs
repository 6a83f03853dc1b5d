//! The gateway's open files. NFSv3 is stateless, but a vmfs file is read
//! and written through an open handle that holds its inode lock. The first
//! WRITE opens the file for write (EXCLUSIVE: refused while another host
//! has it open for write), the first READ for read (SHARED_READ); the
//! handle is kept for later calls and closed once unused for the idle
//! period, so other hosts can open the file again soon after an NFS client
//! stops using it. A write handle is fsynced before it is closed.
//!
//! A handle in use by a call is never closed under it: each entry counts
//! its users, and the closer skips entries in use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use vmfs::fs::{Falloc, Fs};

use super::backend_error;
use crate::backend::BResult;

#[derive(Debug)]
struct Entry {
    ino: u64,
    fh: u64,
    write: bool,
    /// End of the blocks preallocated past end of file through this
    /// handle (0: none); trimmed when the handle is closed.
    prealloc_end: AtomicU64,
    users: AtomicUsize,
    last_used: Mutex<Instant>,
}

/// Open handles by inode number, plus handles replaced (a read handle
/// upgraded to write) waiting for their last user.
#[derive(Debug, Default)]
struct Table {
    by_ino: HashMap<u64, Arc<Entry>>,
    retired: Vec<Arc<Entry>>,
}

/// Handles opened for NFS clients; see the module docs.
#[derive(Debug)]
pub struct OpenFiles {
    fs: Fs,
    idle: Duration,
    /// File block size (preallocation is trimmed to whole blocks).
    block_size: u64,
    table: Mutex<Table>,
    stopped: AtomicBool,
}

/// One call's use of an open handle.
pub struct Use {
    entry: Arc<Entry>,
}

impl Use {
    pub fn fh(&self) -> u64 {
        self.entry.fh
    }

    /// End of what was preallocated through this handle.
    pub fn prealloc_end(&self) -> u64 {
        self.entry.prealloc_end.load(Ordering::SeqCst)
    }

    pub fn set_prealloc_end(&self, end: u64) {
        self.entry.prealloc_end.fetch_max(end, Ordering::SeqCst);
    }
}

impl Drop for Use {
    fn drop(&mut self) {
        *lock(&self.entry.last_used) = Instant::now();
        self.entry.users.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl OpenFiles {
    /// Starts the idle closer (a thread that ends with the last reference).
    pub fn start(fs: Fs, idle: Duration) -> Arc<OpenFiles> {
        let block_size = u64::from(
            fs.host()
                .volume()
                .header
                .region(vmfs::format::ResourceKind::FileBlock)
                .resource_size,
        );
        let me = Arc::new(OpenFiles {
            fs,
            idle,
            block_size,
            table: Mutex::new(Table::default()),
            stopped: AtomicBool::new(false),
        });
        let weak: Weak<OpenFiles> = Arc::downgrade(&me);
        let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
        std::thread::Builder::new()
            .name("nfs-gw idle close".into())
            .spawn(move || loop {
                std::thread::sleep(tick);
                let Some(me) = weak.upgrade() else { return };
                if me.stopped.load(Ordering::SeqCst) {
                    return;
                }
                me.close_idle(false);
            })
            .expect("spawn the idle-close thread");
        me
    }

    /// Stops the idle closer (handles stay until [`OpenFiles::close_all`]).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Handles open now.
    pub fn len(&self) -> usize {
        let t = lock(&self.table);
        t.by_ino.len() + t.retired.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A handle on `ino` fit for writing (`write`) or reading. A read uses
    /// a write handle when there is one. Opening for write fails with
    /// `LockedByOtherHost` when another host has the file open for write.
    pub fn get(&self, ino: u64, write: bool) -> BResult<Use> {
        let mut t = lock(&self.table);
        if let Some(e) = t.by_ino.get(&ino) {
            if e.write || !write {
                e.users.fetch_add(1, Ordering::SeqCst);
                return Ok(Use { entry: e.clone() });
            }
        }
        // Opened under the table lock: two calls must not both open.
        let fh = self.fs.open(ino, write).map_err(backend_error)?;
        let entry = Arc::new(Entry {
            ino,
            fh,
            write,
            prealloc_end: AtomicU64::new(0),
            users: AtomicUsize::new(1),
            last_used: Mutex::new(Instant::now()),
        });
        if let Some(old) = t.by_ino.insert(ino, entry.clone()) {
            t.retired.push(old);
        }
        Ok(Use { entry })
    }

    /// The write handle of `ino` if one is open (COMMIT).
    pub fn get_open_writer(&self, ino: u64) -> Option<Use> {
        let t = lock(&self.table);
        let e = t.by_ino.get(&ino).filter(|e| e.write)?;
        e.users.fetch_add(1, Ordering::SeqCst);
        Some(Use { entry: e.clone() })
    }

    /// Syncs and closes the handle of `ino` if it is not in use (before
    /// removing or renaming over it, so the unlinked inode is reclaimed
    /// now and the client's handle goes stale).
    pub fn forget(&self, ino: u64) {
        let mut t = lock(&self.table);
        let idle = t
            .by_ino
            .get(&ino)
            .is_some_and(|e| e.users.load(Ordering::SeqCst) == 0);
        if idle {
            if let Some(e) = t.by_ino.remove(&ino) {
                if let Err(err) = self.close_entry(&e) {
                    tracing::warn!(ino, error = %err, "closing a handle before removal");
                }
            }
        }
    }

    /// Frees blocks preallocated past the end of file.
    fn trim(&self, e: &Entry) -> Result<(), String> {
        let end = e.prealloc_end.load(Ordering::SeqCst);
        if end == 0 {
            return Ok(());
        }
        let size = self.fs.getattr(e.ino).map_err(|x| x.to_string())?.size;
        let from = size.div_ceil(self.block_size) * self.block_size;
        if end > from {
            self.fs
                .fallocate(e.fh, from, end - from, Falloc::PunchHole)
                .map_err(|x| format!("trimming preallocated blocks: {x}"))?;
        }
        Ok(())
    }

    fn close_entry(&self, e: &Entry) -> Result<(), String> {
        let mut errs = Vec::new();
        if let Err(x) = self.trim(e) {
            errs.push(x);
        }
        if e.write {
            if let Err(x) = self.fs.fsync(e.fh) {
                errs.push(format!("fsync: {x}"));
            }
        }
        if let Err(x) = self.fs.close(e.fh) {
            errs.push(format!("close: {x}"));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }

    /// Closes handles unused for the idle period (all unused ones with
    /// `everything`). Returns the errors met.
    fn close_idle(&self, everything: bool) -> Vec<String> {
        let now = Instant::now();
        let due = |e: &Arc<Entry>| {
            e.users.load(Ordering::SeqCst) == 0
                && (everything || now.duration_since(*lock(&e.last_used)) >= self.idle)
        };
        let mut t = lock(&self.table);
        let inos: Vec<u64> = t
            .by_ino
            .iter()
            .filter(|(_, e)| due(e))
            .map(|(i, _)| *i)
            .collect();
        let mut closing: Vec<Arc<Entry>> = inos.iter().filter_map(|i| t.by_ino.remove(i)).collect();
        // Retired handles close once unused, idle or not.
        let (done, keep): (Vec<_>, Vec<_>) = t
            .retired
            .drain(..)
            .partition(|e| e.users.load(Ordering::SeqCst) == 0);
        t.retired = keep;
        closing.extend(done);
        let mut errs = Vec::new();
        // Closed under the table lock so that a new open of the same inode
        // waits for the close (an Fs handle per inode at a time).
        for e in closing {
            if let Err(err) = self.close_entry(&e) {
                tracing::warn!(fh = e.fh, error = %err, "closing an idle NFS handle");
                errs.push(err);
            }
        }
        errs
    }

    /// Syncs and closes every handle, waiting (up to 30 s) for calls still
    /// using one.
    pub fn close_all(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut errs = Vec::new();
        loop {
            errs.extend(self.close_idle(true));
            if self.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                errs.push(format!("{} handles still in use", self.len()));
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }
}

//! The kernel's FUSE front end over [`Fs`]: `vmfs mount` serves a joined
//! volume at a mount point through `/dev/fuse` (the `fuser` crate, mounted
//! directly as root; no libfuse).
//!
//! Every request becomes one [`Fs`] call; [`FsError::errno`] gives the
//! reply. Session threads read the kernel's requests and answer those that
//! cannot wait (overwrites of allocated blocks, reads the image's page
//! cache serves — replied straight from its memory mapping when it can,
//! flush, forget); the rest run on a pool of workers
//! (`dispatch.rs`). `Fs` runs one metadata operation at a time per host
//! (its mutex), but reads and overwrites of allocated blocks do their
//! device I/O outside that mutex, so several READs of a readahead window
//! (async reads, a 4 MiB window) are served at once.
//!
//! Coherence between hosts: entries and attributes are cached by the kernel
//! for [`FuseOptions::ttl`]; an open drops the file's page cache (close-to-
//! open consistency, as NFS), and with `FUSE_AUTO_INVAL_DATA` a size or
//! mtime change seen after the TTL drops it too. Writes go straight through
//! (no write-back cache), so what one host wrote is on the device before
//! its `write(2)` returns; `fsync` makes it durable.
//!
//! Once the host is fenced or the mount is stopping, every request fails
//! with EIO.

mod attr;
mod counts;
mod dispatch;
mod file;
mod killpriv;
mod namespace;
mod nodes;
mod session;
mod workers;
mod xattr;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::Errno;

use crate::fs::{Fs, FsError};

pub use session::{detach, mount, MountError, Mounted, Unmounted};

use nodes::Nodes;

/// How a mount is served.
#[derive(Debug, Clone)]
pub struct FuseOptions {
    /// How long the kernel may cache names and attributes.
    pub ttl: Duration,
    /// Threads reading the kernel's requests (at least 1); each answers
    /// the requests that cannot wait itself and hands the rest over.
    pub session_threads: usize,
    /// Most worker threads for requests that may wait (at least 1).
    pub threads: usize,
    /// Source name shown in /proc/mounts.
    pub fsname: String,
    /// Let users other than root use the mount (permissions are checked
    /// by the kernel from the mode bits: `default_permissions`).
    pub allow_other: bool,
    /// How long an open that finds the file busy on another host retries
    /// before EBUSY. The kernel releases a closed file asynchronously, so
    /// a host that just closed it may hold its lock a little longer.
    pub open_busy_wait: Duration,
    /// Open regular files with `FOPEN_DIRECT_IO`: the kernel keeps no page
    /// cache for them and sends every read(2)/write(2) to us as it is
    /// (docs/fuse.md, direct I/O). Needs `FUSE_DIRECT_IO_ALLOW_MMAP` from
    /// the kernel (6.6+) so shared mmap keeps working; without it the
    /// mount stays cached.
    pub direct_io: bool,
}

impl Default for FuseOptions {
    fn default() -> FuseOptions {
        FuseOptions {
            ttl: Duration::from_secs(1),
            session_threads: 2,
            threads: 8,
            fsname: "vmfs".into(),
            allow_other: true,
            open_busy_wait: Duration::from_millis(300),
            direct_io: false,
        }
    }
}

/// Why requests are refused with EIO.
#[derive(Debug, Default)]
pub struct Gate {
    stopping: AtomicBool,
    fenced: AtomicBool,
}

impl Gate {
    /// Refuse every further request (clean shutdown under way).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// The host was fenced: refuse every further request.
    pub fn fence(&self) {
        self.fenced.store(true, Ordering::SeqCst);
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    fn open(&self) -> bool {
        !self.stopping.load(Ordering::SeqCst) && !self.fenced.load(Ordering::SeqCst)
    }
}

/// The FUSE filesystem: an [`Fs`] plus what the kernel protocol needs.
#[derive(Debug)]
pub struct VmfsFuse {
    fs: Fs,
    gate: Arc<Gate>,
    nodes: Nodes,
    ttl: Duration,
    open_busy_wait: Duration,
    /// FUSE_HANDLE_KILLPRIV_V2 was negotiated: we clear set-ID bits.
    kill_priv: AtomicBool,
    /// Direct I/O was asked for ([`FuseOptions::direct_io`]).
    want_direct_io: bool,
    /// ... and the kernel allows mmap of such files: opens say
    /// FOPEN_DIRECT_IO.
    direct_io: AtomicBool,
    /// File block size (st_blksize).
    block_size: u32,
    /// Told when the kernel ends the session (an outside `umount`).
    on_destroy: Mutex<Option<Sender<()>>>,
    /// How READs were answered (logged when the session ends).
    read_counts: counts::ReadCounts,
}

/// A request's result: the reply or the errno.
type Res<T> = Result<T, Errno>;

/// The errno for a filesystem error; EIO-class errors are logged.
pub fn errno_of(e: &FsError) -> i32 {
    let n = e.errno();
    if n == libc::EIO {
        tracing::warn!("fuse: {e}");
    } else {
        tracing::debug!("fuse: {e}");
    }
    n
}

fn fail(e: FsError) -> Errno {
    Errno::from_i32(errno_of(&e))
}

impl VmfsFuse {
    /// Serve `fs`. Its root must be inode 1 (FUSE's root node id).
    pub fn new(fs: Fs, opts: &FuseOptions) -> Result<VmfsFuse, FsError> {
        if fs.root() != fuser::INodeNo::ROOT.0 {
            return Err(FsError::Invalid(format!(
                "volume root is inode {}, FUSE needs it at {}",
                fs.root(),
                fuser::INodeNo::ROOT.0
            )));
        }
        let block_size = fs.statfs()?.block_size;
        Ok(VmfsFuse {
            fs,
            gate: Arc::new(Gate::default()),
            nodes: Nodes::default(),
            ttl: opts.ttl,
            open_busy_wait: opts.open_busy_wait,
            kill_priv: AtomicBool::new(false),
            want_direct_io: opts.direct_io,
            direct_io: AtomicBool::new(false),
            block_size: u32::try_from(block_size).unwrap_or(u32::MAX),
            on_destroy: Mutex::new(None),
            read_counts: counts::ReadCounts::default(),
        })
    }

    /// The switch that refuses requests (shared with whoever runs the mount).
    pub fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }

    /// Be told on `tx` when the kernel ends the session.
    pub fn notify_destroy(&self, tx: Sender<()>) {
        *self.on_destroy.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    /// The flags an open or create of a regular file replies with.
    fn open_flags(&self) -> fuser::FopenFlags {
        if self.direct_io.load(Ordering::Relaxed) {
            fuser::FopenFlags::FOPEN_DIRECT_IO
        } else {
            fuser::FopenFlags::empty()
        }
    }

    /// Do we clear set-ID bits on write and chown (KILLPRIV_V2)?
    fn kills_priv(&self) -> bool {
        self.kill_priv.load(Ordering::Relaxed)
    }

    /// EIO once fenced or stopping.
    fn gate_check(&self) -> Res<()> {
        if !self.gate.open() {
            return Err(Errno::EIO);
        }
        if self.fs.host().is_fenced() {
            self.gate.fence();
            return Err(Errno::EIO);
        }
        Ok(())
    }
}

//! The kernel's requests, each answered from one `do_*` call.
//!
//! Session threads read `/dev/fuse` (`FuseOptions::session_threads`, 2 by
//! default: one alone measured ~25 % fewer 4k QD1 writes on the 2-core
//! development machine, docs/benchmarks.md). Each answers itself only
//! what waits for nothing but the CPU and the local device —
//! never for another host's on-disk lock, nor for the `Fs` mutex, which an
//! operation waiting for such a lock may hold: an overwrite of allocated
//! blocks of a file open for write here, a read the image's page cache
//! fully serves, FLUSH (nothing to do), FORGET (memory only). Both fast
//! paths only *try* the `Fs` mutex. Everything else, and a fast-path
//! candidate that would wait, is handed with its reply to the worker pool
//! (`workers.rs`), so a lookup waiting seconds for a busy directory on
//! another host holds up no session thread, and neither reads nor other
//! requests wait behind it.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    BsdFileFlags, FileHandle, Filesystem, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};

use crate::fs::{Attr, SetAttr};

use super::attr::{file_attr, kind_of_dtype, time_or_now};
use super::killpriv::setattr_kills;
use super::workers::Workers;
use super::xattr::XattrReply;
use super::{Res, VmfsFuse};

fn reply_xattr(r: Res<XattrReply>, reply: ReplyXattr) {
    match r {
        Ok(XattrReply::Size(n)) => reply.size(n),
        Ok(XattrReply::Data(d)) => reply.data(&d),
        Err(e) => reply.error(e),
    }
}

fn who(req: &Request) -> (u32, u32) {
    (req.uid(), req.gid())
}

impl VmfsFuse {
    fn reply_entry(&self, r: Res<Attr>, reply: ReplyEntry) {
        match r {
            Ok(a) => reply.entry(
                &self.ttl,
                &file_attr(&a, self.block_size),
                Generation(a.generation),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn reply_empty(r: Res<()>, reply: ReplyEmpty) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

/// Largest read or write request asked of the kernel (it caps requests at
/// max_pages, 256 pages by default).
const MAX_IO: u32 = 1 << 20;

/// A READ done on a thread that may wait.
fn read_into_reply(f: &VmfsFuse, fh: u64, off: u64, size: u32, reply: ReplyData) {
    f.read_counts.count_handed();
    READ_BUF.with_borrow_mut(|buf| match f.do_read(fh, off, size, buf) {
        Ok(n) => reply.data(&buf[..n]),
        Err(e) => reply.error(e),
    });
}

thread_local! {
    /// The read buffer of a session thread.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What fuser serves: the filesystem plus the threads its slow requests
/// run on.
#[derive(Debug)]
pub struct Served {
    fuse: Arc<VmfsFuse>,
    workers: Workers,
}

impl Served {
    /// Serve `fuse` with at most `workers` threads for requests that may
    /// wait.
    pub fn new(fuse: VmfsFuse, workers: usize) -> Served {
        Served {
            fuse: Arc::new(fuse),
            workers: Workers::new(workers),
        }
    }

    /// Run `job` on a worker thread (it may wait for other hosts).
    fn slow(&self, job: impl FnOnce(&VmfsFuse) + Send + 'static) {
        let fuse = self.fuse.clone();
        self.workers.run(move || job(&fuse));
    }
}

impl Filesystem for Served {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Each is optional: a kernel without it serves the mount anyway.
        for cap in [
            InitFlags::FUSE_AUTO_INVAL_DATA,
            InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO,
        ] {
            if let Err(missing) = config.add_capabilities(cap) {
                tracing::info!("fuse: kernel lacks {missing:?}");
            }
        }
        // We clear set-ID bits ourselves (killpriv.rs), so the kernel stops
        // asking getxattr("security.capability") before every write.
        match config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2) {
            Ok(()) => self.fuse.kill_priv.store(true, Ordering::Relaxed),
            Err(missing) => tracing::info!("fuse: kernel lacks {missing:?}"),
        }
        // Direct I/O only with shared mmap still allowed (kernel 6.6+):
        // a mount that refused mmap would break programs that use it.
        if self.fuse.want_direct_io {
            match config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP) {
                Ok(()) => {
                    self.fuse.direct_io.store(true, Ordering::Relaxed);
                    tracing::info!("fuse: direct I/O on (files have no kernel page cache)");
                }
                Err(missing) => tracing::warn!(
                    "fuse: kernel lacks {missing:?}: direct I/O off, files are cached"
                ),
            }
        }
        // Reads and writes of up to 1 MiB per request (FUSE_MAX_PAGES is
        // asked for by fuser; the kernel caps max_pages at 256).
        if let Err(max) = config.set_max_readahead(MAX_IO) {
            let _ = config.set_max_readahead(max);
        }
        if let Err(max) = config.set_max_write(MAX_IO) {
            let _ = config.set_max_write(max);
        }
        Ok(())
    }

    fn destroy(&mut self) {
        // Requests still running finish first (their replies go nowhere).
        self.workers.shut_down();
        tracing::info!(
            "fuse: session ended ({} nodes still referenced by the kernel; {})",
            self.fuse.nodes.len(),
            self.fuse.read_counts
        );
        if let Some(tx) = self
            .fuse
            .on_destroy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_owned();
        self.slow(move |f| f.reply_entry(f.do_lookup(parent.0, &name), reply));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fuse.nodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.slow(move |f| match f.do_getattr(ino.0) {
            Ok(a) => reply.attr(&f.ttl, &file_attr(&a, f.block_size)),
            Err(e) => reply.error(e),
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let sa = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime_ns: atime.map(time_or_now),
            mtime_ns: mtime.map(time_or_now),
        };
        let kill = self.fuse.kills_priv() && setattr_kills(&sa, req.uid());
        self.slow(move |f| match f.do_setattr(ino.0, &sa, kill) {
            Ok(a) => reply.attr(&f.ttl, &file_attr(&a, f.block_size)),
            Err(e) => reply.error(e),
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.slow(move |f| match f.do_readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let (name, who) = (name.to_owned(), who(req));
        self.slow(move |f| {
            f.reply_entry(f.do_mknod(parent.0, &name, mode, umask, who), reply);
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let (name, who) = (name.to_owned(), who(req));
        self.slow(move |f| {
            f.reply_entry(f.do_mkdir(parent.0, &name, mode, umask, who), reply);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.slow(move |f| VmfsFuse::reply_empty(f.do_unlink(parent.0, &name), reply));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.slow(move |f| VmfsFuse::reply_empty(f.do_rmdir(parent.0, &name), reply));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (name, target, who) = (link_name.to_owned(), target.to_owned(), who(req));
        self.slow(move |f| {
            let r = f.do_symlink(parent.0, &name, target.as_os_str(), who);
            f.reply_entry(r, reply);
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name.to_owned(), newname.to_owned());
        self.slow(move |f| {
            let r = f.do_rename(parent.0, &name, newparent.0, &newname, flags);
            VmfsFuse::reply_empty(r, reply);
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = newname.to_owned();
        self.slow(move |f| f.reply_entry(f.do_link(ino.0, newparent.0, &newname), reply));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.slow(move |f| match f.do_open(ino.0, flags) {
            Ok(fh) => reply.opened(FileHandle(fh), f.open_flags()),
            Err(e) => reply.error(e),
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Answered here from the image's page cache if it holds the bytes:
        // straight from its mapping when it is one device extent (the
        // kernel copies the mapped page cache into /dev/fuse), else copied
        // into this thread's reused buffer (no allocation or zeroing of up
        // to 1 MiB per read). Either way the reply is written before the
        // file's data guard is let go.
        let mut reply = Some(reply);
        let r = READ_BUF.with_borrow_mut(|buf| {
            self.fuse
                .do_read_now(fh.0, offset, size, buf, &mut |bytes| {
                    if let Some(r) = reply.take() {
                        r.data(bytes);
                    }
                })
        });
        let Some(reply) = reply else { return };
        match r {
            Ok(_) => self.slow(move |f| read_into_reply(f, fh.0, offset, size, reply)),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill =
            self.fuse.kills_priv() && write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        if !kill {
            match self.fuse.do_write_now(fh.0, offset, data) {
                Ok(Some(n)) => return reply.written(n),
                Ok(None) => {}
                Err(e) => return reply.error(e),
            }
        }
        let data = data.to_vec();
        self.slow(
            move |f| match f.do_write(ino.0, fh.0, offset, &data, kill) {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            },
        );
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        VmfsFuse::reply_empty(self.fuse.do_flush(), reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.slow(move |f| VmfsFuse::reply_empty(f.do_release(fh.0), reply));
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.slow(move |f| VmfsFuse::reply_empty(f.do_fsync(fh.0), reply));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.slow(move |f| {
            let r = f.list(ino.0, offset, |it| {
                reply.add(
                    INodeNo(it.ino),
                    it.next,
                    kind_of_dtype(it.dtype),
                    OsStr::from_bytes(&it.name),
                )
            });
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.slow(move |f| {
            let r = f.list(ino.0, offset, |it| {
                // An entry removed by another host since the listing is left
                // out, and so is one whose number it reused meanwhile: the
                // kernel would file the new inode under the old name.
                let Ok(Some(a)) = f.fs.entry_attr(it) else {
                    return false;
                };
                let full = reply.add(
                    INodeNo(it.ino),
                    it.next,
                    OsStr::from_bytes(&it.name),
                    &f.ttl,
                    &file_attr(&a, f.block_size),
                    Generation(a.generation),
                );
                // The kernel takes a reference to every entry but "." and "..".
                if !full && it.name != b"." && it.name != b".." {
                    f.nodes.remember(&a);
                }
                full
            });
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.slow(move |f| VmfsFuse::reply_empty(f.do_fsyncdir(), reply));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.slow(move |f| match f.do_statfs() {
            Ok(s) => {
                let bsize = u32::try_from(s.block_size).unwrap_or(u32::MAX);
                reply.statfs(
                    s.blocks,
                    s.blocks_free,
                    s.blocks_free,
                    s.inodes,
                    s.inodes_free,
                    bsize,
                    u32::try_from(s.name_max).unwrap_or(u32::MAX),
                    bsize,
                )
            }
            Err(e) => reply.error(e),
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (name, who) = (name.to_owned(), who(req));
        self.slow(
            move |f| match f.do_create(parent.0, &name, mode, umask, flags, who) {
                Ok((a, fh)) => reply.created(
                    &f.ttl,
                    &file_attr(&a, f.block_size),
                    Generation(a.generation),
                    FileHandle(fh),
                    f.open_flags(),
                ),
                Err(e) => reply.error(e),
            },
        );
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.slow(move |f| {
            VmfsFuse::reply_empty(f.do_fallocate(fh.0, offset, length, mode), reply);
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (name, value) = (name.to_owned(), value.to_vec());
        self.slow(move |f| {
            VmfsFuse::reply_empty(f.do_setxattr(ino.0, &name, &value, flags), reply);
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.to_owned();
        self.slow(move |f| reply_xattr(f.do_getxattr(ino.0, &name, size), reply));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.slow(move |f| reply_xattr(f.do_listxattr(ino.0, size), reply));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.slow(move |f| VmfsFuse::reply_empty(f.do_removexattr(ino.0, &name), reply));
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.slow(move |f| match f.do_lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(e),
        });
    }
}

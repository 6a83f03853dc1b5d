//! The kernel's requests, each answered from one `do_*` call.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    BsdFileFlags, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::fs::{Attr, SetAttr};

use super::attr::{file_attr, kind_of_dtype, time_or_now};
use super::killpriv::setattr_kills;
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

thread_local! {
    /// The read buffer of a session thread.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Filesystem for VmfsFuse {
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
            Ok(()) => self.kill_priv = true,
            Err(missing) => tracing::info!("fuse: kernel lacks {missing:?}"),
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
        tracing::info!(
            "fuse: session ended ({} nodes still referenced by the kernel)",
            self.nodes.len()
        );
        if let Some(tx) = self
            .on_destroy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.reply_entry(self.do_lookup(parent.0, name), reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.nodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.do_getattr(ino.0) {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a, self.block_size)),
            Err(e) => reply.error(e),
        }
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
        let kill = self.kill_priv && setattr_kills(&sa, req.uid());
        match self.do_setattr(ino.0, &sa, kill) {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a, self.block_size)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.do_readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
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
        self.reply_entry(self.do_mknod(parent.0, name, mode, umask, who(req)), reply);
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
        self.reply_entry(self.do_mkdir(parent.0, name, mode, umask, who(req)), reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::reply_empty(self.do_unlink(parent.0, name), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::reply_empty(self.do_rmdir(parent.0, name), reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            self.do_symlink(parent.0, link_name, target.as_os_str(), who(req)),
            reply,
        );
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
        Self::reply_empty(
            self.do_rename(parent.0, name, newparent.0, newname, flags),
            reply,
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.reply_entry(self.do_link(ino.0, newparent.0, newname), reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.do_open(ino.0, flags) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
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
        // Each session thread reuses one buffer: no allocation or zeroing
        // of up to 1 MiB per read (the reply is copied out before return).
        READ_BUF.with_borrow_mut(|buf| match self.do_read(fh.0, offset, size, buf) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(e),
        })
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
        let kill = self.kill_priv && write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self.do_write(ino.0, fh.0, offset, data, kill) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        Self::reply_empty(self.do_flush(), reply);
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
        Self::reply_empty(self.do_release(fh.0), reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::reply_empty(self.do_fsync(fh.0), reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.list(ino.0, offset, |it| {
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
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.list(ino.0, offset, |it| {
            // An entry removed by another host since the listing is left out.
            let Ok(a) = self.fs.getattr(it.ino) else {
                return false;
            };
            let full = reply.add(
                INodeNo(it.ino),
                it.next,
                OsStr::from_bytes(&it.name),
                &self.ttl,
                &file_attr(&a, self.block_size),
                Generation(a.generation),
            );
            // The kernel takes a reference to every entry but "." and "..".
            if !full && it.name != b"." && it.name != b".." {
                self.nodes.remember(&a);
            }
            full
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::reply_empty(self.do_fsyncdir(), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.do_statfs() {
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
        }
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
        match self.do_create(parent.0, name, mode, umask, flags, who(req)) {
            Ok((a, fh)) => reply.created(
                &self.ttl,
                &file_attr(&a, self.block_size),
                Generation(a.generation),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
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
        Self::reply_empty(self.do_fallocate(fh.0, offset, length, mode), reply);
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
        Self::reply_empty(self.do_setxattr(ino.0, name, value, flags), reply);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(self.do_getxattr(ino.0, name, size), reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(self.do_listxattr(ino.0, size), reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::reply_empty(self.do_removexattr(ino.0, name), reply);
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
        match self.do_lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(e),
        }
    }
}

//! The [`Backend`] operations of [`VmfsBackend`]: each checks that the
//! handle's inode is still the same live object, then calls `vmfs::fs::Fs`.

use vmfs::fs::{Attr as FsAttr, Falloc, SetAttr as FsSetAttr};

use super::open_files::Use;

use super::{attr_of, backend_error, id_of, live_attr, nanos, read_error, settled, VmfsBackend};
use crate::backend::{
    Attr, BResult, Backend, BackendError, Caller, CreateHow, DirEntry, FileId, FsProperties,
    FsStat, Name, ReadDir, ReadOk, SetAttr, SetTime, SpecialNode, StableHow, Timestamp, WriteOk,
};
use vmfs::dev::BlockDev;

/// Entries fetched per READDIR at most (bounds memory per call).
const READDIR_MAX: usize = 4096;
/// Bytes preallocated ahead of an appending writer (32 blocks of 1 MiB:
/// one allocation transaction).
const PREALLOC: u64 = 32 << 20;
/// A write this many blocks past the end of file still counts as appending
/// (WRITEs in flight arrive slightly out of order).
const APPEND_WINDOW_BLOCKS: u64 = 16;

fn set_time(t: SetTime) -> Option<i64> {
    match t {
        SetTime::DontChange => None,
        SetTime::ServerNow => Some(now_ns()),
        SetTime::Client(t) => Some(nanos(t)),
    }
}

/// READ and WRITE are for regular files only.
fn regular(a: &FsAttr) -> BResult<()> {
    match a.mode & libc::S_IFMT {
        libc::S_IFREG => Ok(()),
        libc::S_IFDIR => Err(BackendError::IsDir),
        _ => Err(BackendError::Inval(format!(
            "inode {} is not a regular file",
            a.ino
        ))),
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The exclusive-create verifier is kept in the new file's atime and mtime
/// seconds (as Linux knfsd does); the client's SETATTR that follows the
/// create replaces them.
fn verifier_times(v: [u8; 8]) -> (i64, i64) {
    let a = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    let m = u32::from_be_bytes([v[4], v[5], v[6], v[7]]);
    (i64::from(a) * 1_000_000_000, i64::from(m) * 1_000_000_000)
}

fn fs_setattr(set: &SetAttr) -> FsSetAttr {
    FsSetAttr {
        mode: set.mode.map(|m| m & 0o7777),
        uid: set.uid,
        gid: set.gid,
        size: set.size,
        atime_ns: set_time(set.atime),
        mtime_ns: set_time(set.mtime),
    }
}

fn is_empty(s: &FsSetAttr) -> bool {
    s.mode.is_none()
        && s.uid.is_none()
        && s.gid.is_none()
        && s.size.is_none()
        && s.atime_ns.is_none()
        && s.mtime_ns.is_none()
}

impl VmfsBackend {
    fn nfs_attr(&self, a: &FsAttr) -> Attr {
        attr_of(a, self.fsid)
    }

    fn live_dir(&self, id: FileId) -> BResult<FsAttr> {
        let a = live_attr(&self.fs, id)?;
        if !a.is_dir() {
            return Err(BackendError::NotDir);
        }
        Ok(a)
    }

    /// After creating an object: apply the attributes the call asked for
    /// that creation did not set.
    fn finish_create(&self, a: FsAttr, set: &SetAttr) -> BResult<(FileId, Attr)> {
        let rest = fs_setattr(&SetAttr {
            mode: None,
            uid: None,
            gid: None,
            ..*set
        });
        let a = if is_empty(&rest) {
            a
        } else {
            self.fs.setattr(a.ino, &rest).map_err(backend_error)?
        };
        Ok((id_of(&a), self.nfs_attr(&a)))
    }

    /// Appending writes preallocate [`PREALLOC`] bytes of blocks at a time,
    /// so that a stream of 1 MiB WRITEs commits one allocation transaction
    /// (and one journal flush) per 32 blocks rather than one per WRITE.
    /// Only for writes at (or just past) the end of file: a sparse write far
    /// beyond it allocates nothing extra. What is left past the end of file
    /// is freed when the handle is closed.
    fn preallocate(&self, u: &Use, size: u64, offset: u64, len: u64) -> BResult<()> {
        let bs = self.block_size;
        let end = offset.saturating_add(len);
        let appending = offset.saturating_add(bs) >= size
            && offset <= size.saturating_add(APPEND_WINDOW_BLOCKS * bs);
        // Writes inside the first file block allocate on their own: a
        // small file stays in small blocks (the filesystem promotes it to
        // file blocks when it grows past one file block).
        if !appending || end <= u.prealloc_end() || end <= bs {
            return Ok(());
        }
        let from = offset / bs * bs;
        let to = (end.div_ceil(bs) * bs)
            .max(from + PREALLOC)
            .min(self.max_file_size / bs * bs);
        if to <= from {
            return Ok(());
        }
        u.set_prealloc_end(to);
        match self.fs.fallocate(
            u.fh(),
            from,
            to - from,
            Falloc::Allocate { keep_size: true },
        ) {
            // A nearly full volume: the write allocates what it can itself.
            Ok(()) | Err(vmfs::fs::FsError::NoSpace(_)) => Ok(()),
            Err(e) => Err(backend_error(e)),
        }
    }

    /// Closes our own cached handle of whatever `dir/name` names, so that
    /// removing it reclaims the inode now.
    fn forget_name(&self, dir: FileId, name: &Name) {
        if let Ok(a) = self.fs.lookup(dir.ino, name.as_bytes()) {
            self.files.forget(a.ino);
        }
    }
}

impl Backend for VmfsBackend {
    fn root(&self) -> FileId {
        self.root
    }

    fn getattr(&self, id: FileId) -> BResult<Attr> {
        live_attr(&self.fs, id).map(|a| self.nfs_attr(&a))
    }

    fn setattr(&self, id: FileId, set: &SetAttr, guard_ctime: Option<Timestamp>) -> BResult<Attr> {
        let a = live_attr(&self.fs, id)?;
        // Checked just before the change, not atomically with it: another
        // host's change in between is not caught (documented in docs/nfs.md).
        if let Some(g) = guard_ctime {
            if nanos(g) != a.ctime_ns {
                return Err(BackendError::NotSync);
            }
        }
        if set.size.is_some() && a.is_dir() {
            return Err(BackendError::IsDir);
        }
        let fs_set = fs_setattr(set);
        if is_empty(&fs_set) {
            return Ok(self.nfs_attr(&a));
        }
        let a = self.fs.setattr(id.ino, &fs_set).map_err(backend_error)?;
        Ok(self.nfs_attr(&a))
    }

    fn lookup(&self, dir: FileId, name: &Name) -> BResult<(FileId, Attr)> {
        self.live_dir(dir)?;
        let a = settled(|| self.fs.lookup(dir.ino, name.as_bytes())).map_err(read_error)?;
        Ok((id_of(&a), self.nfs_attr(&a)))
    }

    fn parent(&self, dir: FileId) -> BResult<FileId> {
        self.live_dir(dir)?;
        let a = settled(|| self.fs.lookup(dir.ino, b"..")).map_err(read_error)?;
        Ok(id_of(&a))
    }

    fn readlink(&self, id: FileId) -> BResult<Vec<u8>> {
        live_attr(&self.fs, id)?;
        settled(|| self.fs.readlink(id.ino)).map_err(backend_error)
    }

    fn read(&self, id: FileId, offset: u64, count: u32) -> BResult<ReadOk> {
        let a = live_attr(&self.fs, id)?;
        regular(&a)?;
        let u = self.files.get(id.ino, false).map_err(|e| match e {
            // Removed meanwhile: name the generation the client asked for.
            BackendError::Stale { ino, .. } => BackendError::Stale { ino, gen: id.gen },
            e => e,
        })?;
        let data = self
            .fs
            .read(u.fh(), offset, count as usize)
            .map_err(backend_error)?;
        drop(u);
        let a = settled(|| self.fs.getattr(id.ino)).map_err(backend_error)?;
        let end = offset.saturating_add(data.len() as u64);
        Ok(ReadOk {
            eof: end >= a.size,
            data,
            attr: self.nfs_attr(&a),
        })
    }

    fn write(&self, id: FileId, offset: u64, data: &[u8], stable: StableHow) -> BResult<WriteOk> {
        let a = live_attr(&self.fs, id)?;
        regular(&a)?;
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|e| e > self.max_file_size)
        {
            return Err(BackendError::FileTooBig);
        }
        let u = self.files.get(id.ino, true).map_err(|e| match e {
            // Removed meanwhile: name the generation the client asked for.
            BackendError::Stale { ino, .. } => BackendError::Stale { ino, gen: id.gen },
            e => e,
        })?;
        self.preallocate(&u, a.size, offset, data.len() as u64)?;
        let n = self.fs.write(u.fh(), offset, data).map_err(backend_error)?;
        let committed = if stable == StableHow::Unstable {
            StableHow::Unstable
        } else {
            self.fs.fsync(u.fh()).map_err(backend_error)?;
            StableHow::FileSync
        };
        drop(u);
        let a = settled(|| self.fs.getattr(id.ino)).map_err(backend_error)?;
        Ok(WriteOk {
            count: n as u32,
            committed,
            attr: self.nfs_attr(&a),
        })
    }

    fn commit(&self, id: FileId, _offset: u64, _count: u32) -> BResult<Attr> {
        live_attr(&self.fs, id)?;
        match self.files.get_open_writer(id.ino) {
            Some(u) => self.fs.fsync(u.fh()).map_err(backend_error)?,
            // Our write handle was closed (fsynced then): the inode is on
            // disk; flush the device cache for the data.
            None => self
                .fs
                .host()
                .dev()
                .flush()
                .map_err(|e| BackendError::Io(e.to_string()))?,
        }
        self.getattr(id)
    }

    fn create(
        &self,
        dir: FileId,
        name: &Name,
        how: CreateHow,
        caller: &Caller,
    ) -> BResult<(FileId, Attr)> {
        self.live_dir(dir)?;
        let n = name.as_bytes();
        let (set, mode) = match how {
            CreateHow::Unchecked(s) | CreateHow::Guarded(s) => (s, s.mode.unwrap_or(0o644)),
            CreateHow::Exclusive(_) => (SetAttr::default(), 0o644),
        };
        let uid = set.uid.unwrap_or(caller.uid);
        let gid = set.gid.unwrap_or(caller.gid);
        match self.fs.create(dir.ino, n, mode, uid, gid) {
            Ok(a) => match how {
                CreateHow::Exclusive(v) => {
                    let (at, mt) = verifier_times(v);
                    let s = FsSetAttr {
                        atime_ns: Some(at),
                        mtime_ns: Some(mt),
                        ..FsSetAttr::default()
                    };
                    let a = self.fs.setattr(a.ino, &s).map_err(backend_error)?;
                    Ok((id_of(&a), self.nfs_attr(&a)))
                }
                _ => self.finish_create(a, &set),
            },
            Err(vmfs::fs::FsError::Exists(_)) => {
                let a = settled(|| self.fs.lookup(dir.ino, n)).map_err(backend_error)?;
                match how {
                    CreateHow::Guarded(_) => Err(BackendError::Exist),
                    CreateHow::Exclusive(v) => {
                        // A retransmitted exclusive create finds its own file.
                        let (at, mt) = verifier_times(v);
                        if a.atime_ns == at && a.mtime_ns == mt && !a.is_dir() {
                            Ok((id_of(&a), self.nfs_attr(&a)))
                        } else {
                            Err(BackendError::Exist)
                        }
                    }
                    CreateHow::Unchecked(s) => {
                        if a.is_dir() {
                            return Err(BackendError::IsDir);
                        }
                        // An existing file is opened: only its size applies.
                        let a = match s.size {
                            Some(size) => {
                                let t = FsSetAttr {
                                    size: Some(size),
                                    ..FsSetAttr::default()
                                };
                                self.fs.setattr(a.ino, &t).map_err(backend_error)?
                            }
                            None => a,
                        };
                        Ok((id_of(&a), self.nfs_attr(&a)))
                    }
                }
            }
            Err(e) => Err(backend_error(e)),
        }
    }

    fn mkdir(
        &self,
        dir: FileId,
        name: &Name,
        set: &SetAttr,
        caller: &Caller,
    ) -> BResult<(FileId, Attr)> {
        self.live_dir(dir)?;
        let mode = set.mode.unwrap_or(0o755);
        let uid = set.uid.unwrap_or(caller.uid);
        let gid = set.gid.unwrap_or(caller.gid);
        let a = self
            .fs
            .mkdir(dir.ino, name.as_bytes(), mode, uid, gid)
            .map_err(backend_error)?;
        self.finish_create(a, set)
    }

    fn symlink(
        &self,
        dir: FileId,
        name: &Name,
        target: &[u8],
        set: &SetAttr,
        caller: &Caller,
    ) -> BResult<(FileId, Attr)> {
        self.live_dir(dir)?;
        if target.is_empty() {
            return Err(BackendError::Inval("empty symlink target".into()));
        }
        if target.len() > vmfs::fs::SYMLINK_MAX {
            return Err(BackendError::NameTooLong);
        }
        let uid = set.uid.unwrap_or(caller.uid);
        let gid = set.gid.unwrap_or(caller.gid);
        let a = self
            .fs
            .symlink(dir.ino, name.as_bytes(), target, uid, gid)
            .map_err(backend_error)?;
        // A symlink's mode is always 0777; only times apply.
        let times = SetAttr {
            mode: None,
            size: None,
            ..*set
        };
        self.finish_create(a, &times)
    }

    fn mknod(
        &self,
        dir: FileId,
        _name: &Name,
        _node: SpecialNode,
        _set: &SetAttr,
        _caller: &Caller,
    ) -> BResult<(FileId, Attr)> {
        self.live_dir(dir)?;
        Err(BackendError::NotSupported(
            "vmfs holds no device nodes, sockets or FIFOs",
        ))
    }

    fn remove(&self, dir: FileId, name: &Name) -> BResult<()> {
        self.live_dir(dir)?;
        self.forget_name(dir, name);
        self.fs
            .unlink(dir.ino, name.as_bytes())
            .map_err(backend_error)
    }

    fn rmdir(&self, dir: FileId, name: &Name) -> BResult<()> {
        self.live_dir(dir)?;
        self.fs
            .rmdir(dir.ino, name.as_bytes())
            .map_err(backend_error)
    }

    fn rename(&self, from_dir: FileId, from: &Name, to_dir: FileId, to: &Name) -> BResult<()> {
        self.live_dir(from_dir)?;
        self.live_dir(to_dir)?;
        self.forget_name(to_dir, to);
        self.fs
            .rename(from_dir.ino, from.as_bytes(), to_dir.ino, to.as_bytes())
            .map_err(backend_error)
    }

    fn link(&self, file: FileId, dir: FileId, name: &Name) -> BResult<()> {
        live_attr(&self.fs, file)?;
        self.live_dir(dir)?;
        self.fs
            .link(file.ino, dir.ino, name.as_bytes())
            .map(|_| ())
            .map_err(backend_error)
    }

    fn readdir(
        &self,
        dir: FileId,
        cookie: u64,
        verifier: u64,
        max_entries: usize,
        plus: bool,
    ) -> BResult<ReadDir> {
        self.live_dir(dir)?;
        // Cookies are vmfs readdir offsets (name hash + collision index),
        // valid across inserts, removals and bucket splits; the verifier
        // only tells directories (and their incarnations) apart.
        let my_verifier = dir.ino.rotate_left(23) ^ dir.gen ^ 0x766d_6673_6e66_7332;
        if cookie != 0 && verifier != 0 && verifier != my_verifier {
            return Err(BackendError::BadCookie);
        }
        let max = max_entries.min(READDIR_MAX);
        let mut items =
            settled(|| self.fs.readdir(dir.ino, cookie, max + 1)).map_err(read_error)?;
        let eof = items.len() <= max;
        items.truncate(max);
        let mut entries = Vec::with_capacity(items.len());
        for it in items {
            let extra = if plus {
                // An entry removed since it was listed gets no attributes,
                // nor one whose number another host reused meanwhile (the
                // handle would name another file under this name).
                settled(|| self.fs.entry_attr(&it))
                    .ok()
                    .flatten()
                    .map(|a| (id_of(&a), self.nfs_attr(&a)))
            } else {
                None
            };
            entries.push(DirEntry {
                fileid: it.ino,
                name: it.name,
                cookie: it.next,
                plus: extra,
            });
        }
        Ok(ReadDir {
            entries,
            verifier: my_verifier,
            eof,
        })
    }

    fn fsstat(&self, id: FileId) -> BResult<FsStat> {
        live_attr(&self.fs, id)?;
        let s = self.fs.statfs().map_err(backend_error)?;
        let free = s.blocks_free.saturating_mul(s.block_size);
        Ok(FsStat {
            total_bytes: s.blocks.saturating_mul(s.block_size),
            free_bytes: free,
            avail_bytes: free,
            total_files: s.inodes,
            free_files: s.inodes_free,
            avail_files: s.inodes_free,
        })
    }

    fn properties(&self) -> FsProperties {
        FsProperties {
            max_file_size: self.max_file_size,
            time_delta: Timestamp { secs: 0, nsecs: 1 },
            link_max: u32::MAX,
            name_max: vmfs::fs::NAME_MAX as u32,
            supports_hard_links: true,
            supports_symlinks: true,
            chown_restricted: true,
            case_insensitive: false,
            case_preserving: true,
        }
    }
}

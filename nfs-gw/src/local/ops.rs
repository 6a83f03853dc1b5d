//! The [`Backend`] operations of [`LocalDirBackend`].

use super::{errno_to_backend, io_to_backend, Loc, LocalDirBackend};
use crate::backend::{
    Attr, BResult, Backend, BackendError, Caller, CreateHow, DirEntry, FileId, FileType,
    FsProperties, FsStat, Name, ReadDir, ReadOk, SetAttr, SetTime, SpecialNode, StableHow,
    Timestamp, WriteOk,
};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT};
use rustix::io::Errno;
use std::os::unix::fs::FileExt;

fn timespec(t: SetTime) -> Timespec {
    match t {
        SetTime::DontChange => Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        SetTime::ServerNow => Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        },
        SetTime::Client(t) => Timespec {
            tv_sec: t.secs,
            tv_nsec: t.nsecs.min(999_999_999) as _,
        },
    }
}

/// The exclusive-create verifier is kept in atime/mtime seconds, as Linux
/// knfsd does (RFC 1813 §3.3.8 suggests stable storage in the object).
fn verifier_times(v: [u8; 8]) -> Timestamps {
    let a = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    let m = u32::from_be_bytes([v[4], v[5], v[6], v[7]]);
    Timestamps {
        last_access: Timespec {
            tv_sec: a as i64,
            tv_nsec: 0,
        },
        last_modification: Timespec {
            tv_sec: m as i64,
            tv_nsec: 0,
        },
    }
}

fn matches_verifier(attr: &Attr, v: [u8; 8]) -> bool {
    let t = verifier_times(v);
    attr.atime.secs == t.last_access.tv_sec
        && attr.mtime.secs == t.last_modification.tv_sec
        && attr.atime.nsecs == 0
        && attr.mtime.nsecs == 0
}

impl LocalDirBackend {
    /// Applies `set` to `name` in `dir` (or to the root). Size needs the
    /// object's id for the fd cache.
    fn apply_setattr(&self, loc: &Loc, id: FileId, set: &SetAttr, ftype: FileType) -> BResult<()> {
        let (dirfd, name): (&OwnedFd, &[u8]) = match loc {
            Loc::Root => (self.root_fd(), b"."),
            Loc::In { dir, name } => (dir, &name[..]),
        };
        let at_flags = if matches!(loc, Loc::Root) {
            AtFlags::empty()
        } else {
            AtFlags::SYMLINK_NOFOLLOW
        };
        if let Some(size) = set.size {
            match ftype {
                FileType::Regular => {
                    let f = self.open_file(id)?;
                    f.set_len(size).map_err(io_to_backend)?;
                }
                FileType::Directory => return Err(BackendError::IsDir),
                _ => return Err(BackendError::Inval("size of a special file".into())),
            }
        }
        if set.uid.is_some() || set.gid.is_some() {
            rustix::fs::chownat(
                dirfd,
                name,
                set.uid.map(rustix::fs::Uid::from_raw),
                set.gid.map(rustix::fs::Gid::from_raw),
                at_flags,
            )
            .map_err(errno_to_backend)?;
        }
        if let Some(mode) = set.mode {
            if ftype != FileType::Symlink {
                rustix::fs::chmodat(
                    dirfd,
                    name,
                    Mode::from_bits_truncate(mode & 0o7777),
                    AtFlags::empty(),
                )
                .map_err(errno_to_backend)?;
            }
        }
        if set.atime != SetTime::DontChange || set.mtime != SetTime::DontChange {
            let times = Timestamps {
                last_access: timespec(set.atime),
                last_modification: timespec(set.mtime),
            };
            rustix::fs::utimensat(dirfd, name, &times, at_flags).map_err(errno_to_backend)?;
        }
        Ok(())
    }

    /// After creating `name` in `dir`: set owner and requested attributes,
    /// remember it, return its id and attributes.
    fn finish_create(
        &self,
        dir_id: FileId,
        dir: &OwnedFd,
        name: &Name,
        set: &SetAttr,
        caller: &Caller,
    ) -> BResult<(FileId, Attr)> {
        let n = name.as_bytes();
        if self.is_root_user() {
            let uid = set.uid.unwrap_or(caller.uid);
            let gid = set.gid.unwrap_or(caller.gid);
            rustix::fs::chownat(
                dir,
                n,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(errno_to_backend)?;
        }
        let st = self.stat_at(dir, n)?;
        let id = self.id_of(&st);
        self.remember(dir_id.ino, n, id);
        let rest = SetAttr {
            uid: None,
            gid: None,
            ..*set
        };
        let ftype = self.attr_of(&st).ftype;
        if rest != SetAttr::default() {
            let loc = Loc::In {
                dir: rustix::io::dup(dir).map_err(errno_to_backend)?,
                name: n.to_vec(),
            };
            self.apply_setattr(&loc, id, &rest, ftype)?;
        }
        let st = self.stat_at(dir, n)?;
        Ok((id, self.attr_of(&st)))
    }

    fn stat_to_entry<Fd: AsFd>(&self, dir: Fd, name: &[u8]) -> Option<(FileId, Attr)> {
        let st = self.stat_at(dir, name).ok()?;
        Some((self.id_of(&st), self.attr_of(&st)))
    }
}

impl Backend for LocalDirBackend {
    fn root(&self) -> FileId {
        self.root_id()
    }

    fn getattr(&self, id: FileId) -> BResult<Attr> {
        let (_, st) = self.locate(id)?;
        Ok(self.attr_of(&st))
    }

    fn setattr(&self, id: FileId, set: &SetAttr, guard_ctime: Option<Timestamp>) -> BResult<Attr> {
        let (loc, st) = self.locate(id)?;
        let attr = self.attr_of(&st);
        if let Some(g) = guard_ctime {
            if g != attr.ctime {
                return Err(BackendError::NotSync);
            }
        }
        self.apply_setattr(&loc, id, set, attr.ftype)?;
        self.getattr(id)
    }

    fn lookup(&self, dir: FileId, name: &Name) -> BResult<(FileId, Attr)> {
        let dfd = self.open_dir(dir)?;
        let st = self.stat_at(&dfd, name.as_bytes())?;
        let id = self.id_of(&st);
        self.remember(dir.ino, name.as_bytes(), id);
        Ok((id, self.attr_of(&st)))
    }

    fn parent(&self, dir: FileId) -> BResult<FileId> {
        let (_, st) = self.locate(dir)?;
        if self.attr_of(&st).ftype != FileType::Directory {
            return Err(BackendError::NotDir);
        }
        if dir == self.root_id() {
            return Ok(dir);
        }
        match self.parent_of(dir.ino) {
            Some((ino, gen)) => Ok(FileId { ino, gen }),
            None => Err(BackendError::Stale {
                ino: dir.ino,
                gen: dir.gen,
            }),
        }
    }

    fn readlink(&self, id: FileId) -> BResult<Vec<u8>> {
        let (loc, st) = self.locate(id)?;
        if self.attr_of(&st).ftype != FileType::Symlink {
            return Err(BackendError::Inval("not a symlink".into()));
        }
        let Loc::In { dir, name } = loc else {
            return Err(BackendError::Inval("not a symlink".into()));
        };
        let target =
            rustix::fs::readlinkat(&dir, &name[..], Vec::new()).map_err(errno_to_backend)?;
        Ok(target.into_bytes())
    }

    fn read(&self, id: FileId, offset: u64, count: u32) -> BResult<ReadOk> {
        let f = self.open_file(id)?;
        let size = f.metadata().map_err(io_to_backend)?.len();
        let want = if offset >= size {
            0
        } else {
            (size - offset).min(count as u64) as usize
        };
        let mut data = vec![0u8; want];
        let mut got = 0;
        while got < want {
            let n = f
                .read_at(&mut data[got..], offset + got as u64)
                .map_err(io_to_backend)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        data.truncate(got);
        let st = self.stat_fd(f.as_fd())?;
        let attr = self.attr_of(&st);
        let eof = offset.saturating_add(got as u64) >= attr.size;
        Ok(ReadOk { data, eof, attr })
    }

    fn write(&self, id: FileId, offset: u64, data: &[u8], stable: StableHow) -> BResult<WriteOk> {
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|end| end > i64::MAX as u64)
        {
            return Err(BackendError::FileTooBig);
        }
        let f = self.open_file(id)?;
        f.write_all_at(data, offset).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBADF) {
                BackendError::Access
            } else {
                io_to_backend(e)
            }
        })?;
        match stable {
            StableHow::Unstable => {}
            StableHow::DataSync => f.sync_data().map_err(io_to_backend)?,
            StableHow::FileSync => f.sync_all().map_err(io_to_backend)?,
        }
        let st = self.stat_fd(f.as_fd())?;
        Ok(WriteOk {
            count: data.len() as u32,
            committed: stable,
            attr: self.attr_of(&st),
        })
    }

    fn commit(&self, id: FileId, _offset: u64, _count: u32) -> BResult<Attr> {
        let (_, st) = self.locate(id)?;
        if self.attr_of(&st).ftype == FileType::Regular {
            let f = self.open_file(id)?;
            f.sync_all().map_err(io_to_backend)?;
            return Ok(self.attr_of(&self.stat_fd(f.as_fd())?));
        }
        Ok(self.attr_of(&st))
    }

    fn create(
        &self,
        dir: FileId,
        name: &Name,
        how: CreateHow,
        caller: &Caller,
    ) -> BResult<(FileId, Attr)> {
        let dfd = self.open_dir(dir)?;
        let n = name.as_bytes();
        let base = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match how {
            CreateHow::Unchecked(set) | CreateHow::Guarded(set) => {
                let excl = matches!(how, CreateHow::Guarded(_));
                let flags = if excl { base | OFlags::EXCL } else { base };
                let mode = Mode::from_bits_truncate(set.mode.unwrap_or(0o644) & 0o7777);
                let existed = self.stat_at(&dfd, n).is_ok();
                match rustix::fs::openat(&dfd, n, flags, mode) {
                    Ok(_) => {}
                    Err(Errno::ISDIR) => return Err(BackendError::Exist),
                    Err(e) => return Err(errno_to_backend(e)),
                }
                if existed && !excl {
                    // UNCHECKED on an existing file: only the size applies
                    // (RFC 1813 §3.3.8), the owner is not changed.
                    let st = self.stat_at(&dfd, n)?;
                    let id = self.id_of(&st);
                    self.remember(dir.ino, n, id);
                    if let Some(size) = set.size {
                        let only_size = SetAttr {
                            size: Some(size),
                            ..SetAttr::default()
                        };
                        let loc = Loc::In {
                            dir: dfd,
                            name: n.to_vec(),
                        };
                        self.apply_setattr(&loc, id, &only_size, FileType::Regular)?;
                    }
                    let attr = self.getattr(id)?;
                    return Ok((id, attr));
                }
                self.finish_create(dir, &dfd, name, &set, caller)
            }
            CreateHow::Exclusive(verf) => {
                match rustix::fs::openat(
                    &dfd,
                    n,
                    base | OFlags::EXCL,
                    Mode::from_bits_truncate(0o600),
                ) {
                    Ok(_) => {
                        rustix::fs::utimensat(
                            &dfd,
                            n,
                            &verifier_times(verf),
                            AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .map_err(errno_to_backend)?;
                        self.finish_create(dir, &dfd, name, &SetAttr::default(), caller)
                    }
                    Err(Errno::EXIST) => {
                        // A retransmission of our own CREATE finds its file.
                        let st = self.stat_at(&dfd, n)?;
                        let attr = self.attr_of(&st);
                        if attr.ftype == FileType::Regular && matches_verifier(&attr, verf) {
                            let id = self.id_of(&st);
                            self.remember(dir.ino, n, id);
                            Ok((id, attr))
                        } else {
                            Err(BackendError::Exist)
                        }
                    }
                    Err(e) => Err(errno_to_backend(e)),
                }
            }
        }
    }

    fn mkdir(
        &self,
        dir: FileId,
        name: &Name,
        set: &SetAttr,
        caller: &Caller,
    ) -> BResult<(FileId, Attr)> {
        let dfd = self.open_dir(dir)?;
        let mode = Mode::from_bits_truncate(set.mode.unwrap_or(0o755) & 0o7777);
        rustix::fs::mkdirat(&dfd, name.as_bytes(), mode).map_err(errno_to_backend)?;
        self.finish_create(dir, &dfd, name, set, caller)
    }

    fn symlink(
        &self,
        dir: FileId,
        name: &Name,
        target: &[u8],
        set: &SetAttr,
        caller: &Caller,
    ) -> BResult<(FileId, Attr)> {
        if target.is_empty() || target.contains(&0) {
            return Err(BackendError::Inval(
                "symlink target empty or contains NUL".into(),
            ));
        }
        let dfd = self.open_dir(dir)?;
        rustix::fs::symlinkat(target, &dfd, name.as_bytes()).map_err(errno_to_backend)?;
        let set = SetAttr { mode: None, ..*set };
        self.finish_create(dir, &dfd, name, &set, caller)
    }

    fn mknod(
        &self,
        dir: FileId,
        name: &Name,
        node: SpecialNode,
        set: &SetAttr,
        caller: &Caller,
    ) -> BResult<(FileId, Attr)> {
        let dfd = self.open_dir(dir)?;
        let perm = set.mode.unwrap_or(0o644) & 0o7777;
        let (ft, dev) = match node {
            SpecialNode::Char(a, b) => (
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::makedev(a, b),
            ),
            SpecialNode::Block(a, b) => {
                (rustix::fs::FileType::BlockDevice, rustix::fs::makedev(a, b))
            }
            SpecialNode::Socket => (rustix::fs::FileType::Socket, 0),
            SpecialNode::Fifo => (rustix::fs::FileType::Fifo, 0),
        };
        rustix::fs::mknodat(
            &dfd,
            name.as_bytes(),
            ft,
            Mode::from_bits_truncate(perm),
            dev,
        )
        .map_err(errno_to_backend)?;
        self.finish_create(dir, &dfd, name, set, caller)
    }

    fn remove(&self, dir: FileId, name: &Name) -> BResult<()> {
        let dfd = self.open_dir(dir)?;
        let n = name.as_bytes();
        let st = self.stat_at(&dfd, n)?;
        if self.attr_of(&st).ftype == FileType::Directory {
            return Err(BackendError::IsDir);
        }
        rustix::fs::unlinkat(&dfd, n, AtFlags::empty()).map_err(errno_to_backend)?;
        self.forget(dir.ino, n);
        self.forget_file(st.stx_ino);
        Ok(())
    }

    fn rmdir(&self, dir: FileId, name: &Name) -> BResult<()> {
        let dfd = self.open_dir(dir)?;
        let n = name.as_bytes();
        rustix::fs::unlinkat(&dfd, n, AtFlags::REMOVEDIR).map_err(errno_to_backend)?;
        self.forget(dir.ino, n);
        Ok(())
    }

    fn rename(&self, from_dir: FileId, from: &Name, to_dir: FileId, to: &Name) -> BResult<()> {
        let fdir = self.open_dir(from_dir)?;
        let tdir = self.open_dir(to_dir)?;
        let moved = self.stat_at(&fdir, from.as_bytes())?;
        let replaced = self.stat_at(&tdir, to.as_bytes()).ok();
        rustix::fs::renameat(&fdir, from.as_bytes(), &tdir, to.as_bytes())
            .map_err(errno_to_backend)?;
        self.forget(to_dir.ino, to.as_bytes());
        self.forget(from_dir.ino, from.as_bytes());
        if let Some(r) = replaced {
            if r.stx_ino != moved.stx_ino {
                self.forget_file(r.stx_ino);
            }
        }
        self.remember(to_dir.ino, to.as_bytes(), self.id_of(&moved));
        Ok(())
    }

    fn link(&self, file: FileId, dir: FileId, name: &Name) -> BResult<()> {
        let (loc, st) = self.locate(file)?;
        if self.attr_of(&st).ftype == FileType::Directory {
            return Err(BackendError::IsDir);
        }
        let Loc::In {
            dir: src_dir,
            name: src_name,
        } = loc
        else {
            return Err(BackendError::IsDir);
        };
        let dfd = self.open_dir(dir)?;
        rustix::fs::linkat(
            &src_dir,
            &src_name[..],
            &dfd,
            name.as_bytes(),
            AtFlags::empty(),
        )
        .map_err(errno_to_backend)?;
        Ok(())
    }

    fn readdir(
        &self,
        dir: FileId,
        cookie: u64,
        verifier: u64,
        max_entries: usize,
        plus: bool,
    ) -> BResult<ReadDir> {
        // Cookies are the kernel's directory offsets (d_off), which stay
        // valid while entries are added and removed (ext4 hashes, tmpfs
        // stable offsets), so the verifier only has to tell directories
        // apart: a cookie from another directory (or another incarnation of
        // this inode) is refused.
        let my_verifier = dir.ino.rotate_left(17) ^ dir.gen ^ 0x766d_6673_6e66_7331;
        if cookie != 0 && verifier != 0 && verifier != my_verifier {
            return Err(BackendError::BadCookie);
        }
        if cookie > i64::MAX as u64 {
            return Err(BackendError::BadCookie);
        }
        let pfd = self.open_dir(dir)?;
        let dfd = rustix::fs::openat(
            &pfd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_to_backend)?;
        let mut d = rustix::fs::Dir::new(dfd).map_err(errno_to_backend)?;
        if cookie != 0 {
            d.seek(cookie as i64).map_err(|_| BackendError::BadCookie)?;
        }
        let mut entries = Vec::new();
        let mut eof = true;
        while let Some(ent) = d.read() {
            let ent = ent.map_err(errno_to_backend)?;
            if entries.len() >= max_entries {
                eof = false;
                break;
            }
            let name = ent.file_name().to_bytes();
            let next = ent.offset() as u64;
            let (fileid, plus_data) = if name == b"." {
                let p = if plus {
                    self.getattr(dir).ok().map(|a| (dir, a))
                } else {
                    None
                };
                (dir.ino, p)
            } else if name == b".." {
                let parent = self.parent(dir).unwrap_or(dir);
                let p = if plus {
                    self.getattr(parent).ok().map(|a| (parent, a))
                } else {
                    None
                };
                (parent.ino, p)
            } else {
                let found = self.stat_to_entry(&pfd, name);
                let Some((id, attr)) = found else {
                    continue; // vanished since listed
                };
                self.remember(dir.ino, name, id);
                (id.ino, if plus { Some((id, attr)) } else { None })
            };
            entries.push(DirEntry {
                fileid,
                name: name.to_vec(),
                cookie: next,
                plus: plus_data,
            });
        }
        Ok(ReadDir {
            entries,
            verifier: my_verifier,
            eof,
        })
    }

    fn fsstat(&self, id: FileId) -> BResult<FsStat> {
        self.locate(id)?;
        let s = rustix::fs::fstatvfs(self.root_fd()).map_err(errno_to_backend)?;
        let frsize = if s.f_frsize != 0 {
            s.f_frsize
        } else {
            s.f_bsize
        };
        Ok(FsStat {
            total_bytes: s.f_blocks.saturating_mul(frsize),
            free_bytes: s.f_bfree.saturating_mul(frsize),
            avail_bytes: s.f_bavail.saturating_mul(frsize),
            total_files: s.f_files,
            free_files: s.f_ffree,
            avail_files: s.f_favail,
        })
    }

    fn properties(&self) -> FsProperties {
        FsProperties {
            max_file_size: i64::MAX as u64,
            time_delta: Timestamp { secs: 0, nsecs: 1 },
            link_max: 65000,
            name_max: crate::backend::NAME_MAX as u32,
            supports_hard_links: true,
            supports_symlinks: true,
            chown_restricted: true,
            case_insensitive: false,
            case_preserving: true,
        }
    }
}

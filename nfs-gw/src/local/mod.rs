//! `LocalDirBackend`: exports a directory of the local filesystem, in the
//! manner of nfs-ganesha's VFS FSAL but without kernel file handles.
//!
//! # Identity
//!
//! `FileId.ino` is `st_ino`; `FileId.gen` is the object's *birth time*
//! (`statx` `STATX_BTIME`, as nanoseconds since the epoch). Birth time is set
//! by the kernel when the inode is allocated and cannot be changed from user
//! space, so a reused inode number comes with a different generation and old
//! handles become STALE. Filesystems without btime (ext4 with 128-byte
//! inodes, some network filesystems) get generation 0: inode reuse is then
//! not detected — a known limitation, logged at start-up.
//!
//! # Finding an object from its inode number
//!
//! The kernel offers no "open by inode number" without `CAP_DAC_READ_SEARCH`
//! (`open_by_handle_at`), so the backend keeps a map `ino → (parent ino,
//! name, gen)` filled by every LOOKUP, READDIR, CREATE and RENAME. An object
//! is reached by opening its parent directory with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)` relative to the export root and then
//! using `*at` calls on the single final name with `AT_SYMLINK_NOFOLLOW`.
//! Nothing outside the export root, no symlink and no other mount can be
//! reached, even if a local user swaps a directory for a symlink.
//!
//! After a restart (or a rename made outside the gateway) the map may not
//! know an inode: the backend then walks the export tree once to rebuild it
//! (at most one walk per [`RESCAN_INTERVAL`], so a client sending stale
//! handles cannot make it walk continuously). The map grows with every name
//! seen (about 100 bytes per entry) and is not persisted.

mod ops;

use crate::backend::{Attr, BResult, BackendError, FileId, FileType, Timestamp};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Statx, StatxFlags};
use rustix::io::Errno;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Minimum time between two full walks of the export tree.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(2);
/// Open regular files kept for READ/WRITE.
const FD_CACHE_MAX: usize = 256;

#[derive(Debug, Clone)]
struct NameEntry {
    parent: u64,
    name: Vec<u8>,
    gen: u64,
}

/// Exports one local directory tree.
pub struct LocalDirBackend {
    root_fd: OwnedFd,
    root: FileId,
    fsid: u64,
    has_btime: bool,
    is_root_user: bool,
    names: Mutex<HashMap<u64, NameEntry>>,
    last_rescan: Mutex<Option<Instant>>,
    files: Mutex<HashMap<FileId, Arc<File>>>,
}

/// Where an object lives: its parent directory and name, or the root.
pub(crate) enum Loc {
    Root,
    In { dir: OwnedFd, name: Vec<u8> },
}

pub(crate) fn errno_to_backend(e: Errno) -> BackendError {
    match e {
        Errno::NOENT => BackendError::NoEnt,
        Errno::EXIST => BackendError::Exist,
        Errno::NOTDIR => BackendError::NotDir,
        Errno::ISDIR => BackendError::IsDir,
        Errno::NOTEMPTY => BackendError::NotEmpty,
        Errno::NOSPC => BackendError::NoSpace,
        Errno::DQUOT => BackendError::QuotaExceeded,
        Errno::ROFS => BackendError::ReadOnly,
        Errno::NAMETOOLONG => BackendError::NameTooLong,
        Errno::ACCESS => BackendError::Access,
        Errno::PERM => BackendError::Perm,
        Errno::FBIG => BackendError::FileTooBig,
        Errno::INVAL => BackendError::Inval("rejected by the local filesystem".into()),
        Errno::MLINK => BackendError::TooManyLinks,
        Errno::XDEV => BackendError::CrossDevice,
        Errno::STALE => BackendError::Stale { ino: 0, gen: 0 },
        Errno::OPNOTSUPP | Errno::NOSYS => BackendError::NotSupported("local filesystem"),
        // ELOOP from RESOLVE_NO_SYMLINKS / O_NOFOLLOW: something in the path
        // became a symlink behind our back; never follow it.
        Errno::LOOP => BackendError::Access,
        Errno::BUSY | Errno::AGAIN => BackendError::Busy(e.to_string()),
        other => BackendError::Io(other.to_string()),
    }
}

pub(crate) fn io_to_backend(e: std::io::Error) -> BackendError {
    match e.raw_os_error() {
        Some(n) => errno_to_backend(Errno::from_raw_os_error(n)),
        None => BackendError::Io(e.to_string()),
    }
}

fn ts(t: rustix::fs::StatxTimestamp) -> Timestamp {
    Timestamp {
        secs: t.tv_sec,
        nsecs: t.tv_nsec,
    }
}

fn ftype_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFIFO => FileType::Fifo,
        _ => FileType::Regular,
    }
}

impl LocalDirBackend {
    /// Opens `dir` as an export root.
    pub fn new(dir: &Path) -> BResult<LocalDirBackend> {
        let root_fd = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| BackendError::Io(format!("open export root {}: {e}", dir.display())))?;
        let st = rustix::fs::statx(
            &root_fd,
            "",
            AtFlags::EMPTY_PATH,
            StatxFlags::BASIC_STATS | StatxFlags::BTIME,
        )
        .map_err(|e| BackendError::Io(format!("statx export root {}: {e}", dir.display())))?;
        let has_btime = st.stx_mask & StatxFlags::BTIME.bits() != 0;
        if !has_btime {
            tracing::warn!(
                dir = %dir.display(),
                "filesystem reports no birth time: file handle generations are 0, \
                 inode reuse will not be detected"
            );
        }
        let fsid = ((st.stx_dev_major as u64) << 32) | st.stx_dev_minor as u64;
        let mut b = LocalDirBackend {
            root_fd,
            root: FileId { ino: 0, gen: 0 },
            fsid,
            has_btime,
            is_root_user: rustix::process::geteuid().is_root(),
            names: Mutex::new(HashMap::new()),
            last_rescan: Mutex::new(None),
            files: Mutex::new(HashMap::new()),
        };
        b.root = b.id_of(&st);
        Ok(b)
    }

    pub(crate) fn id_of(&self, st: &Statx) -> FileId {
        let gen = if self.has_btime {
            (st.stx_btime.tv_sec as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(st.stx_btime.tv_nsec as u64)
        } else {
            0
        };
        FileId {
            ino: st.stx_ino,
            gen,
        }
    }

    pub(crate) fn attr_of(&self, st: &Statx) -> Attr {
        let mode = st.stx_mode as u32;
        Attr {
            ftype: ftype_of(mode),
            mode: mode & 0o7777,
            nlink: st.stx_nlink,
            uid: st.stx_uid,
            gid: st.stx_gid,
            size: st.stx_size,
            used: st.stx_blocks.saturating_mul(512),
            rdev: (st.stx_rdev_major, st.stx_rdev_minor),
            fsid: self.fsid,
            fileid: st.stx_ino,
            atime: ts(st.stx_atime),
            mtime: ts(st.stx_mtime),
            ctime: ts(st.stx_ctime),
        }
    }

    pub(crate) fn root_fd(&self) -> &OwnedFd {
        &self.root_fd
    }

    pub(crate) fn is_root_user(&self) -> bool {
        self.is_root_user
    }

    /// statx of `name` in `dir` without following a final symlink.
    pub(crate) fn stat_at<Fd: AsFd>(&self, dir: Fd, name: &[u8]) -> BResult<Statx> {
        rustix::fs::statx(
            dir,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS | StatxFlags::BTIME,
        )
        .map_err(errno_to_backend)
    }

    pub(crate) fn stat_fd<Fd: AsFd>(&self, fd: Fd) -> BResult<Statx> {
        rustix::fs::statx(
            fd,
            "",
            AtFlags::EMPTY_PATH,
            StatxFlags::BASIC_STATS | StatxFlags::BTIME,
        )
        .map_err(errno_to_backend)
    }

    /// Records that `ino` (generation `gen`) is `name` in directory `parent`.
    pub(crate) fn remember(&self, parent: u64, name: &[u8], id: FileId) {
        if id.ino == self.root.ino {
            return;
        }
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names.insert(
            id.ino,
            NameEntry {
                parent,
                name: name.to_vec(),
                gen: id.gen,
            },
        );
    }

    /// Forgets `ino` if the map says it is `name` in `parent`.
    pub(crate) fn forget(&self, parent: u64, name: &[u8]) {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names.retain(|_, e| !(e.parent == parent && e.name == name));
    }

    pub(crate) fn forget_file(&self, ino: u64) {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files.retain(|k, _| k.ino != ino);
    }

    /// Path components from the root to `ino`, from the name map.
    fn path_of(&self, ino: u64) -> Option<(Vec<Vec<u8>>, u64)> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let mut comps = Vec::new();
        let mut cur = ino;
        let gen = names.get(&ino)?.gen;
        while cur != self.root.ino {
            let e = names.get(&cur)?;
            comps.push(e.name.clone());
            cur = e.parent;
            if comps.len() > 4096 {
                return None; // a cycle from concurrent renames; rescan
            }
        }
        comps.reverse();
        Some((comps, gen))
    }

    /// Opens a directory of the export by its relative path components,
    /// never leaving the export, following no symlink, crossing no mount.
    pub(crate) fn open_dir_path(&self, comps: &[Vec<u8>]) -> BResult<OwnedFd> {
        let mut path = Vec::new();
        for (i, c) in comps.iter().enumerate() {
            if i > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(c);
        }
        if path.is_empty() {
            path.push(b'.');
        }
        rustix::fs::openat2(
            &self.root_fd,
            &path[..],
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::BENEATH
                | ResolveFlags::NO_SYMLINKS
                | ResolveFlags::NO_MAGICLINKS
                | ResolveFlags::NO_XDEV,
        )
        .map_err(errno_to_backend)
    }

    fn try_locate(&self, id: FileId) -> Option<(Loc, Statx)> {
        if id.ino == self.root.ino {
            let st = self.stat_fd(&self.root_fd).ok()?;
            return Some((Loc::Root, st));
        }
        let (mut comps, gen) = self.path_of(id.ino)?;
        if gen != id.gen {
            return None;
        }
        let name = comps.pop()?;
        let dir = self.open_dir_path(&comps).ok()?;
        let st = self.stat_at(&dir, &name).ok()?;
        if self.id_of(&st) != id {
            return None;
        }
        Some((Loc::In { dir, name }, st))
    }

    /// Finds object `id`; STALE if it does not exist (any more).
    pub(crate) fn locate(&self, id: FileId) -> BResult<(Loc, Statx)> {
        if id.ino == self.root.ino {
            if id.gen != self.root.gen {
                return Err(BackendError::Stale {
                    ino: id.ino,
                    gen: id.gen,
                });
            }
            let st = self.stat_fd(&self.root_fd)?;
            return Ok((Loc::Root, st));
        }
        if let Some(found) = self.try_locate(id) {
            return Ok(found);
        }
        if self.rescan() {
            if let Some(found) = self.try_locate(id) {
                return Ok(found);
            }
        }
        Err(BackendError::Stale {
            ino: id.ino,
            gen: id.gen,
        })
    }

    /// Opens directory `id` (O_PATH) for `*at` calls, checking it is one.
    pub(crate) fn open_dir(&self, id: FileId) -> BResult<OwnedFd> {
        let (loc, st) = self.locate(id)?;
        if ftype_of(st.stx_mode as u32) != FileType::Directory {
            return Err(BackendError::NotDir);
        }
        match loc {
            Loc::Root => rustix::io::dup(&self.root_fd).map_err(errno_to_backend),
            Loc::In { dir, name } => rustix::fs::openat(
                &dir,
                &name[..],
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno_to_backend),
        }
    }

    /// An open regular file for READ/WRITE (cached).
    pub(crate) fn open_file(&self, id: FileId) -> BResult<Arc<File>> {
        if let Some(f) = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
        {
            // An unlinked file keeps its fd alive; treat it as gone.
            match self.stat_fd(f.as_fd()) {
                Ok(st) if st.stx_nlink > 0 => return Ok(f),
                _ => self.forget_file(id.ino),
            }
        }
        let (loc, st) = self.locate(id)?;
        match ftype_of(st.stx_mode as u32) {
            FileType::Regular => {}
            FileType::Directory => return Err(BackendError::IsDir),
            _ => return Err(BackendError::Inval("not a regular file".into())),
        }
        let Loc::In { dir, name } = loc else {
            return Err(BackendError::IsDir);
        };
        let flags = OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = rustix::fs::openat(&dir, &name[..], flags | OFlags::RDWR, Mode::empty())
            .or_else(|_| rustix::fs::openat(&dir, &name[..], flags | OFlags::RDONLY, Mode::empty()))
            .map_err(errno_to_backend)?;
        // The name could have been replaced between stat and open.
        if self.id_of(&self.stat_fd(&fd)?) != id {
            return Err(BackendError::Stale {
                ino: id.ino,
                gen: id.gen,
            });
        }
        let f = Arc::new(File::from(fd));
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if files.len() >= FD_CACHE_MAX {
            if let Some(k) = files.keys().next().copied() {
                files.remove(&k);
            }
        }
        files.insert(id, f.clone());
        Ok(f)
    }

    /// Walks the whole export tree to rebuild the name map. Returns false
    /// if a walk ran too recently.
    fn rescan(&self) -> bool {
        {
            let mut last = self.last_rescan.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = *last {
                if t.elapsed() < RESCAN_INTERVAL {
                    return false;
                }
            }
            *last = Some(Instant::now());
        }
        let mut found: HashMap<u64, NameEntry> = HashMap::new();
        // (directory ino, its path components)
        let mut stack: Vec<(u64, Vec<Vec<u8>>)> = vec![(self.root.ino, Vec::new())];
        while let Some((dino, comps)) = stack.pop() {
            let Ok(pfd) = self.open_dir_path(&comps) else {
                continue;
            };
            let Ok(dfd) = rustix::fs::openat(
                &pfd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ) else {
                continue;
            };
            let Ok(mut dir) = rustix::fs::Dir::new(dfd) else {
                continue;
            };
            while let Some(Ok(ent)) = dir.read() {
                let name = ent.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let Ok(st) = self.stat_at(&pfd, name) else {
                    continue;
                };
                let id = self.id_of(&st);
                found.entry(id.ino).or_insert(NameEntry {
                    parent: dino,
                    name: name.to_vec(),
                    gen: id.gen,
                });
                if ftype_of(st.stx_mode as u32) == FileType::Directory
                    && st.stx_dev_major == (self.fsid >> 32) as u32
                    && st.stx_dev_minor == self.fsid as u32
                {
                    let mut c = comps.clone();
                    c.push(name.to_vec());
                    stack.push((id.ino, c));
                }
            }
        }
        tracing::debug!(entries = found.len(), "rescanned export tree");
        *self.names.lock().unwrap_or_else(|p| p.into_inner()) = found;
        true
    }

    /// The name-map parent of `ino` (root for unknown).
    pub(crate) fn parent_of(&self, ino: u64) -> Option<(u64, u64)> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let e = names.get(&ino)?;
        if e.parent == self.root.ino {
            return Some((self.root.ino, self.root.gen));
        }
        let gen = names.get(&e.parent)?.gen;
        Some((e.parent, gen))
    }

    pub(crate) fn root_id(&self) -> FileId {
        self.root
    }
}

//! `VmfsBackend`: exports a vmfs datastore, the gateway being itself a vmfs
//! host (see `docs/nfs.md`).
//!
//! * **Identity.** `FileId { ino, gen }` is the inode number and the
//!   inode's generation (bumped each time the number is reused), both on
//!   disk, so handles survive gateway restarts. A handle whose inode is
//!   free, unlinked (nlink 0), never allocated or of another generation is
//!   [`BackendError::Stale`]. The NFS `fileid` is the inode number.
//! * **Locks.** Reads and writes go through `vmfs::fs::Fs` file handles,
//!   which hold the inode lock (EXCLUSIVE for write, SHARED_READ for read).
//!   NFS has no open/close, so [`open_files::OpenFiles`] keeps them and
//!   closes them after an idle period and at shutdown.
//! * **Errors.** [`backend_error`] maps every `FsError`.

mod host;
mod open_files;
mod ops;

use std::time::Duration;

use vmfs::fs::{Attr as FsAttr, Fs, FsError};

use crate::backend::{Attr, BResult, BackendError, FileId, FileType, Timestamp};

pub use host::{load_host_id, JoinError, VmfsHost};
pub use open_files::OpenFiles;

/// Default time a file handle the gateway opened for NFS stays open after
/// its last READ/WRITE (another host can open the file for write after it).
pub const DEFAULT_IDLE_CLOSE: Duration = Duration::from_secs(3);

/// Maps a filesystem error onto the backend's errors (and so onto an
/// `nfsstat3`, see `nfs3::status_of`).
pub fn backend_error(e: FsError) -> BackendError {
    use vmfs::cluster::ClusterError;
    match e {
        FsError::NotFound(_) => BackendError::NoEnt,
        FsError::Exists(_) => BackendError::Exist,
        FsError::NotEmpty(_) => BackendError::NotEmpty,
        FsError::IsDir(_) => BackendError::IsDir,
        FsError::NotDir(_) => BackendError::NotDir,
        FsError::NameTooLong(_) => BackendError::NameTooLong,
        // Fs reports EBUSY when the inode lock is held by another host (a
        // file open for write there, or open at all for unlink/rename).
        FsError::Busy { ino, why } => BackendError::LockedByOtherHost {
            holder: format!("inode {ino}: {why}"),
        },
        FsError::NoSpace(_) => BackendError::NoSpace,
        FsError::Invalid(s) => BackendError::Inval(s),
        FsError::TooBig(_) => BackendError::FileTooBig,
        FsError::NotPermitted(_) => BackendError::Perm,
        // Extended-attribute errors: NFSv3 has no xattr procedures, so these
        // cannot follow from a request; say what happened if one ever does.
        e @ (FsError::NoAttr { .. }
        | FsError::NotSupported(_)
        | FsError::Range(_)
        | FsError::ArgTooBig(_)) => BackendError::Inval(e.to_string()),
        // Removed (by another host) since the handle was made; callers that
        // know the handle's generation put it in (ops.rs).
        FsError::Stale(ino) => BackendError::Stale { ino, gen: 0 },
        // An Fs handle the gateway itself lost: an internal error.
        e @ FsError::BadHandle(_) => BackendError::Io(e.to_string()),
        FsError::Cluster(c) => match c {
            // Lock contention or a dead host's lock not yet broken: retry.
            ClusterError::Busy { .. } | ClusterError::Timeout { .. } => {
                BackendError::Busy(c.to_string())
            }
            // A fenced host must not write: the volume is read-only to us.
            ClusterError::Fenced(_) => BackendError::ReadOnly,
            other => {
                tracing::warn!(error = %other, "vmfs cluster error");
                BackendError::Io(other.to_string())
            }
        },
        e @ (FsError::Corrupt { .. } | FsError::Format(_) | FsError::Device(_)) => {
            tracing::warn!(error = %e, "vmfs I/O error");
            BackendError::Io(e.to_string())
        }
    }
}

/// Like [`backend_error`], for operations that only read the namespace
/// (LOOKUP, READDIR): a directory another host keeps changing under its
/// lock is a reason to retry (NFS3ERR_JUKEBOX), not a refusal — unlike a
/// file another host holds open, which stays refused (NFS3ERR_ACCES).
pub(crate) fn read_error(e: FsError) -> BackendError {
    match e {
        FsError::Busy { ino, why } => BackendError::Busy(format!("inode {ino}: {why}")),
        e => backend_error(e),
    }
}

fn timestamp(ns: i64) -> Timestamp {
    Timestamp {
        secs: ns.div_euclid(1_000_000_000),
        nsecs: ns.rem_euclid(1_000_000_000) as u32,
    }
}

/// Nanoseconds since the epoch of a timestamp (saturating).
pub(crate) fn nanos(t: Timestamp) -> i64 {
    t.secs
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(t.nsecs.min(999_999_999)))
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

/// The identity of an inode as the NFS layer sees it.
pub(crate) fn id_of(a: &FsAttr) -> FileId {
    FileId {
        ino: a.ino,
        gen: a.generation,
    }
}

/// NFS attributes of an inode.
pub(crate) fn attr_of(a: &FsAttr, fsid: u64) -> Attr {
    Attr {
        ftype: ftype_of(a.mode),
        mode: a.mode & 0o7777,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        used: a.allocated,
        rdev: (0, 0),
        fsid,
        fileid: a.ino,
        atime: timestamp(a.atime_ns),
        mtime: timestamp(a.mtime_ns),
        ctime: timestamp(a.ctime_ns),
    }
}

/// Reads (of objects another host may be changing) tried this many times.
const TORN_TRIES: u32 = 20;

/// Runs a read-only filesystem call, again when it fails on a block that
/// does not verify. `Fs` reads inodes that are not open here without a
/// lock, so another host's in-place rewrite of one can be read half-done
/// (a checksum mismatch); it settles within the writer's one operation.
/// Other decode errors (a never-used inode reads as zeros: bad magic) are
/// final.
pub(crate) fn settled<T>(mut f: impl FnMut() -> vmfs::fs::FsResult<T>) -> vmfs::fs::FsResult<T> {
    let mut tries = 1;
    loop {
        match f() {
            Err(FsError::Format(vmfs::format::FormatError::BadChecksum { .. }))
                if tries < TORN_TRIES =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(u64::from(tries)));
            }
            r => return r,
        }
    }
}

/// Attributes of `id` if it still names a live inode of that generation.
pub(crate) fn live_attr(fs: &Fs, id: FileId) -> BResult<FsAttr> {
    let stale = BackendError::Stale {
        ino: id.ino,
        gen: id.gen,
    };
    match settled(|| fs.getattr(id.ino)) {
        Ok(a) if a.generation == id.gen && a.nlink > 0 => Ok(a),
        Ok(_) => Err(stale),
        // Out of range, or a body that never held an inode (zeroed, not
        // decodable): no such object, so the handle is stale.
        Err(FsError::NotFound(_) | FsError::Format(_)) => Err(stale),
        Err(e) => Err(backend_error(e)),
    }
}

/// Exports one mounted vmfs filesystem.
pub struct VmfsBackend {
    fs: Fs,
    root: FileId,
    fsid: u64,
    label: String,
    max_file_size: u64,
    /// File block size.
    block_size: u64,
    files: std::sync::Arc<OpenFiles>,
}

impl VmfsBackend {
    /// A backend over a mounted filesystem. Handles opened for NFS are
    /// closed after `idle_close` without use (and by [`VmfsBackend::close_all`]).
    pub fn new(fs: Fs, idle_close: Duration) -> BResult<VmfsBackend> {
        let root_attr = fs.getattr(fs.root()).map_err(backend_error)?;
        let header = &fs.host().volume().header;
        let uuid = header.uuid;
        let fsid = u64::from_le_bytes(uuid[..8].try_into().expect("8 bytes"))
            ^ u64::from_le_bytes(uuid[8..].try_into().expect("8 bytes"));
        let max_file_size = max_file_size(header);
        let label = header.label.clone();
        let block_size = u64::from(
            header
                .region(vmfs::format::ResourceKind::FileBlock)
                .resource_size,
        );
        let files = OpenFiles::start(fs.clone(), idle_close);
        Ok(VmfsBackend {
            root: id_of(&root_attr),
            fs,
            fsid,
            label,
            max_file_size,
            block_size,
            files,
        })
    }

    /// The volume label (the export is `/` + label).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The mounted filesystem.
    pub fn fs(&self) -> &Fs {
        &self.fs
    }

    /// Handles currently open for NFS (tests, diagnostics).
    pub fn open_handles(&self) -> usize {
        self.files.len()
    }

    /// Syncs and closes every handle opened for NFS, releasing their inode
    /// locks (at shutdown, before `Fs::unmount`). Later calls reopen.
    pub fn close_all(&self) -> Result<(), String> {
        self.files.close_all()
    }
}

impl Drop for VmfsBackend {
    fn drop(&mut self) {
        self.files.stop();
    }
}

/// Largest file the block map can address (capped at `i64::MAX`).
fn max_file_size(h: &vmfs::format::Header) -> u64 {
    use vmfs::format::inode::DIRECT;
    use vmfs::format::ResourceKind;
    let ptr = vmfs::format::pointer::entries_per_block(
        h.region(ResourceKind::PointerBlock).resource_size,
    );
    let bs = u64::from(h.region(ResourceKind::FileBlock).resource_size);
    let blocks = (DIRECT as u64)
        .saturating_add(ptr)
        .saturating_add(ptr.saturating_mul(ptr));
    blocks.saturating_mul(bs).min(i64::MAX as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        for ns in [
            0i64,
            1,
            999_999_999,
            1_000_000_000,
            -1,
            1_700_000_000_123_456_789,
        ] {
            assert_eq!(nanos(timestamp(ns)), ns);
        }
    }

    #[test]
    fn torn_reads_are_retried_then_reported() {
        let torn = || {
            FsError::Format(vmfs::format::FormatError::BadChecksum {
                kind: "inode",
                addr: 4096,
                stored: 1,
                computed: 2,
            })
        };
        let mut n = 0;
        let r = settled(|| {
            n += 1;
            if n < 3 {
                Err(torn())
            } else {
                Ok(n)
            }
        });
        assert_eq!(r.unwrap(), 3);
        let mut n = 0;
        let r: vmfs::fs::FsResult<()> = settled(|| {
            n += 1;
            Err(torn())
        });
        assert!(matches!(r, Err(FsError::Format(_))));
        assert_eq!(n, TORN_TRIES);
        // Other errors are not retried.
        let mut n = 0;
        let r: vmfs::fs::FsResult<()> = settled(|| {
            n += 1;
            Err(FsError::NotFound("x".into()))
        });
        assert!(r.is_err());
        assert_eq!(n, 1);
    }

    #[test]
    fn errors_map() {
        assert_eq!(
            backend_error(FsError::NotFound("x".into())),
            BackendError::NoEnt
        );
        assert!(matches!(
            backend_error(FsError::Busy {
                ino: 5,
                why: "open on another host".into()
            }),
            BackendError::LockedByOtherHost { .. }
        ));
        assert_eq!(
            backend_error(FsError::NameTooLong(300)),
            BackendError::NameTooLong
        );
        assert_eq!(backend_error(FsError::NotEmpty(3)), BackendError::NotEmpty);
        assert_eq!(
            backend_error(FsError::NoSpace("full".into())),
            BackendError::NoSpace
        );
    }
}

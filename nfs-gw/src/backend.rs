//! The filesystem a gateway export serves: the [`Backend`] trait.
//!
//! The NFS layer (`nfs3`, `mount`) speaks the wire protocol; a backend only
//! answers POSIX-shaped questions about objects named by a [`FileId`]
//! (inode number + generation). Two implementations are intended:
//!
//! * [`crate::local::LocalDirBackend`] — a directory of the local
//!   filesystem (tests, benchmarks, and until the vmfs backend lands);
//! * the vmfs filesystem backend — the gateway is then itself a vmfs host
//!   (it owns a heartbeat slot) and every call below maps onto the vmfs
//!   filesystem API, taking vmfs locks as that API requires.
//!
//! # Contract
//!
//! * **Identity.** A [`FileId`] names one object for its whole life. When the
//!   object is deleted and its inode number reused, the generation must
//!   differ, and any call with the old `FileId` must return
//!   [`BackendError::Stale`]. File handles given to NFS clients are built
//!   from `FileId`s, so they must stay valid across gateway restarts as long
//!   as the object exists (NFSv3 handles are persistent).
//! * **Names.** Every name a backend receives is a [`Name`]: 1..=255 bytes,
//!   no `/`, no NUL, never `.` or `..`. The NFS layer resolves `.` and `..`
//!   itself (`..` through [`Backend::parent`], clamped at the export root),
//!   so a backend never has to defend against path escapes in names.
//! * **Permissions.** The NFS layer checks permissions (see [`access_bits`])
//!   against the attributes a backend reports, before calling a mutating
//!   method, with the caller's (possibly root-squashed) credentials. A
//!   backend performs the operation with its own authority, and sets the
//!   owner of new objects to the [`Caller`] it is given. A backend may refuse
//!   more than the mode bits say (override [`Backend::access`]), e.g. a
//!   vmfs file held open exclusively by another host.
//! * **Locks held by other hosts.** A vmfs backend returns
//!   [`BackendError::LockedByOtherHost`] when the object is held EXCLUSIVE by
//!   another live host (a running VM's disk), and [`BackendError::Busy`] when
//!   a lock is only transiently unavailable (contention, a dead host's lock
//!   being broken). See `nfs3::status_of` for the wire mapping and its
//!   rationale. Never succeed silently on a write the backend did not make.
//! * **Blocking.** Methods block; the server calls them from blocking worker
//!   threads. Implementations must be `Send + Sync` and safe under
//!   concurrent calls (two clients, or one client with many requests in
//!   flight).
//! * **Errors** never panic on bad input: any id, offset or length can come
//!   from a hostile client.

use std::fmt;
use thiserror::Error;

/// The identity of one filesystem object: inode number and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub ino: u64,
    pub gen: u64,
}

/// Object type (NFSv3 `ftype3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    Regular = 1,
    Directory = 2,
    BlockDevice = 3,
    CharDevice = 4,
    Symlink = 5,
    Socket = 6,
    Fifo = 7,
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nsecs: u32,
}

/// Attributes of an object (the content of NFSv3 `fattr3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ftype: FileType,
    /// Permission bits and set-id/sticky bits (`0o7777`); no type bits.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// Logical size in bytes.
    pub size: u64,
    /// Bytes actually allocated (thin files report less than `size`).
    pub used: u64,
    /// Device numbers, for block and character devices.
    pub rdev: (u32, u32),
    /// Filesystem identifier (the same for every object of one export).
    pub fsid: u64,
    /// Inode number (NFS `fileid`).
    pub fileid: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
}

/// How a time attribute is to be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetTime {
    #[default]
    DontChange,
    ServerNow,
    Client(Timestamp),
}

/// Attributes to change (NFSv3 `sattr3`); `None` leaves a field alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Truncate or extend to this size (regular files only).
    pub size: Option<u64>,
    pub atime: SetTime,
    pub mtime: SetTime,
}

/// The caller on whose behalf an object is created (owner of new objects),
/// and whose rights [`access_bits`] evaluates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
}

/// Durability requested of / achieved by a WRITE (NFSv3 `stable_how`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StableHow {
    /// May sit in server memory until COMMIT.
    Unstable = 0,
    /// Data (and metadata needed to read it back) on stable storage.
    DataSync = 1,
    /// Data and all metadata on stable storage.
    FileSync = 2,
}

/// How CREATE treats an existing name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateHow {
    /// Create or, if it exists, open it (and apply `size` if given).
    Unchecked(SetAttr),
    /// Fail with [`BackendError::Exist`] if the name exists.
    Guarded(SetAttr),
    /// Exclusive create: the 8-byte verifier is stored with the new file;
    /// a retransmitted CREATE with the same verifier finds the file and
    /// succeeds, a different verifier gets [`BackendError::Exist`]. The
    /// client follows up with SETATTR to set real attributes.
    Exclusive([u8; 8]),
}

/// A special file for MKNOD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialNode {
    Char(u32, u32),
    Block(u32, u32),
    Socket,
    Fifo,
}

/// A validated directory entry name: 1..=255 bytes, no `/`, no NUL,
/// not `.` or `..`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Name(Vec<u8>);

/// Longest name accepted (NFS `name_max` we advertise).
pub const NAME_MAX: usize = 255;

/// Why a byte string is not a usable [`Name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    /// Contains `/` or NUL.
    BadChar,
    /// `.` or `..`.
    Dot,
}

impl Name {
    pub fn new(bytes: &[u8]) -> Result<Name, NameError> {
        if bytes.is_empty() {
            return Err(NameError::Empty);
        }
        if bytes.len() > NAME_MAX {
            return Err(NameError::TooLong);
        }
        if bytes.iter().any(|&b| b == b'/' || b == 0) {
            return Err(NameError::BadChar);
        }
        if bytes == b"." || bytes == b".." {
            return Err(NameError::Dot);
        }
        Ok(Name(bytes.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// One READDIR entry.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub fileid: u64,
    pub name: Vec<u8>,
    /// Opaque position *after* this entry; passing it back resumes there.
    pub cookie: u64,
    /// Identity and attributes, when asked for (READDIRPLUS). `None` for
    /// entries that vanished between listing and stat, or for `..` of the
    /// export root when the backend prefers not to expose it.
    pub plus: Option<(FileId, Attr)>,
}

/// Result of [`Backend::readdir`].
#[derive(Debug, Clone)]
pub struct ReadDir {
    pub entries: Vec<DirEntry>,
    /// The cookie verifier for this listing; returned to the client and
    /// presented back with every non-zero cookie.
    pub verifier: u64,
    pub eof: bool,
}

/// Space and file counts (NFSv3 FSSTAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStat {
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Free bytes available to the caller (non-root).
    pub avail_bytes: u64,
    pub total_files: u64,
    pub free_files: u64,
    pub avail_files: u64,
}

/// Static properties of the filesystem (FSINFO / PATHCONF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsProperties {
    pub max_file_size: u64,
    /// Granularity of stored times.
    pub time_delta: Timestamp,
    pub link_max: u32,
    pub name_max: u32,
    pub supports_hard_links: bool,
    pub supports_symlinks: bool,
    /// Whether setattr of mode/uid/gid is meaningful on this backend.
    pub chown_restricted: bool,
    pub case_insensitive: bool,
    pub case_preserving: bool,
}

/// Result of a WRITE.
#[derive(Debug, Clone)]
pub struct WriteOk {
    pub count: u32,
    /// What durability was actually achieved (≥ what was asked).
    pub committed: StableHow,
    /// Attributes after the write.
    pub attr: Attr,
}

/// Result of a READ.
#[derive(Debug, Clone)]
pub struct ReadOk {
    pub data: Vec<u8>,
    pub eof: bool,
    pub attr: Attr,
}

/// Errors a backend reports. Each maps to one `nfsstat3` (see
/// `nfs3::status_of`); the payload strings are for logs only.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BackendError {
    #[error("no such file or directory")]
    NoEnt,
    #[error("already exists")]
    Exist,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("no space left")]
    NoSpace,
    #[error("quota exceeded")]
    QuotaExceeded,
    #[error("read-only filesystem")]
    ReadOnly,
    #[error("name too long")]
    NameTooLong,
    #[error("stale file handle (inode {ino} generation {gen})")]
    Stale { ino: u64, gen: u64 },
    #[error("malformed file handle")]
    BadHandle,
    #[error("permission denied")]
    Access,
    #[error("operation not permitted")]
    Perm,
    #[error("file too big")]
    FileTooBig,
    #[error("invalid argument: {0}")]
    Inval(String),
    #[error("too many links")]
    TooManyLinks,
    #[error("cross-device link")]
    CrossDevice,
    #[error("operation not supported: {0}")]
    NotSupported(&'static str),
    #[error("readdir cookie verifier no longer valid")]
    BadCookie,
    #[error("setattr guard: ctime changed")]
    NotSync,
    /// Transiently unavailable (lock contention, a dead host's lock being
    /// broken): the client should retry later.
    #[error("busy, retry later: {0}")]
    Busy(String),
    /// Held EXCLUSIVE by another live vmfs host (e.g. a running VM's disk).
    #[error("locked by another host: {holder}")]
    LockedByOtherHost { holder: String },
    #[error("I/O error: {0}")]
    Io(String),
}

pub type BResult<T> = Result<T, BackendError>;

/// ACCESS bits (NFSv3 `ACCESS3_*`).
pub mod access {
    pub const READ: u32 = 0x01;
    pub const LOOKUP: u32 = 0x02;
    pub const MODIFY: u32 = 0x04;
    pub const EXTEND: u32 = 0x08;
    pub const DELETE: u32 = 0x10;
    pub const EXECUTE: u32 = 0x20;
    pub const ALL: u32 = 0x3f;
}

/// The subset of `want` (ACCESS3 bits) the mode bits of `attr` grant to
/// `caller`. uid 0 is granted everything except EXECUTE on a regular file
/// with no execute bit at all (POSIX root semantics). Root squashing has
/// already been applied to `caller` by the NFS layer.
pub fn access_bits(attr: &Attr, caller: &Caller, want: u32) -> u32 {
    let is_dir = attr.ftype == FileType::Directory;
    if caller.uid == 0 {
        let mut ok = want;
        if !is_dir && attr.mode & 0o111 == 0 {
            ok &= !access::EXECUTE;
        }
        return ok;
    }
    let class = if caller.uid == attr.uid {
        (attr.mode >> 6) & 7
    } else if caller.gid == attr.gid || caller.gids.contains(&attr.gid) {
        (attr.mode >> 3) & 7
    } else {
        attr.mode & 7
    };
    let mut ok = 0;
    if class & 4 != 0 {
        ok |= access::READ;
    }
    if class & 2 != 0 {
        ok |= access::MODIFY | access::EXTEND;
        if is_dir {
            ok |= access::DELETE;
        }
    }
    if class & 1 != 0 {
        ok |= if is_dir {
            access::LOOKUP
        } else {
            access::EXECUTE
        };
    }
    ok & want
}

/// A filesystem exported through the gateway. See the module docs for the
/// contract every method follows.
pub trait Backend: Send + Sync + 'static {
    /// The export's root directory.
    fn root(&self) -> FileId;

    /// Attributes of `id`; [`BackendError::Stale`] if it no longer exists.
    fn getattr(&self, id: FileId) -> BResult<Attr>;

    /// Changes attributes. With `guard_ctime`, fails with
    /// [`BackendError::NotSync`] unless the current ctime equals it (checked
    /// atomically with the change where the backend can). Size changes on
    /// a directory are [`BackendError::IsDir`]. Returns the new attributes.
    fn setattr(&self, id: FileId, set: &SetAttr, guard_ctime: Option<Timestamp>) -> BResult<Attr>;

    /// Finds `name` in directory `dir`.
    fn lookup(&self, dir: FileId, name: &Name) -> BResult<(FileId, Attr)>;

    /// The parent of directory `dir` (the root's parent is the root).
    fn parent(&self, dir: FileId) -> BResult<FileId>;

    /// ACCESS3 bits of `want` that `caller` holds on `id`. The default
    /// evaluates the mode bits; a backend may take more away (never add).
    fn access(&self, id: FileId, caller: &Caller, want: u32) -> BResult<(u32, Attr)> {
        let attr = self.getattr(id)?;
        Ok((access_bits(&attr, caller, want), attr))
    }

    /// Target of symlink `id`.
    fn readlink(&self, id: FileId) -> BResult<Vec<u8>>;

    /// Reads up to `count` bytes at `offset` from regular file `id`.
    fn read(&self, id: FileId, offset: u64, count: u32) -> BResult<ReadOk>;

    /// Writes `data` at `offset`. With [`StableHow::Unstable`] the data may
    /// stay in volatile memory until [`Backend::commit`]; otherwise it must
    /// be durable before returning.
    fn write(&self, id: FileId, offset: u64, data: &[u8], stable: StableHow) -> BResult<WriteOk>;

    /// Makes all earlier unstable writes to `id` in the range durable
    /// (`count == 0` means to end of file).
    fn commit(&self, id: FileId, offset: u64, count: u32) -> BResult<Attr>;

    /// Creates a regular file.
    fn create(
        &self,
        dir: FileId,
        name: &Name,
        how: CreateHow,
        caller: &Caller,
    ) -> BResult<(FileId, Attr)>;

    fn mkdir(
        &self,
        dir: FileId,
        name: &Name,
        set: &SetAttr,
        caller: &Caller,
    ) -> BResult<(FileId, Attr)>;

    fn symlink(
        &self,
        dir: FileId,
        name: &Name,
        target: &[u8],
        set: &SetAttr,
        caller: &Caller,
    ) -> BResult<(FileId, Attr)>;

    /// Creates a device, socket or FIFO; may return
    /// [`BackendError::NotSupported`].
    fn mknod(
        &self,
        dir: FileId,
        name: &Name,
        node: SpecialNode,
        set: &SetAttr,
        caller: &Caller,
    ) -> BResult<(FileId, Attr)>;

    /// Removes a non-directory entry.
    fn remove(&self, dir: FileId, name: &Name) -> BResult<()>;

    /// Removes an empty directory.
    fn rmdir(&self, dir: FileId, name: &Name) -> BResult<()>;

    /// Renames, replacing a compatible target atomically (POSIX rename).
    fn rename(&self, from_dir: FileId, from: &Name, to_dir: FileId, to: &Name) -> BResult<()>;

    /// Makes a new hard link `dir/name` to `file`.
    fn link(&self, file: FileId, dir: FileId, name: &Name) -> BResult<()>;

    /// Lists `dir` from `cookie` (0 = start). A non-zero cookie comes with
    /// the verifier of the listing that produced it; if the backend can no
    /// longer honour it, [`BackendError::BadCookie`]. Returns at most
    /// `max_entries` entries (`.` and `..` included, resolved by the
    /// backend like any entry), with attributes when `plus`.
    fn readdir(
        &self,
        dir: FileId,
        cookie: u64,
        verifier: u64,
        max_entries: usize,
        plus: bool,
    ) -> BResult<ReadDir>;

    /// Space and file counts of the filesystem holding `id`.
    fn fsstat(&self, id: FileId) -> BResult<FsStat>;

    /// Static properties (FSINFO / PATHCONF).
    fn properties(&self) -> FsProperties;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(Name::new(b"ok.txt").is_ok());
        assert_eq!(Name::new(b"").unwrap_err(), NameError::Empty);
        assert_eq!(Name::new(b".").unwrap_err(), NameError::Dot);
        assert_eq!(Name::new(b"..").unwrap_err(), NameError::Dot);
        assert_eq!(Name::new(b"a/b").unwrap_err(), NameError::BadChar);
        assert_eq!(Name::new(b"a\0b").unwrap_err(), NameError::BadChar);
        assert_eq!(Name::new(&[b'x'; 256]).unwrap_err(), NameError::TooLong);
        assert!(Name::new(&[b'x'; 255]).is_ok());
    }

    fn attr(ftype: FileType, mode: u32) -> Attr {
        Attr {
            ftype,
            mode,
            nlink: 1,
            uid: 10,
            gid: 20,
            size: 0,
            used: 0,
            rdev: (0, 0),
            fsid: 0,
            fileid: 1,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
        }
    }

    #[test]
    fn access_from_mode_bits() {
        let owner = Caller {
            uid: 10,
            gid: 99,
            gids: vec![],
        };
        let group = Caller {
            uid: 11,
            gid: 1,
            gids: vec![20],
        };
        let other = Caller {
            uid: 12,
            gid: 1,
            gids: vec![],
        };
        let root = Caller {
            uid: 0,
            gid: 0,
            gids: vec![],
        };
        let f = attr(FileType::Regular, 0o640);
        assert_eq!(
            access_bits(&f, &owner, access::ALL),
            access::READ | access::MODIFY | access::EXTEND
        );
        assert_eq!(access_bits(&f, &group, access::ALL), access::READ);
        assert_eq!(access_bits(&f, &other, access::ALL), 0);
        assert_eq!(
            access_bits(&f, &root, access::ALL),
            access::ALL & !access::EXECUTE
        );
        let d = attr(FileType::Directory, 0o755);
        assert_eq!(
            access_bits(&d, &other, access::ALL),
            access::READ | access::LOOKUP
        );
        assert_eq!(
            access_bits(&d, &owner, access::DELETE | access::LOOKUP),
            access::DELETE | access::LOOKUP
        );
    }
}

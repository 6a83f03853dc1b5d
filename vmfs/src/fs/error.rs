//! Filesystem errors: each names what it concerns and maps to one errno.

use crate::cluster::ClusterError;
use crate::dev::DevError;
use crate::format::FormatError;

/// Why a filesystem operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("{0}: already exists")]
    Exists(String),
    #[error("directory inode {0} is not empty")]
    NotEmpty(u64),
    #[error("inode {0} is a directory")]
    IsDir(u64),
    #[error("inode {0} is not a directory")]
    NotDir(u64),
    #[error("name of {0} bytes is too long (at most 255)")]
    NameTooLong(usize),
    #[error("inode {ino} is busy: {why}")]
    Busy { ino: u64, why: String },
    #[error("no space left on the volume: {0}")]
    NoSpace(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("file too large: {0}")]
    TooBig(String),
    #[error("operation not permitted: {0}")]
    NotPermitted(String),
    #[error("inode {ino} has no attribute {name}")]
    NoAttr { ino: u64, name: String },
    #[error("not supported: {0}")]
    NotSupported(String),
    #[error("out of range: {0}")]
    Range(String),
    #[error("argument too big: {0}")]
    ArgTooBig(String),
    #[error("bad file handle {0}")]
    BadHandle(u64),
    /// The inode has no name left (removed, possibly by another host, and
    /// perhaps reclaimed) and is not open here: a handle or kernel node
    /// that still names it is stale.
    #[error("inode {0} was removed (stale handle)")]
    Stale(u64),
    #[error("inode {ino}: {why} (run vmfs-fsck)")]
    Corrupt { ino: u64, why: String },
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Device(#[from] DevError),
    #[error(transparent)]
    Cluster(ClusterError),
}

impl From<ClusterError> for FsError {
    fn from(e: ClusterError) -> FsError {
        match e {
            ClusterError::Device(d) => FsError::Device(d),
            ClusterError::Corrupt(f) => FsError::Format(f),
            other => FsError::Cluster(other),
        }
    }
}

impl FsError {
    /// The errno a POSIX front end (FUSE, NFS) reports.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound(_) => libc::ENOENT,
            FsError::Exists(_) => libc::EEXIST,
            FsError::NotEmpty(_) => libc::ENOTEMPTY,
            FsError::IsDir(_) => libc::EISDIR,
            FsError::NotDir(_) => libc::ENOTDIR,
            FsError::NameTooLong(_) => libc::ENAMETOOLONG,
            FsError::Busy { .. } => libc::EBUSY,
            FsError::NoSpace(_) => libc::ENOSPC,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::TooBig(_) => libc::EFBIG,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::BadHandle(_) => libc::EBADF,
            FsError::Stale(_) => libc::ESTALE,
            FsError::NoAttr { .. } => libc::ENODATA,
            FsError::NotSupported(_) => libc::EOPNOTSUPP,
            FsError::Range(_) => libc::ERANGE,
            FsError::ArgTooBig(_) => libc::E2BIG,
            FsError::Corrupt { .. } | FsError::Format(_) | FsError::Device(_) => libc::EIO,
            FsError::Cluster(c) => match c {
                ClusterError::Busy { .. } | ClusterError::Timeout { .. } => libc::EBUSY,
                _ => libc::EIO,
            },
        }
    }
}

/// Result of a filesystem operation.
pub type FsResult<T> = Result<T, FsError>;

//! Errors of the VMDK layer: every one names the file and what was wrong.

use super::descriptor::DescriptorError;

/// What an I/O on an extent or descriptor file was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    Open,
    Create,
    Remove,
    Rename,
    Read,
    Write,
    Size,
    SetSize,
    Allocate,
    PunchHole,
    Sync,
}

impl std::fmt::Display for FileOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            FileOp::Open => "open",
            FileOp::Create => "create",
            FileOp::Remove => "remove",
            FileOp::Rename => "rename",
            FileOp::Read => "read",
            FileOp::Write => "write",
            FileOp::Size => "size",
            FileOp::SetSize => "set-size",
            FileOp::Allocate => "allocate",
            FileOp::PunchHole => "punch-hole",
            FileOp::Sync => "sync",
        };
        f.write_str(s)
    }
}

/// Error of a VMDK operation.
#[derive(Debug, thiserror::Error)]
pub enum VmdkError {
    #[error("{file}: {op} at offset {offset} (+{len} bytes) failed: {source}")]
    Io {
        file: String,
        op: FileOp,
        offset: u64,
        len: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Descriptor {
        file: String,
        #[source]
        source: DescriptorError,
    },
    #[error("{file}: corrupt at byte {offset}: {what}")]
    Corrupt {
        file: String,
        offset: u64,
        what: String,
    },
    #[error("{file}: unsupported: {what}")]
    Unsupported { file: String, what: String },
    #[error("{child}: parentCID {expected:08x} does not match CID {found:08x} of its parent {parent} (the parent changed after the snapshot was taken)")]
    CidMismatch {
        child: String,
        parent: String,
        expected: u32,
        found: u32,
    },
    #[error("{file}: capacity {capacity} bytes differs from its parent {parent} ({parent_capacity} bytes)")]
    CapacityMismatch {
        file: String,
        capacity: u64,
        parent: String,
        parent_capacity: u64,
    },
    #[error("{file}: {op} of {len} bytes at offset {offset} runs past the end of the disk ({capacity} bytes)")]
    OutOfRange {
        file: String,
        op: FileOp,
        offset: u64,
        len: u64,
        capacity: u64,
    },
    #[error("{file}: parent chain {why}")]
    BadChain { file: String, why: String },
    #[error("{file}: opened read-only, {op} refused")]
    ReadOnly { file: String, op: FileOp },
    #[error("invalid argument for {file}: {why}")]
    Invalid { file: String, why: String },
}

impl VmdkError {
    /// An I/O error on `file`.
    pub fn io(file: &str, op: FileOp, offset: u64, len: u64, source: std::io::Error) -> Self {
        VmdkError::Io {
            file: file.to_string(),
            op,
            offset,
            len,
            source,
        }
    }

    /// A structure inside `file` at byte `offset` is not what the format allows.
    pub fn corrupt(file: &str, offset: u64, what: impl Into<String>) -> Self {
        VmdkError::Corrupt {
            file: file.to_string(),
            offset,
            what: what.into(),
        }
    }

    /// A caller-supplied argument for `file` is not acceptable.
    pub fn invalid(file: &str, why: impl Into<String>) -> Self {
        VmdkError::Invalid {
            file: file.to_string(),
            why: why.into(),
        }
    }

    /// `file` uses a feature this module does not implement.
    pub fn unsupported(file: &str, what: impl Into<String>) -> Self {
        VmdkError::Unsupported {
            file: file.to_string(),
            what: what.into(),
        }
    }
}

/// Result of a VMDK operation.
pub type Result<T> = std::result::Result<T, VmdkError>;

//! Errors of virtual disks and swap files: each names the disk (its path
//! inside the volume) and what to do where there is something to do.

use crate::fs::FsError;
use crate::vmdk::VmdkError;

/// Why a disk or swap operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk {path}: {source}")]
    Vmdk {
        path: String,
        #[source]
        source: VmdkError,
    },
    #[error("{path}: {op} failed: {source}")]
    Fs {
        path: String,
        op: &'static str,
        #[source]
        source: FsError,
    },
    #[error("disk {path}: I/O refused: the disk is being handed off to another host (finish or cancel the hand-off)")]
    HandoffPending { path: String },
    #[error("disk {path} was handed off to another host: close it here")]
    HandedOff { path: String },
    #[error("disk {path}: {what}")]
    Unsupported { path: String, what: String },
    #[error("disk {path}: {what}")]
    Invalid { path: String, what: String },
    #[error("disk {path} is closed")]
    Closed { path: String },
    #[error(
        "disk {path}: request aborted (the disk was closed, or its worker failed: see the log)"
    )]
    Aborted { path: String },
}

impl DiskError {
    pub(crate) fn vmdk(path: &str, source: VmdkError) -> DiskError {
        DiskError::Vmdk {
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn fs(path: &str, op: &'static str, source: FsError) -> DiskError {
        DiskError::Fs {
            path: path.to_string(),
            op,
            source,
        }
    }

    /// A filesystem error carried inside an `io::Error` (through the VMDK
    /// traits), if that is what this is.
    pub fn fs_error(&self) -> Option<&FsError> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(f) = e.downcast_ref::<FsError>() {
                return Some(f);
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if let Some(inner) = io.get_ref() {
                    if let Some(f) = inner.downcast_ref::<FsError>() {
                        return Some(f);
                    }
                }
            }
            cur = e.source();
        }
        None
    }

    /// Another host holds the disk (EBUSY somewhere below).
    pub fn is_busy(&self) -> bool {
        self.fs_error().is_some_and(|e| e.errno() == libc::EBUSY)
    }
}

/// Result of a disk operation.
pub type DiskResult<T> = Result<T, DiskError>;

//! Errors of the block-device layer, with the device, operation and range.

use std::fmt;

/// The device operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevOp {
    Open,
    Read,
    Write,
    Flush,
    WriteZeroes,
    Unmap,
    CompareAndWrite,
    Reservation,
}

impl fmt::Display for DevOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            DevOp::Open => "open",
            DevOp::Read => "read",
            DevOp::Write => "write",
            DevOp::Flush => "flush",
            DevOp::WriteZeroes => "write-zeroes",
            DevOp::Unmap => "unmap",
            DevOp::CompareAndWrite => "compare-and-write",
            DevOp::Reservation => "persistent-reservation",
        };
        f.write_str(s)
    }
}

/// Error of a block-device operation.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{device}: {op} at offset {offset} (+{len} bytes) failed: {source}")]
    Io {
        device: String,
        op: DevOp,
        offset: u64,
        len: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{device}: {op} at offset {offset} (+{len} bytes) is not aligned to the {block_size}-byte logical block size")]
    Misaligned {
        device: String,
        op: DevOp,
        offset: u64,
        len: u64,
        block_size: u32,
    },
    #[error("{device}: {op} at offset {offset} (+{len} bytes) runs past the end of the device ({size} bytes)")]
    OutOfRange {
        device: String,
        op: DevOp,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("{device}: compare-and-write buffers differ in length (expected {expected} bytes, new {new} bytes)")]
    CasLength {
        device: String,
        expected: usize,
        new: usize,
    },
    #[error("{device}: {op} is not supported by this device: {why}")]
    Unsupported {
        device: String,
        op: DevOp,
        why: String,
    },
    #[error("{device}: I/O refused: this host is fenced ({why})")]
    Fenced { device: String, why: String },
}

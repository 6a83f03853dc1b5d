//! Errors of the cluster layer (heartbeats, locks, journal, recovery).

use crate::dev::DevError;
use crate::format::{FormatError, Holder};

/// What went wrong, with the slot, lock or journal it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Device(#[from] DevError),
    #[error("corrupt on-disk structure: {0} (the lock protocol will not touch it; run vmfs-fsck)")]
    Corrupt(#[from] FormatError),
    #[error("invalid timeouts: {0}")]
    BadTimeouts(String),
    #[error("another live host with this host UUID is using heartbeat slot {slot}: refusing to mount twice")]
    DuplicateHost { slot: u32 },
    #[error("no free heartbeat slot: all {slots} slots are held by live hosts")]
    NoFreeSlot { slots: u32 },
    #[error("this host is fenced: {0}")]
    Fenced(String),
    #[error("lock at offset {addr} is busy: held {mode} by {holders:?}")]
    Busy {
        addr: u64,
        mode: &'static str,
        holders: Vec<Holder>,
    },
    #[error("lock at offset {addr}: {why}")]
    LockState { addr: u64, why: String },
    #[error("lock at offset {addr} was lost: another host broke it (this host was declared dead)")]
    LockLost { addr: u64 },
    #[error("journal of slot {slot}: {why}")]
    Journal { slot: u32, why: String },
    #[error("timed out after {waited_ms} ms waiting for lock at offset {addr}")]
    Timeout { addr: u64, waited_ms: u64 },
    #[error("compare-and-write at offset {addr} stayed indeterminate after {tries} re-reads")]
    Indeterminate { addr: u64, tries: u32 },
}

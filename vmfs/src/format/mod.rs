//! On-disk format: every structure's encode/decode. Byte layouts are drawn in
//! `docs/format.md`; keep the two in step.
//!
//! Decoding never panics on arbitrary bytes: it returns [`FormatError`].

pub mod addr;
pub mod block;
pub mod cluster;
pub mod header;
pub mod heartbeat_slot;
pub mod inode;
pub mod lock_record;
pub mod orphan;
pub mod pointer;
pub mod xattr;

pub use addr::{BlockAddr, ResourceKind};
pub use cluster::ClusterHeader;
pub use header::{Header, ResourceRegion, TimeoutMinimums};
pub use heartbeat_slot::{HeartbeatSlot, SlotState};
pub use inode::Inode;
pub use lock_record::{Holder, LockMode, LockRecord};
pub use pointer::PointerBlock;

/// Size of a sector: the unit of heartbeat slots, lock records and
/// compare-and-write. Devices with 4 KiB logical blocks are refused by mkfs.
pub const SECTOR: usize = 512;

/// Most heartbeat slots (hosts) a volume may be formatted for.
pub const MAX_HOSTS: u32 = 2048;
/// Error decoding or validating an on-disk structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("{kind} at offset {addr}: block is only {len} bytes")]
    Truncated {
        kind: &'static str,
        addr: u64,
        len: usize,
    },
    #[error("{kind} at offset {addr}: bad magic {found:#010x} (expected {expected:#010x})")]
    BadMagic {
        kind: &'static str,
        addr: u64,
        found: u32,
        expected: u32,
    },
    #[error("{kind} at offset {addr}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        kind: &'static str,
        addr: u64,
        stored: u32,
        computed: u32,
    },
    #[error(
        "{kind} at offset {addr}: misdirected block (it says it belongs at offset {self_addr})"
    )]
    Misdirected {
        kind: &'static str,
        addr: u64,
        self_addr: u64,
    },
    #[error("{kind} at offset {addr}: invalid field {field}: {why}")]
    BadField {
        kind: &'static str,
        addr: u64,
        field: &'static str,
        why: String,
    },
}

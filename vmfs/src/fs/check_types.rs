//! What the consistency walker reports: each inconsistency as a structured
//! [`Finding`] (so `vmfs-fsck` can repair it; its `Display` is the line in
//! `Report::problems`) and the [`Model`] of the reachable tree it built.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::format::{BlockAddr, Inode, ResourceKind};

use crate::fs::dir::DirEntry;

/// Where in an inode's block map a reference is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapSlot {
    Direct(usize),
    Indirect,
    Double,
    /// The inode's extended-attribute block.
    Xattr,
    /// The root inode's orphan table.
    OrphanTable,
    /// Entry `index` of pointer block number `ptr`.
    Entry {
        ptr: u64,
        index: usize,
    },
}

/// Who holds a reference to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    pub ino: u64,
    pub slot: MapSlot,
}

/// One inconsistency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The lock record in front of a reachable inode does not decode.
    InodeLock {
        ino: u64,
        why: String,
    },
    /// A reachable inode's body does not decode or names another inode.
    /// `named_by`: the directory entry that led here (none for the root or
    /// an orphan).
    InodeDamaged {
        ino: u64,
        named_by: Option<(u64, Vec<u8>)>,
        why: String,
    },
    /// A directory entry names inode 0 or a number past the inode table.
    EntryOutOfRange {
        dir: u64,
        name: Vec<u8>,
        ino: u64,
    },
    /// A block-map entry is not a valid address of the right kind, or is
    /// past the end of its resource area.
    BadMapEntry {
        ino: u64,
        slot: MapSlot,
        raw: u64,
        why: String,
    },
    /// A pointer block does not decode, or names another owner or level.
    PointerDamaged {
        ino: u64,
        slot: MapSlot,
        why: String,
    },
    BlocksField {
        ino: u64,
        recorded: u64,
        held: u64,
    },
    InlineSize {
        ino: u64,
        size: u64,
        inline: u64,
    },
    ZeroGeneration {
        ino: u64,
    },
    Parent {
        ino: u64,
        recorded: u64,
        actual: u64,
    },
    DirDamaged {
        ino: u64,
        why: String,
    },
    DirCount {
        ino: u64,
        recorded: u64,
        actual: u64,
    },
    /// A directory has a second name (`dir`/`name`): a hard link to a
    /// directory or a loop.
    DirMultiName {
        ino: u64,
        dir: u64,
        name: Vec<u8>,
    },
    EntryType {
        dir: u64,
        name: Vec<u8>,
        ino: u64,
        dtype: u8,
        want: u8,
    },
    SymlinkNoTarget {
        ino: u64,
    },
    Nlink {
        ino: u64,
        recorded: u32,
        want: u32,
    },
    /// An allocated inode that no directory names (the top of an
    /// unreachable subtree).
    Orphan {
        ino: u64,
    },
    ClusterDamaged {
        kind: ResourceKind,
        cluster: u32,
        why: String,
    },
    Leaked {
        kind: ResourceKind,
        r: u64,
    },
    RefFree {
        kind: ResourceKind,
        r: u64,
        n: u32,
    },
    MultiRef {
        kind: ResourceKind,
        r: u64,
        owners: Vec<Owner>,
    },
    /// Referenced, but its cluster header is damaged.
    NoCluster {
        kind: ResourceKind,
        r: u64,
    },
}

fn name(n: &[u8]) -> String {
    String::from_utf8_lossy(n).into_owned()
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Finding::*;
        match self {
            InodeLock { ino, why } => write!(f, "inode {ino}: lock record: {why}"),
            InodeDamaged { ino, why, .. } => write!(f, "inode {ino}: {why}"),
            EntryOutOfRange { dir, name: n, ino } => write!(
                f,
                "directory {dir}: entry '{}' names inode {ino}, outside the inode table",
                name(n)
            ),
            BadMapEntry {
                ino, slot, raw, why, ..
            } => write!(f, "inode {ino}: {slot:?} has bad address {raw:#x}: {why}"),
            PointerDamaged { ino, slot, why } => {
                write!(f, "inode {ino}: pointer block at {slot:?}: {why}")
            }
            BlocksField { ino, recorded, held } => {
                write!(f, "inode {ino}: blocks field {recorded} but it holds {held}")
            }
            InlineSize { ino, size, inline } => write!(
                f,
                "inode {ino}: size {size} but it holds {inline} inline bytes"
            ),
            ZeroGeneration { ino } => write!(f, "inode {ino}: generation 0"),
            Parent {
                ino,
                recorded,
                actual,
            } => write!(
                f,
                "directory {ino}: parent field {recorded} but it is in {actual}"
            ),
            DirDamaged { ino, why } => write!(f, "directory {ino}: {why}"),
            DirCount {
                ino,
                recorded,
                actual,
            } => write!(
                f,
                "directory {ino}: header counts {recorded} entries, buckets hold {actual}"
            ),
            DirMultiName { ino, dir, name: n } => write!(
                f,
                "directory {ino} has more than one name ('{}' in directory {dir})",
                name(n)
            ),
            EntryType {
                dir,
                name: n,
                ino,
                dtype,
                want,
            } => write!(
                f,
                "directory {dir}: entry '{}' (inode {ino}) has type {dtype}, the inode is type {want}",
                name(n)
            ),
            SymlinkNoTarget { ino } => write!(f, "symlink {ino}: no target"),
            Nlink {
                ino,
                recorded,
                want,
            } => write!(f, "inode {ino}: nlink {recorded} but {want} expected"),
            Orphan { ino } => write!(f, "inode {ino} is allocated but no directory names it"),
            ClusterDamaged { kind, cluster, why } => {
                write!(f, "{} cluster {cluster}: {why}", kind.name())
            }
            Leaked { kind, r } => write!(f, "{} {r} is allocated but unreferenced", kind.name()),
            RefFree { kind, r, n } => {
                write!(f, "{} {r} is referenced {n} times but free", kind.name())
            }
            MultiRef { kind, r, owners } => write!(
                f,
                "{} {r} is referenced {} times (inodes {:?})",
                kind.name(),
                owners.len(),
                owners.iter().map(|o| o.ino).collect::<Vec<_>>()
            ),
            NoCluster { kind, r } => {
                write!(f, "{} {r} is referenced but its cluster is damaged", kind.name())
            }
        }
    }
}

/// The tree the walker reached, for repairs.
#[derive(Debug, Default, Clone)]
pub struct Model {
    /// Every inode reached (from the root and from orphans), decoded.
    pub inodes: BTreeMap<u64, Inode>,
    /// Directories: their data blocks (logical block -> address).
    pub dir_blocks: BTreeMap<u64, BTreeMap<u64, BlockAddr>>,
    /// Directories whose structures decoded: their entries.
    pub entries: BTreeMap<u64, Vec<DirEntry>>,
    /// Who references each resource, by (kind code, number).
    pub refs: HashMap<(u8, u64), Vec<Owner>>,
    /// Orphans (tops of unreachable subtrees).
    pub orphans: Vec<u64>,
}

//! Every problem fsck knows, with a stable code. `docs/fsck.md` has one
//! line per code saying what it means and what `--repair` does; keep the
//! two in step (a test checks that every code is documented).

use serde::Serialize;

/// A problem code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Code {
    Hdr001,
    Hdr002,
    Slot001,
    Slot002,
    Slot003,
    Slot004,
    Jrnl001,
    Jrnl002,
    Lock001,
    Lock002,
    Lock003,
    Lock004,
    Bmap001,
    Bmap002,
    Bmap003,
    Bmap004,
    Bmap005,
    Inode001,
    Inode002,
    Inode003,
    Inode004,
    Inode005,
    Inode006,
    Inode007,
    Dir001,
    Dir002,
    Dir003,
    Dir004,
    Dir005,
    Dir006,
    Dir007,
    Vmdk001,
    Vmdk002,
    Vmdk003,
    Vmdk004,
    Vmdk005,
    Vmdk006,
    Vmdk007,
    Vswp001,
}

impl Code {
    pub const ALL: [Code; 39] = [
        Code::Hdr001,
        Code::Hdr002,
        Code::Slot001,
        Code::Slot002,
        Code::Slot003,
        Code::Slot004,
        Code::Jrnl001,
        Code::Jrnl002,
        Code::Lock001,
        Code::Lock002,
        Code::Lock003,
        Code::Lock004,
        Code::Bmap001,
        Code::Bmap002,
        Code::Bmap003,
        Code::Bmap004,
        Code::Bmap005,
        Code::Inode001,
        Code::Inode002,
        Code::Inode003,
        Code::Inode004,
        Code::Inode005,
        Code::Inode006,
        Code::Inode007,
        Code::Dir001,
        Code::Dir002,
        Code::Dir003,
        Code::Dir004,
        Code::Dir005,
        Code::Dir006,
        Code::Dir007,
        Code::Vmdk001,
        Code::Vmdk002,
        Code::Vmdk003,
        Code::Vmdk004,
        Code::Vmdk005,
        Code::Vmdk006,
        Code::Vmdk007,
        Code::Vswp001,
    ];

    /// The stable text of the code ("HDR001").
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            Hdr001 => "HDR001",
            Hdr002 => "HDR002",
            Slot001 => "SLOT001",
            Slot002 => "SLOT002",
            Slot003 => "SLOT003",
            Slot004 => "SLOT004",
            Jrnl001 => "JRNL001",
            Jrnl002 => "JRNL002",
            Lock001 => "LOCK001",
            Lock002 => "LOCK002",
            Lock003 => "LOCK003",
            Lock004 => "LOCK004",
            Bmap001 => "BMAP001",
            Bmap002 => "BMAP002",
            Bmap003 => "BMAP003",
            Bmap004 => "BMAP004",
            Bmap005 => "BMAP005",
            Inode001 => "INODE001",
            Inode002 => "INODE002",
            Inode003 => "INODE003",
            Inode004 => "INODE004",
            Inode005 => "INODE005",
            Inode006 => "INODE006",
            Inode007 => "INODE007",
            Dir001 => "DIR001",
            Dir002 => "DIR002",
            Dir003 => "DIR003",
            Dir004 => "DIR004",
            Dir005 => "DIR005",
            Dir006 => "DIR006",
            Dir007 => "DIR007",
            Vmdk001 => "VMDK001",
            Vmdk002 => "VMDK002",
            Vmdk003 => "VMDK003",
            Vmdk004 => "VMDK004",
            Vmdk005 => "VMDK005",
            Vmdk006 => "VMDK006",
            Vmdk007 => "VMDK007",
            Vswp001 => "VSWP001",
        }
    }

    /// Parse "HDR001" (any case).
    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }

    /// The phase that finds it (1 header … 6 directories, 7 VMDK disks).
    pub fn phase(self) -> u8 {
        use Code::*;
        match self {
            Hdr001 | Hdr002 => 1,
            Slot001 | Slot002 | Slot003 | Slot004 | Lock001 | Lock002 | Lock003 | Lock004 => 2,
            Jrnl001 | Jrnl002 => 3,
            Bmap001 | Bmap002 | Bmap003 | Bmap004 | Bmap005 => 4,
            Inode001 | Inode002 | Inode003 | Inode004 | Inode005 | Inode006 | Inode007 => 5,
            Dir001 | Dir002 | Dir003 | Dir004 | Dir005 | Dir006 | Dir007 => 6,
            Vmdk001 | Vmdk002 | Vmdk003 | Vmdk004 | Vmdk005 | Vmdk006 | Vmdk007 | Vswp001 => 7,
        }
    }

    /// One line: what the problem is.
    pub fn meaning(self) -> &'static str {
        use Code::*;
        match self {
            Hdr001 => "primary volume header damaged (the backup is good)",
            Hdr002 => "backup volume header damaged or different from the primary",
            Slot001 => "heartbeat slot damaged (bad magic, checksum, address or field)",
            Slot002 => "heartbeat slot names a journal other than its own",
            Slot003 => "heartbeat slot LIVE or RECOVERING but its host is not beating",
            Slot004 => "one host identity LIVE in two heartbeat slots",
            Jrnl001 => "journal holds committed transactions not yet replayed",
            Jrnl002 => "journal cannot be replayed (a record points outside the device)",
            Lock001 => "lock record damaged",
            Lock002 => "lock held by a host incarnation that is gone or dead",
            Lock003 => "lock holder names a heartbeat slot the volume does not have",
            Lock004 => "lock record names the wrong resource",
            Bmap001 => "resource cluster header damaged",
            Bmap002 => "resource allocated but referenced by nothing (leaked)",
            Bmap003 => "resource referenced but marked free in its bitmap",
            Bmap004 => "resource referenced more than once (doubly allocated)",
            Bmap005 => {
                "block map entry is not a valid address, is out of range, is of the wrong kind \
                 for the inode (a small-block file, inode flag SMALL_BLOCKS, maps only small \
                 blocks; any other regular file only file blocks), or lies at or past the \
                 small-file limit of a small-block file"
            }
            Inode001 => "allocated inode's body damaged",
            Inode002 => "inode's blocks count differs from what it holds",
            Inode003 => "inode's link count differs from the names it has",
            Inode004 => "inode's size disagrees with its inline data or target",
            Inode005 => "allocated inode with generation 0",
            Inode006 => "pointer block damaged or owned by another inode or level",
            Inode007 => {
                "inode flag SMALL_BLOCKS on a volume whose header lacks the SMALL_FILES feature bit"
            }
            Dir001 => "directory entry names an unallocated inode or one outside the table",
            Dir002 => "directory structure (header or bucket) damaged",
            Dir003 => "directory header's entry count differs from its buckets",
            Dir004 => "directory's parent field differs from the directory naming it",
            Dir005 => "directory has more than one name (hard link to a directory, or a loop)",
            Dir006 => "allocated inode that no directory names (orphan)",
            Dir007 => "directory entry's type differs from its inode's type",
            Vmdk001 => "VMDK descriptor does not parse (the line the parser names is reported)",
            Vmdk002 => "extent file named by a VMDK descriptor does not exist",
            Vmdk003 => "flat extent file shorter than its descriptor's extent line",
            Vmdk004 => "COWD delta header or grain directory damaged, or its size differs from the descriptor",
            Vmdk005 => "COWD grain-table entry outside the file's data area, on a grain table, past the disk, or shared",
            Vmdk006 => "snapshot's parent (parentFileNameHint) does not exist, or the chain loops",
            Vmdk007 => "snapshot's parentCID differs from its parent's CID",
            Vswp001 => "stale .vswp swap file: its lock is not held by a live host",
        }
    }

    /// One line: what `--repair` does.
    pub fn repair(self) -> &'static str {
        use Code::*;
        match self {
            Hdr001 => "rewrites the primary header from the backup",
            Hdr002 => "rewrites the backup header from the primary",
            Slot001 => "rewrites the slot FREE with a new generation (its locks become stale)",
            Slot002 => "rewrites the slot with the layout's journal, new generation",
            Slot003 => "after replaying its journal, marks the slot FREE with a new generation",
            Slot004 => "as SLOT003 for every slot of that identity",
            Jrnl001 => "replays the journal (generation-checked, idempotent), then empties it",
            Jrnl002 => "empties the journal (its transactions are lost)",
            Lock001 => "rewrites the record FREE with a higher generation",
            Lock002 => "drops the gone holders (FREE if none is left), generation + 1",
            Lock003 => "drops the holder (FREE if none is left), generation + 1",
            Lock004 => "rewrites the resource field, generation + 1",
            Bmap001 => "rebuilds header and bitmap from the references found",
            Bmap002 => "clears the bit (after every reference is fixed)",
            Bmap003 => "sets the bit",
            Bmap004 => "the first owner keeps it; every other owner gets a copy in a new block (pointer blocks: the reference is cut)",
            Bmap005 => "clears the entry (a hole)",
            Inode001 => "removes the names of the inode and frees it (the root is recreated empty)",
            Inode002 => "sets the count",
            Inode003 => "sets the count",
            Inode004 => "sets the size to the inline length (0 for a symlink with no target)",
            Inode005 => "sets the generation to 1",
            Inode006 => "cuts the reference to the pointer block (its range becomes a hole)",
            Inode007 => "sets SMALL_FILES in the primary header, then in the backup (the data stays)",
            Dir001 => "removes the entry",
            Dir002 => "rebuilds the directory from the entries still readable; the rest become orphans",
            Dir003 => "rebuilds the directory",
            Dir004 => "sets the parent field",
            Dir005 => "removes the extra name",
            Dir006 => "links it into /lost+found as #INODE (creating /lost+found)",
            Dir007 => "sets the entry's type from the inode",
            Vmdk001 => "nothing (report only): restore the descriptor from a backup, or fix the named line by hand",
            Vmdk002 => "nothing (report only): restore the extent file, or delete the disk if it is no longer wanted",
            Vmdk003 => "extends the file to the descriptor's size (the missing part reads as zeros, thin)",
            Vmdk004 => "nothing (report only): the delta's data cannot be placed; restore it or revert the snapshot",
            Vmdk005 => "clears the entry (that grain reads from the parent disk again)",
            Vmdk006 => "nothing (report only): restore the parent disk, or correct parentFileNameHint",
            Vmdk007 => "nothing (report only): if the parent is known unchanged since the snapshot (an interrupted consolidate), set parentCID to the parent's CID by hand; otherwise restore the parent",
            Vswp001 => "deletes the file (not while another host is live)",
        }
    }

    /// Whether `--repair` can fix it (report-only codes leave exit 4).
    pub fn repairable(self) -> bool {
        use Code::*;
        !matches!(self, Vmdk001 | Vmdk002 | Vmdk004 | Vmdk006 | Vmdk007)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

//! Consistency walker: every allocated resource is referenced exactly once,
//! every reference is allocated, link counts and directory counts agree.
//! Reads the device directly (no host, no locks): run it on a quiet volume.
//! Deliberately independent of the code it checks (it re-reads block maps
//! and directory buckets itself).
//!
//! Besides the root's tree it walks orphans (allocated inodes no directory
//! names), so their blocks count as referenced; `vmfs-fsck` uses the
//! structured [`Finding`]s and the [`Model`] to repair.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use crate::format::cluster::ClusterHeader;
use crate::format::header::META_BLOCK;
use crate::format::inode::{DIRECT, FLAG_INLINE, INODE_BODY_LEN};
use crate::format::orphan::OrphanTable;
use crate::format::xattr::XattrBlock;
use crate::format::{BlockAddr, Inode, LockRecord, PointerBlock, ResourceKind, SECTOR};
use crate::volume::Volume;

use super::bmap::{data_kind, is_small_file, small_limit_blocks};
use super::dir::walk_entries;
use super::error::FsResult;
use super::inode::{file_type, is_dir};

#[path = "check_types.rs"]
mod types;
pub use types::{Finding, MapSlot, Model, Owner};

/// What the walker found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub inodes: u64,
    pub directories: u64,
    pub entries: u64,
    pub data_blocks: u64,
    pub pointer_blocks: u64,
    /// Unlinked inodes the orphan table lists whose free is pending.
    pub pending_orphans: u64,
    /// Every inconsistency, one line each. Empty: consistent.
    pub problems: Vec<String>,
    /// The same, structured (same order).
    pub findings: Vec<Finding>,
}

/// An inode to visit: number, the directory expected to be its parent
/// (`None` for orphans), and the entry that named it with its type.
type Visit = (u64, Option<u64>, Option<(u64, Vec<u8>, u8)>);

struct Walker<'a> {
    vol: &'a Volume,
    report: Report,
    model: Model,
    visited: HashSet<u64>,
    /// ino -> (names seen, subdirectories)
    links: HashMap<u64, (u32, u32)>,
    /// Unlinked inodes on the orphan table, still being freed.
    pending: HashSet<u64>,
}

/// Data blocks of an inode, and how many resources (data + pointer) it holds.
struct Blocks {
    map: BTreeMap<u64, BlockAddr>,
    held: u64,
}

impl Walker<'_> {
    fn problem(&mut self, f: Finding) {
        self.report.problems.push(f.to_string());
        self.report.findings.push(f);
    }

    fn reference(&mut self, kind: ResourceKind, idx: u64, owner: Owner) {
        self.model
            .refs
            .entry((kind.code(), idx))
            .or_default()
            .push(owner);
    }

    fn inode_count(&self) -> u64 {
        self.vol.header.region(ResourceKind::Inode).count
    }

    /// Read and decode inode `ino` (< inode count). `quiet`: no findings.
    fn read_inode(
        &mut self,
        ino: u64,
        named_by: Option<(u64, Vec<u8>)>,
        quiet: bool,
    ) -> FsResult<Option<Inode>> {
        let addr = self.vol.inode_addr(ino);
        let mut b = vec![0u8; SECTOR + INODE_BODY_LEN];
        self.vol.dev.read_at(&mut b, addr)?;
        if let Err(e) = LockRecord::decode(&b[..SECTOR], addr) {
            if !quiet {
                self.problem(Finding::InodeLock {
                    ino,
                    why: e.to_string(),
                });
            }
        }
        let why = match Inode::decode(&b[SECTOR..], addr + SECTOR as u64) {
            Ok(i) if i.ino == ino => return Ok(Some(i)),
            Ok(i) => format!("body names inode {}", i.ino),
            Err(e) => e.to_string(),
        };
        if !quiet {
            self.problem(Finding::InodeDamaged { ino, named_by, why });
        }
        Ok(None)
    }

    fn ptr(
        &mut self,
        ino: u64,
        raw: u64,
        level: u8,
        slot: MapSlot,
        quiet: bool,
    ) -> FsResult<Option<PointerBlock>> {
        let reg = *self.vol.header.region(ResourceKind::PointerBlock);
        let why = match BlockAddr::decode(raw) {
            Ok(Some(a)) if a.kind == ResourceKind::PointerBlock && a.index < reg.count => {
                if !quiet {
                    self.reference(ResourceKind::PointerBlock, a.index, Owner { ino, slot });
                    self.report.pointer_blocks += 1;
                }
                let addr = self.vol.resource_addr(ResourceKind::PointerBlock, a.index);
                let mut b = vec![0u8; reg.resource_size as usize];
                self.vol.dev.read_at(&mut b, addr)?;
                let why = match PointerBlock::decode(&b, addr) {
                    Ok(p) if p.owner == ino && p.level == level => return Ok(Some(p)),
                    Ok(p) => format!(
                        "pointer block at {addr} owned by {} level {}, expected level {level}",
                        p.owner, p.level
                    ),
                    Err(e) => e.to_string(),
                };
                if !quiet {
                    self.problem(Finding::PointerDamaged { ino, slot, why });
                }
                return Ok(None);
            }
            Ok(Some(a)) if a.kind == ResourceKind::PointerBlock => {
                format!("pointer block {} out of range", a.index)
            }
            Ok(_) => "not a pointer block address".to_string(),
            Err(e) => e,
        };
        if !quiet {
            self.problem(Finding::BadMapEntry {
                ino,
                slot,
                raw,
                why,
            });
        }
        Ok(None)
    }

    /// Data blocks of an inode; references recorded unless `quiet`.
    fn blocks(&mut self, i: &Inode, quiet: bool) -> FsResult<Blocks> {
        let mut raw: Vec<(u64, u64, MapSlot)> = Vec::new();
        for (n, &a) in i.direct.iter().enumerate() {
            if a != 0 {
                raw.push((n as u64, a, MapSlot::Direct(n)));
            }
        }
        let e = crate::format::pointer::entries_per_block(
            self.vol
                .header
                .region(ResourceKind::PointerBlock)
                .resource_size,
        );
        let mut pointers = 0;
        if i.indirect != 0 {
            if let Some(p) = self.ptr(i.ino, i.indirect, 1, MapSlot::Indirect, quiet)? {
                pointers += 1;
                let pn = self.ptr_index(i.indirect);
                for (k, &a) in p.entries.iter().enumerate() {
                    if a != 0 {
                        raw.push((
                            DIRECT as u64 + k as u64,
                            a,
                            MapSlot::Entry { ptr: pn, index: k },
                        ));
                    }
                }
            } else if self.valid_ptr(i.indirect) {
                pointers += 1;
            }
        }
        if i.double != 0 {
            if let Some(p2) = self.ptr(i.ino, i.double, 2, MapSlot::Double, quiet)? {
                pointers += 1;
                let p2n = self.ptr_index(i.double);
                for (j, &l1) in p2.entries.iter().enumerate() {
                    if l1 == 0 {
                        continue;
                    }
                    let slot = MapSlot::Entry { ptr: p2n, index: j };
                    if let Some(p) = self.ptr(i.ino, l1, 1, slot, quiet)? {
                        pointers += 1;
                        let pn = self.ptr_index(l1);
                        for (k, &a) in p.entries.iter().enumerate() {
                            if a != 0 {
                                let n = DIRECT as u64 + e + j as u64 * e + k as u64;
                                raw.push((n, a, MapSlot::Entry { ptr: pn, index: k }));
                            }
                        }
                    } else if self.valid_ptr(l1) {
                        pointers += 1;
                    }
                }
            } else if self.valid_ptr(i.double) {
                pointers += 1;
            }
        }
        let want = data_kind(i);
        let count = self.vol.header.region(want).count;
        // A small-block file keeps every block below one file block.
        let limit = if is_small_file(i) {
            small_limit_blocks(&self.vol.header)
        } else {
            u64::MAX
        };
        let mut map = BTreeMap::new();
        for (n, r, slot) in raw {
            let why = match BlockAddr::decode(r) {
                Ok(Some(_)) if n >= limit => {
                    format!("block {n} of a small-block file is past the small-file limit ({limit} blocks)")
                }
                Ok(Some(a)) if a.kind == want && a.index < count => {
                    if !quiet {
                        self.reference(a.kind, a.index, Owner { ino: i.ino, slot });
                        self.report.data_blocks += 1;
                    }
                    map.insert(n, a);
                    continue;
                }
                Ok(Some(a)) if a.kind == want => {
                    format!("{} {} out of range", want.name(), a.index)
                }
                Ok(_) => format!("block {n} is not a {}", want.name()),
                Err(e) => e,
            };
            if !quiet {
                self.problem(Finding::BadMapEntry {
                    ino: i.ino,
                    slot,
                    raw: r,
                    why,
                });
            }
        }
        let xattr = u64::from(self.xattr_block(i, quiet)?);
        let table = u64::from(self.orphan_table(i, quiet)?.is_some());
        let held = map.len() as u64 + pointers + xattr + table;
        Ok(Blocks { map, held })
    }

    /// Check the inode's extended-attribute block (a small block owned by
    /// it); true when it holds one (damaged or not, it counts as held
    /// while the address is valid).
    fn xattr_block(&mut self, i: &Inode, quiet: bool) -> FsResult<bool> {
        if i.xattr == 0 {
            return Ok(false);
        }
        let reg = *self.vol.header.region(ResourceKind::SmallBlock);
        let (held, why) = match BlockAddr::decode(i.xattr) {
            Ok(Some(a)) if a.kind == ResourceKind::SmallBlock && a.index < reg.count => {
                if !quiet {
                    self.reference(
                        a.kind,
                        a.index,
                        Owner {
                            ino: i.ino,
                            slot: MapSlot::Xattr,
                        },
                    );
                }
                let addr = self.vol.resource_addr(a.kind, a.index);
                let mut b = vec![0u8; reg.resource_size as usize];
                self.vol.dev.read_at(&mut b, addr)?;
                match XattrBlock::decode(&b, addr) {
                    Ok(x) if x.owner == i.ino && x.generation == i.generation => return Ok(true),
                    Ok(x) => (
                        true,
                        format!(
                            "xattr block at {addr} belongs to inode {} generation {}",
                            x.owner, x.generation
                        ),
                    ),
                    Err(e) => (true, e.to_string()),
                }
            }
            Ok(_) => (false, "not a small block in range".to_string()),
            Err(e) => (false, e),
        };
        if !quiet {
            self.problem(Finding::BadMapEntry {
                ino: i.ino,
                slot: MapSlot::Xattr,
                raw: i.xattr,
                why,
            });
        }
        Ok(held)
    }

    /// The root's orphan table: `Some(entries)` when it holds one whose
    /// address is valid (empty if the block is damaged, reported).
    fn orphan_table(&mut self, i: &Inode, quiet: bool) -> FsResult<Option<Vec<(u64, u64)>>> {
        if i.orphans == 0 {
            return Ok(None);
        }
        let reg = *self.vol.header.region(ResourceKind::SmallBlock);
        let why = match BlockAddr::decode(i.orphans) {
            Ok(Some(a))
                if a.kind == ResourceKind::SmallBlock
                    && a.index < reg.count
                    && i.ino == self.vol.header.root_ino =>
            {
                if !quiet {
                    self.reference(
                        a.kind,
                        a.index,
                        Owner {
                            ino: i.ino,
                            slot: MapSlot::OrphanTable,
                        },
                    );
                }
                let addr = self.vol.resource_addr(a.kind, a.index);
                let mut b = vec![0u8; reg.resource_size as usize];
                self.vol.dev.read_at(&mut b, addr)?;
                match OrphanTable::decode(&b, addr) {
                    Ok(t) => return Ok(Some(t.entries)),
                    Err(e) => {
                        if !quiet {
                            self.problem(Finding::BadMapEntry {
                                ino: i.ino,
                                slot: MapSlot::OrphanTable,
                                raw: i.orphans,
                                why: e.to_string(),
                            });
                        }
                        return Ok(Some(Vec::new()));
                    }
                }
            }
            Ok(_) => "not a small block in range, or not on the root".to_string(),
            Err(e) => e,
        };
        if !quiet {
            self.problem(Finding::BadMapEntry {
                ino: i.ino,
                slot: MapSlot::OrphanTable,
                raw: i.orphans,
                why,
            });
        }
        Ok(None)
    }

    /// Index of a pointer-block address already checked by `ptr`.
    fn ptr_index(&self, raw: u64) -> u64 {
        BlockAddr::decode(raw).ok().flatten().map_or(0, |a| a.index)
    }

    /// A pointer-block address that is valid and in range (counted as held
    /// even when the block itself is damaged).
    fn valid_ptr(&self, raw: u64) -> bool {
        let count = self.vol.header.region(ResourceKind::PointerBlock).count;
        matches!(BlockAddr::decode(raw), Ok(Some(a)) if a.kind == ResourceKind::PointerBlock && a.index < count)
    }

    /// A directory's entries through its block map, or why not.
    fn dir_entries(
        &self,
        ino: u64,
        blocks: &BTreeMap<u64, BlockAddr>,
    ) -> Result<(u64, Vec<super::dir::DirEntry>), String> {
        let bs = u64::from(
            self.vol
                .header
                .region(ResourceKind::SmallBlock)
                .resource_size,
        );
        let vol = self.vol;
        walk_entries(vol.dev.as_ref(), ino, |lofs| {
            blocks
                .get(&(lofs / bs))
                .map(|a| vol.resource_addr(a.kind, a.index) + lofs % bs)
        })
        .map_err(|e| e.to_string())
    }

    fn visit(&mut self, queue: &mut VecDeque<Visit>) -> FsResult<()> {
        while let Some((ino, parent, named_by)) = queue.pop_front() {
            let Some(i) = self.read_inode(ino, named_by.clone().map(|(d, n, _)| (d, n)), false)?
            else {
                continue;
            };
            self.reference(
                ResourceKind::Inode,
                ino,
                Owner {
                    ino,
                    slot: MapSlot::Direct(0),
                },
            );
            self.report.inodes += 1;
            if i.generation == 0 {
                self.problem(Finding::ZeroGeneration { ino });
            }
            if let Some((dir, name, dtype)) = named_by {
                let want = ((file_type(i.mode)) >> 12) as u8;
                if dtype != want {
                    self.problem(Finding::EntryType {
                        dir,
                        name,
                        ino,
                        dtype,
                        want,
                    });
                }
            }
            let blocks = self.blocks(&i, false)?;
            if blocks.held != i.blocks {
                self.problem(Finding::BlocksField {
                    ino,
                    recorded: i.blocks,
                    held: blocks.held,
                });
            }
            if i.flags & FLAG_INLINE != 0 && i.size != i.inline.len() as u64 {
                self.problem(Finding::InlineSize {
                    ino,
                    size: i.size,
                    inline: i.inline.len() as u64,
                });
            }
            if is_dir(i.mode) {
                self.report.directories += 1;
                if let Some(parent) = parent {
                    if i.parent != parent {
                        self.problem(Finding::Parent {
                            ino,
                            recorded: i.parent,
                            actual: parent,
                        });
                    }
                }
                self.model.dir_blocks.insert(ino, blocks.map.clone());
                let (count, entries) = match self.dir_entries(ino, &blocks.map) {
                    Ok(x) => x,
                    Err(why) => {
                        self.problem(Finding::DirDamaged { ino, why });
                        self.model.inodes.insert(ino, i);
                        continue;
                    }
                };
                if count != entries.len() as u64 {
                    self.problem(Finding::DirCount {
                        ino,
                        recorded: count,
                        actual: entries.len() as u64,
                    });
                }
                self.report.entries += entries.len() as u64;
                self.links.entry(ino).or_insert((0, 0));
                for e in &entries {
                    if e.ino == 0 || e.ino >= self.inode_count() {
                        self.problem(Finding::EntryOutOfRange {
                            dir: ino,
                            name: e.name.clone(),
                            ino: e.ino,
                        });
                        continue;
                    }
                    let entry_is_dir = u32::from(e.dtype) << 12 == libc::S_IFDIR;
                    if self.visited.contains(&e.ino) && entry_is_dir {
                        self.problem(Finding::DirMultiName {
                            ino: e.ino,
                            dir: ino,
                            name: e.name.clone(),
                        });
                        continue;
                    }
                    self.links.entry(e.ino).or_insert((0, 0)).0 += 1;
                    if entry_is_dir {
                        self.links.entry(ino).or_insert((0, 0)).1 += 1;
                    }
                    if self.visited.insert(e.ino) {
                        queue.push_back((e.ino, Some(ino), Some((ino, e.name.clone(), e.dtype))));
                    }
                }
                self.model.entries.insert(ino, entries);
            } else if i.flags & FLAG_INLINE == 0
                && i.size > 0
                && file_type(i.mode) == libc::S_IFLNK
                && blocks.map.is_empty()
            {
                self.problem(Finding::SymlinkNoTarget { ino });
            }
            self.model.inodes.insert(ino, i);
        }
        Ok(())
    }

    /// Allocated inodes the walk did not reach whose bodies decode.
    fn unreached(&mut self) -> FsResult<BTreeSet<u64>> {
        let mut out = BTreeSet::new();
        let kind = ResourceKind::Inode;
        for c in 0..self.vol.header.region(kind).clusters {
            let Some(h) = self.cluster(kind, c)? else {
                continue;
            };
            for i in 0..h.resource_count {
                let r = h.first_resource + u64::from(i);
                if h.is_set(i) && r != 0 && r < self.inode_count() && !self.visited.contains(&r) {
                    out.insert(r);
                }
            }
        }
        let mut valid = BTreeSet::new();
        for r in out {
            if self.read_inode(r, None, true)?.is_some() {
                valid.insert(r);
            }
        }
        Ok(valid)
    }

    /// Walk the unlinked inodes the orphan table lists (allocated, of the
    /// listed generation, no links): their frees are pending, not lost.
    fn listed_orphans(&mut self) -> FsResult<()> {
        let root = self.vol.header.root_ino;
        let Some(ri) = self.model.inodes.get(&root).cloned() else {
            return Ok(());
        };
        let Some(entries) = self.orphan_table(&ri, true)? else {
            return Ok(());
        };
        let mut queue = VecDeque::new();
        for (ino, generation) in entries {
            if ino == 0 || ino >= self.inode_count() || self.visited.contains(&ino) {
                continue;
            }
            let (c, bit) = self.vol.cluster_of(ResourceKind::Inode, ino);
            let Some(h) = self.cluster(ResourceKind::Inode, c)? else {
                continue;
            };
            if !h.is_set(bit) {
                continue; // freed; the entry was about to go
            }
            match self.read_inode(ino, None, true)? {
                Some(i) if i.generation == generation && i.nlink == 0 => {}
                _ => continue,
            }
            self.pending.insert(ino);
            self.report.pending_orphans += 1;
            self.visited.insert(ino);
            self.links.entry(ino).or_insert((0, 0));
            queue.push_back((ino, None, None));
        }
        self.visit(&mut queue)
    }

    /// Walk the orphans: the unreached inodes no unreached directory names
    /// (one of a cycle if every one is named).
    fn orphans(&mut self) -> FsResult<()> {
        loop {
            let u = self.unreached()?;
            if u.is_empty() {
                return Ok(());
            }
            let mut named = HashSet::new();
            for &r in &u {
                let Some(i) = self.read_inode(r, None, true)? else {
                    continue;
                };
                if !is_dir(i.mode) {
                    continue;
                }
                let b = self.blocks(&i, true)?;
                if let Ok((_, es)) = self.dir_entries(r, &b.map) {
                    named.extend(es.iter().map(|e| e.ino).filter(|&n| n != r));
                }
            }
            let mut roots: Vec<u64> = u.iter().copied().filter(|r| !named.contains(r)).collect();
            if roots.is_empty() {
                roots.extend(u.first());
            }
            let mut queue = VecDeque::new();
            for r in roots {
                self.problem(Finding::Orphan { ino: r });
                self.model.orphans.push(r);
                // The name it will get in lost+found.
                self.links.entry(r).or_insert((0, 0)).0 += 1;
                self.visited.insert(r);
                queue.push_back((r, None, None));
            }
            self.visit(&mut queue)?;
        }
    }

    fn walk(&mut self) -> FsResult<()> {
        let root = self.vol.header.root_ino;
        self.reference(
            ResourceKind::Inode,
            0,
            Owner {
                ino: 0,
                slot: MapSlot::Direct(0),
            },
        );
        self.visited.insert(root);
        self.links.insert(root, (0, 0));
        let mut queue = VecDeque::from([(root, Some(root), None)]);
        if root != 0 && root < self.inode_count() {
            self.visit(&mut queue)?;
        }
        self.listed_orphans()?;
        self.orphans()?;
        let inodes: Vec<(u64, u32, bool)> = self
            .model
            .inodes
            .iter()
            .map(|(&n, i)| (n, i.nlink, is_dir(i.mode)))
            .collect();
        for (ino, nlink, dir) in inodes {
            if self.pending.contains(&ino) {
                continue;
            }
            let (names, subdirs) = self.links.get(&ino).copied().unwrap_or((0, 0));
            let want = if dir { 2 + subdirs } else { names };
            if nlink != want {
                self.problem(Finding::Nlink {
                    ino,
                    recorded: nlink,
                    want,
                });
            }
        }
        Ok(())
    }

    /// Cluster `c` of `kind`, or `None` (with a finding) if damaged.
    fn cluster(&mut self, kind: ResourceKind, c: u32) -> FsResult<Option<ClusterHeader>> {
        let addr = self.vol.cluster_header_addr(kind, c);
        let mut b = vec![0u8; META_BLOCK as usize - SECTOR];
        self.vol.dev.read_at(&mut b, addr)?;
        Ok(ClusterHeader::decode(&b, addr)
            .ok()
            .filter(|h| self.fits(kind, c, h)))
    }

    /// Whether a decoded header is the one cluster `c` of `kind` must have.
    fn fits(&self, kind: ResourceKind, c: u32, h: &ClusterHeader) -> bool {
        h.kind == kind
            && h.cluster == c
            && h.first_resource
                == u64::from(c) * u64::from(self.vol.header.region(kind).per_cluster)
            && h.resource_count == self.vol.cluster_len(kind, c)
    }

    fn bitmaps(&mut self) -> FsResult<()> {
        // Damaged clusters, by (kind code, cluster): each header is read
        // once, not once per reference into it.
        let mut damaged = HashSet::new();
        // Clusters something references: in the others every set bit is
        // leaked and no bit needs a lookup (most clusters of a big, young
        // volume are untouched).
        let referenced: HashSet<(u8, u32)> = self
            .model
            .refs
            .keys()
            .filter_map(|&(code, r)| {
                let kind = ResourceKind::from_code(code)?;
                Some((code, self.vol.cluster_of(kind, r).0))
            })
            .collect();
        for kind in ResourceKind::ALL {
            let reg = *self.vol.header.region(kind);
            for c in 0..reg.clusters {
                let addr = self.vol.cluster_header_addr(kind, c);
                let mut b = vec![0u8; META_BLOCK as usize - SECTOR];
                self.vol.dev.read_at(&mut b, addr)?;
                let why = match ClusterHeader::decode(&b, addr) {
                    Ok(h) if h.kind != kind => {
                        format!("kind {} in a {} area", h.kind.name(), kind.name())
                    }
                    Ok(h) if !self.fits(kind, c, &h) => format!(
                        "header says cluster {} of {} resources from {}",
                        h.cluster, h.resource_count, h.first_resource
                    ),
                    Ok(h) => {
                        if referenced.contains(&(kind.code(), c)) {
                            self.cluster_bits(kind, &h);
                        } else if h.free_count() != h.resource_count {
                            for i in (0..h.resource_count).filter(|&i| h.is_set(i)) {
                                let r = h.first_resource + u64::from(i);
                                self.problem(Finding::Leaked { kind, r });
                            }
                        }
                        continue;
                    }
                    Err(e) => e.to_string(),
                };
                damaged.insert((kind.code(), c));
                self.problem(Finding::ClusterDamaged {
                    kind,
                    cluster: c,
                    why,
                });
            }
        }
        let mut left: Vec<_> = self.model.refs.keys().copied().collect();
        left.sort_unstable();
        for (code, r) in left {
            if let Some(kind) = ResourceKind::from_code(code) {
                let (c, _) = self.vol.cluster_of(kind, r);
                if damaged.contains(&(code, c)) {
                    self.problem(Finding::NoCluster { kind, r });
                }
            }
        }
        Ok(())
    }

    fn cluster_bits(&mut self, kind: ResourceKind, h: &ClusterHeader) {
        for i in 0..h.resource_count {
            let r = h.first_resource + u64::from(i);
            let owners = self.model.refs.get(&(kind.code(), r));
            let n = owners.map_or(0, |o| o.len() as u32);
            match (h.is_set(i), n) {
                (true, 1) | (false, 0) => {}
                (true, 0) => self.problem(Finding::Leaked { kind, r }),
                (false, _) => self.problem(Finding::RefFree { kind, r, n }),
                (true, _) => {
                    let owners = owners.cloned().unwrap_or_default();
                    self.problem(Finding::MultiRef { kind, r, owners })
                }
            }
        }
    }
}

/// Walk the whole volume.
pub fn check(vol: &Volume) -> FsResult<Report> {
    walk(vol).map(|(r, _)| r)
}

/// Walk the whole volume; also return what it reached.
pub fn walk(vol: &Volume) -> FsResult<(Report, Model)> {
    let mut w = Walker {
        vol,
        report: Report::default(),
        model: Model::default(),
        visited: HashSet::new(),
        links: HashMap::new(),
        pending: HashSet::new(),
    };
    w.walk()?;
    w.bitmaps()?;
    Ok((w.report, w.model))
}

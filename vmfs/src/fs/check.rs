//! Consistency walker: every allocated resource is referenced exactly once,
//! every reference is allocated, link counts and directory counts agree.
//! Reads the device directly (no host, no locks): run it on a quiet volume.
//! Deliberately independent of the code it checks (it re-reads block maps
//! and directory buckets itself).

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::format::cluster::ClusterHeader;
use crate::format::header::META_BLOCK;
use crate::format::inode::{DIRECT, FLAG_INLINE, INODE_BODY_LEN};
use crate::format::{BlockAddr, Inode, LockRecord, PointerBlock, ResourceKind, SECTOR};
use crate::volume::Volume;

use super::bmap::data_kind;
use super::dir::walk_entries;
use super::error::FsResult;
use super::inode::{file_type, is_dir};

/// What the walker found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub inodes: u64,
    pub directories: u64,
    pub entries: u64,
    pub data_blocks: u64,
    pub pointer_blocks: u64,
    /// Every inconsistency, one line each. Empty: consistent.
    pub problems: Vec<String>,
}

struct Walker<'a> {
    vol: &'a Volume,
    refs: HashMap<(u8, u64), u32>,
    report: Report,
}

impl Walker<'_> {
    fn problem(&mut self, p: String) {
        self.report.problems.push(p);
    }

    fn reference(&mut self, kind: ResourceKind, idx: u64) {
        *self.refs.entry((kind.code(), idx)).or_insert(0) += 1;
    }

    fn read_inode(&mut self, ino: u64) -> FsResult<Option<Inode>> {
        let addr = self.vol.inode_addr(ino);
        let mut b = vec![0u8; SECTOR + INODE_BODY_LEN];
        self.vol.dev.read_at(&mut b, addr)?;
        if let Err(e) = LockRecord::decode(&b[..SECTOR], addr) {
            self.problem(format!("inode {ino}: lock record: {e}"));
        }
        match Inode::decode(&b[SECTOR..], addr + SECTOR as u64) {
            Ok(i) if i.ino == ino => Ok(Some(i)),
            Ok(i) => {
                self.problem(format!("inode {ino}: body names inode {}", i.ino));
                Ok(None)
            }
            Err(e) => {
                self.problem(format!("inode {ino}: {e}"));
                Ok(None)
            }
        }
    }

    fn ptr(&mut self, ino: u64, raw: u64, level: u8) -> FsResult<Option<PointerBlock>> {
        let a = match BlockAddr::decode(raw) {
            Ok(Some(a)) if a.kind == ResourceKind::PointerBlock => a,
            _ => {
                self.problem(format!(
                    "inode {ino}: {raw:#x} is not a pointer block address"
                ));
                return Ok(None);
            }
        };
        let reg = *self.vol.header.region(ResourceKind::PointerBlock);
        if a.index >= reg.count {
            self.problem(format!(
                "inode {ino}: pointer block {} out of range",
                a.index
            ));
            return Ok(None);
        }
        self.reference(ResourceKind::PointerBlock, a.index);
        self.report.pointer_blocks += 1;
        let addr = self.vol.resource_addr(ResourceKind::PointerBlock, a.index);
        let mut b = vec![0u8; reg.resource_size as usize];
        self.vol.dev.read_at(&mut b, addr)?;
        match PointerBlock::decode(&b, addr) {
            Ok(p) if p.owner == ino && p.level == level => Ok(Some(p)),
            Ok(p) => {
                self.problem(format!(
                    "inode {ino}: pointer block at {addr} owned by {} level {}, expected level {level}",
                    p.owner, p.level
                ));
                Ok(None)
            }
            Err(e) => {
                self.problem(format!("inode {ino}: {e}"));
                Ok(None)
            }
        }
    }

    /// Data blocks of an inode: block number -> address; references recorded.
    fn blocks(&mut self, i: &Inode) -> FsResult<BTreeMap<u64, BlockAddr>> {
        let mut raw: Vec<(u64, u64)> = Vec::new();
        for (n, &a) in i.direct.iter().enumerate() {
            if a != 0 {
                raw.push((n as u64, a));
            }
        }
        let e = crate::format::pointer::entries_per_block(
            self.vol
                .header
                .region(ResourceKind::PointerBlock)
                .resource_size,
        );
        if i.indirect != 0 {
            if let Some(p) = self.ptr(i.ino, i.indirect, 1)? {
                for (k, &a) in p.entries.iter().enumerate() {
                    if a != 0 {
                        raw.push((DIRECT as u64 + k as u64, a));
                    }
                }
            }
        }
        if i.double != 0 {
            if let Some(p2) = self.ptr(i.ino, i.double, 2)? {
                for (j, &l1) in p2.entries.iter().enumerate() {
                    if l1 == 0 {
                        continue;
                    }
                    if let Some(p) = self.ptr(i.ino, l1, 1)? {
                        for (k, &a) in p.entries.iter().enumerate() {
                            if a != 0 {
                                raw.push((DIRECT as u64 + e + j as u64 * e + k as u64, a));
                            }
                        }
                    }
                }
            }
        }
        let want = data_kind(i.mode);
        let mut out = BTreeMap::new();
        for (n, r) in raw {
            match BlockAddr::decode(r) {
                Ok(Some(a)) if a.kind == want && a.index < self.vol.header.region(want).count => {
                    self.reference(a.kind, a.index);
                    self.report.data_blocks += 1;
                    out.insert(n, a);
                }
                _ => self.problem(format!("inode {}: block {n} has bad address {r:#x}", i.ino)),
            }
        }
        Ok(out)
    }

    fn walk(&mut self) -> FsResult<()> {
        let root = self.vol.header.root_ino;
        self.reference(ResourceKind::Inode, 0);
        // ino -> (names seen, subdirectories)
        let mut links: HashMap<u64, (u32, u32)> = HashMap::new();
        let mut inodes: HashMap<u64, Inode> = HashMap::new();
        let mut queue = VecDeque::from([(root, root)]);
        links.insert(root, (0, 0));
        while let Some((ino, parent)) = queue.pop_front() {
            let Some(i) = self.read_inode(ino)? else {
                continue;
            };
            self.reference(ResourceKind::Inode, ino);
            self.report.inodes += 1;
            let blocks = self.blocks(&i)?;
            let held = blocks.len() as u64 + self.pointer_count(&i);
            if held != i.blocks {
                self.problem(format!(
                    "inode {ino}: blocks field {} but it holds {held}",
                    i.blocks
                ));
            }
            if is_dir(i.mode) {
                self.report.directories += 1;
                if i.parent != parent {
                    self.problem(format!(
                        "directory {ino}: parent field {} but it is in {parent}",
                        i.parent
                    ));
                }
                let bs = u64::from(
                    self.vol
                        .header
                        .region(ResourceKind::SmallBlock)
                        .resource_size,
                );
                let vol = self.vol;
                let (count, entries) = match walk_entries(vol.dev.as_ref(), ino, |lofs| {
                    blocks
                        .get(&(lofs / bs))
                        .map(|a| vol.resource_addr(a.kind, a.index) + lofs % bs)
                }) {
                    Ok(x) => x,
                    Err(e) => {
                        self.problem(format!("directory {ino}: {e}"));
                        inodes.insert(ino, i);
                        continue;
                    }
                };
                if count != entries.len() as u64 {
                    self.problem(format!(
                        "directory {ino}: header counts {count} entries, buckets hold {}",
                        entries.len()
                    ));
                }
                self.report.entries += entries.len() as u64;
                for e in entries {
                    let seen = links.entry(e.ino).or_insert((0, 0));
                    seen.0 += 1;
                    let first = seen.0 == 1;
                    if u32::from(e.dtype) << 12 == libc::S_IFDIR {
                        links.get_mut(&ino).expect("visited").1 += 1;
                        if !first {
                            self.problem(format!("directory {} has more than one name", e.ino));
                            continue;
                        }
                    }
                    if first {
                        queue.push_back((e.ino, ino));
                    }
                }
            } else if i.flags & FLAG_INLINE == 0
                && i.size > 0
                && file_type(i.mode) == libc::S_IFLNK
                && blocks.is_empty()
            {
                self.problem(format!("symlink {ino}: no target"));
            }
            inodes.insert(ino, i);
        }
        for (ino, i) in &inodes {
            let (names, subdirs) = links.get(ino).copied().unwrap_or((0, 0));
            let want = if is_dir(i.mode) { 2 + subdirs } else { names };
            if i.nlink != want {
                self.problem(format!(
                    "inode {ino}: nlink {} but {want} expected",
                    i.nlink
                ));
            }
        }
        Ok(())
    }

    fn pointer_count(&mut self, i: &Inode) -> u64 {
        // Counted by `blocks` through `ptr`; recount without reading twice.
        let mut n = 0;
        if i.indirect != 0 {
            n += 1;
        }
        if i.double != 0 {
            n += 1;
            let reg = *self.vol.header.region(ResourceKind::PointerBlock);
            if let Ok(Some(a)) = BlockAddr::decode(i.double) {
                let addr = self.vol.resource_addr(ResourceKind::PointerBlock, a.index);
                let mut b = vec![0u8; reg.resource_size as usize];
                if self.vol.dev.read_at(&mut b, addr).is_ok() {
                    if let Ok(p) = PointerBlock::decode(&b, addr) {
                        n += p.entries.iter().filter(|&&x| x != 0).count() as u64;
                    }
                }
            }
        }
        n
    }

    fn bitmaps(&mut self) -> FsResult<()> {
        for kind in ResourceKind::ALL {
            let reg = *self.vol.header.region(kind);
            for c in 0..reg.clusters {
                let addr = self.vol.cluster_header_addr(kind, c);
                let mut b = vec![0u8; META_BLOCK as usize - SECTOR];
                self.vol.dev.read_at(&mut b, addr)?;
                let h = match ClusterHeader::decode(&b, addr) {
                    Ok(h) => h,
                    Err(e) => {
                        self.problem(format!("{} cluster {c}: {e}", kind.name()));
                        continue;
                    }
                };
                for i in 0..h.resource_count {
                    let r = h.first_resource + u64::from(i);
                    let n = self.refs.remove(&(kind.code(), r)).unwrap_or(0);
                    match (h.is_set(i), n) {
                        (true, 1) | (false, 0) => {}
                        (true, 0) => self
                            .problem(format!("{} {r} is allocated but unreferenced", kind.name())),
                        (false, _) => self.problem(format!(
                            "{} {r} is referenced {n} times but free",
                            kind.name()
                        )),
                        (true, _) => {
                            self.problem(format!("{} {r} is referenced {n} times", kind.name()))
                        }
                    }
                }
            }
        }
        let left: Vec<_> = self.refs.keys().copied().collect();
        for (code, r) in left {
            let kind = ResourceKind::from_code(code)
                .map(|k| k.name())
                .unwrap_or("?");
            self.problem(format!("{kind} {r} is referenced but in no cluster"));
        }
        Ok(())
    }
}

/// Walk the whole volume.
pub fn check(vol: &Volume) -> FsResult<Report> {
    let mut w = Walker {
        vol,
        refs: HashMap::new(),
        report: Report::default(),
    };
    w.walk()?;
    w.bitmaps()?;
    Ok(w.report)
}

//! One repair pass over what a walk found, in crash-safe order:
//! 1. inodes and pointer blocks (cut bad references, give every second
//!    owner of a block its own copy, fix counts and fields);
//! 2. directories (rebuilt without bad names, with fixed types and counts);
//! 3. orphans into /lost+found (only in a pass that changed no directory,
//!    so the walk that found them saw the final tree);
//! 4. bitmaps last: bits set for references, leaked bits cleared, damaged
//!    cluster headers rebuilt from the references.
//!
//! The device is flushed after each step.

use std::collections::{BTreeMap, BTreeSet};

use vmfs::format::block::get_u64;
use vmfs::format::cluster::ClusterHeader;
use vmfs::format::{BlockAddr, Inode, PointerBlock, ResourceKind, SECTOR};
use vmfs::fs::check::{Finding, MapSlot, Model};
use vmfs::fs::dir::DirEntry;
use vmfs::volume::Volume;

use crate::dirs::{self, dtype, LOST_FOUND};
use crate::{alloc, Code, Disk, FsckError};

pub struct Fixer<'a> {
    disk: &'a Disk,
    vol: &'a Volume,
    model: &'a Model,
    /// Inodes as edited so far in this pass.
    inodes: BTreeMap<u64, Inode>,
    /// Pointer-block entry edits: block number -> (index, new value).
    ptr_edits: BTreeMap<u64, Vec<(usize, u64)>>,
}

fn refused(e: FsckError) -> Result<bool, FsckError> {
    match e {
        FsckError::Refused(_) => Ok(false),
        e => Err(e),
    }
}

impl<'a> Fixer<'a> {
    pub fn new(disk: &'a Disk, vol: &'a Volume, model: &'a Model) -> Fixer<'a> {
        Fixer {
            disk,
            vol,
            model,
            inodes: BTreeMap::new(),
            ptr_edits: BTreeMap::new(),
        }
    }

    fn inode(&mut self, ino: u64) -> Option<&mut Inode> {
        if !self.inodes.contains_key(&ino) {
            let i = self.model.inodes.get(&ino)?.clone();
            self.inodes.insert(ino, i);
        }
        self.inodes.get_mut(&ino)
    }

    /// An inode as it is now (edited in this pass, or as walked).
    fn current(&self, ino: u64) -> Option<Inode> {
        self.inodes
            .get(&ino)
            .or_else(|| self.model.inodes.get(&ino))
            .cloned()
    }

    /// Stage `value` into a block-map slot of `ino`.
    fn set_slot(&mut self, ino: u64, slot: MapSlot, value: u64) -> bool {
        match slot {
            MapSlot::Entry { ptr, index } => {
                self.ptr_edits.entry(ptr).or_default().push((index, value));
                true
            }
            _ => {
                let Some(i) = self.inode(ino) else {
                    return false;
                };
                match slot {
                    MapSlot::Direct(n) if n < i.direct.len() => i.direct[n] = value,
                    MapSlot::Indirect => i.indirect = value,
                    MapSlot::Double => i.double = value,
                    MapSlot::Xattr => i.xattr = value,
                    MapSlot::OrphanTable => i.orphans = value,
                    _ => return false,
                }
                true
            }
        }
    }

    /// The raw value in a slot as the walk saw it.
    fn slot_raw(&self, ino: u64, slot: MapSlot) -> Result<Option<u64>, FsckError> {
        Ok(match slot {
            MapSlot::Direct(n) => self
                .model
                .inodes
                .get(&ino)
                .and_then(|i| i.direct.get(n).copied()),
            MapSlot::Indirect => self.model.inodes.get(&ino).map(|i| i.indirect),
            MapSlot::Double => self.model.inodes.get(&ino).map(|i| i.double),
            MapSlot::Xattr => self.model.inodes.get(&ino).map(|i| i.xattr),
            MapSlot::OrphanTable => self.model.inodes.get(&ino).map(|i| i.orphans),
            MapSlot::Entry { ptr, index } => self
                .read_ptr(ptr)?
                .and_then(|p| p.entries.get(index).copied()),
        })
    }

    fn read_ptr(&self, ptr: u64) -> Result<Option<PointerBlock>, FsckError> {
        let reg = self.vol.header.region(ResourceKind::PointerBlock);
        if ptr >= reg.count {
            return Ok(None);
        }
        let addr = self.vol.resource_addr(ResourceKind::PointerBlock, ptr);
        let b = self.disk.read(addr, reg.resource_size as usize)?;
        Ok(PointerBlock::decode(&b, addr).ok())
    }

    /// Give `owner` its own copy of data block `r` of `kind`.
    fn clone_block(
        &mut self,
        kind: ResourceKind,
        r: u64,
        ino: u64,
        slot: MapSlot,
    ) -> Result<bool, FsckError> {
        let Some(raw) = self.slot_raw(ino, slot)? else {
            return Ok(false);
        };
        let tbz = matches!(BlockAddr::decode(raw), Ok(Some(a)) if a.to_be_zeroed);
        let new = match alloc::alloc(self.disk, self.vol, kind) {
            Ok(n) => n,
            Err(e) => return refused(e),
        };
        if !tbz {
            let size = self.vol.header.region(kind).resource_size as usize;
            let data = self.disk.read(self.vol.resource_addr(kind, r), size)?;
            self.disk.write(self.vol.resource_addr(kind, new), &data)?;
        }
        let mut a = BlockAddr::new(kind, new);
        a.to_be_zeroed = tbz;
        Ok(self.set_slot(ino, slot, a.encode()))
    }

    /// Step 1.
    fn inodes_step(
        &mut self,
        found: &[(Code, Finding)],
        fixed: &mut [bool],
    ) -> Result<(), FsckError> {
        for (k, (_, f)) in found.iter().enumerate() {
            fixed[k] = match f {
                Finding::BadMapEntry { ino, slot, .. }
                | Finding::PointerDamaged { ino, slot, .. } => self.set_slot(*ino, *slot, 0),
                Finding::BlocksField { ino, held, .. } => {
                    self.inode(*ino).map(|i| i.blocks = *held).is_some()
                }
                Finding::Nlink { ino, want, .. } => {
                    self.inode(*ino).map(|i| i.nlink = *want).is_some()
                }
                Finding::Parent { ino, actual, .. } => {
                    self.inode(*ino).map(|i| i.parent = *actual).is_some()
                }
                Finding::ZeroGeneration { ino } => {
                    self.inode(*ino).map(|i| i.generation = 1).is_some()
                }
                Finding::InlineSize { ino, inline, .. } => {
                    self.inode(*ino).map(|i| i.size = *inline).is_some()
                }
                Finding::SymlinkNoTarget { ino } => self.inode(*ino).map(|i| i.size = 0).is_some(),
                Finding::MultiRef { kind, r, owners } => {
                    let mut ok = true;
                    for o in owners.iter().skip(1) {
                        ok &= match kind {
                            ResourceKind::FileBlock | ResourceKind::SmallBlock => {
                                self.clone_block(*kind, *r, o.ino, o.slot)?
                            }
                            ResourceKind::PointerBlock => self.set_slot(o.ino, o.slot, 0),
                            ResourceKind::Inode => false,
                        };
                    }
                    ok
                }
                _ => continue,
            };
        }
        self.disk.flush()?;
        let edits = std::mem::take(&mut self.ptr_edits);
        for (ptr, sets) in edits {
            let Some(mut p) = self.read_ptr(ptr)? else {
                continue;
            };
            for (index, v) in sets {
                if let Some(e) = p.entries.get_mut(index) {
                    *e = v;
                }
            }
            self.disk.write(p.addr, &p.encode())?;
        }
        for i in self.inodes.values() {
            if self.model.inodes.get(&i.ino) != Some(i) {
                self.disk.write(i.addr, &i.encode())?;
            }
        }
        self.disk.flush()
    }

    /// Step 2. Returns whether any directory changed.
    fn dirs_step(
        &mut self,
        found: &[(Code, Finding)],
        fixed: &mut [bool],
    ) -> Result<bool, FsckError> {
        let root = self.vol.header.root_ino;
        let mut remove: BTreeMap<u64, Vec<(usize, Vec<u8>)>> = BTreeMap::new();
        let mut retype: BTreeMap<u64, Vec<(usize, Vec<u8>, u8)>> = BTreeMap::new();
        let mut rebuild: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        let mut changed = false;
        for (k, (_, f)) in found.iter().enumerate() {
            match f {
                Finding::InodeDamaged {
                    named_by: Some((d, n)),
                    ..
                }
                | Finding::EntryOutOfRange {
                    dir: d, name: n, ..
                }
                | Finding::DirMultiName {
                    dir: d, name: n, ..
                } => remove.entry(*d).or_default().push((k, n.clone())),
                Finding::RefFree {
                    kind: ResourceKind::Inode,
                    r,
                    ..
                } => {
                    for (d, es) in &self.model.entries {
                        for e in es.iter().filter(|e| e.ino == *r) {
                            remove.entry(*d).or_default().push((k, e.name.clone()));
                        }
                    }
                }
                Finding::EntryType {
                    dir, name, want, ..
                } => retype
                    .entry(*dir)
                    .or_default()
                    .push((k, name.clone(), *want)),
                Finding::DirCount { ino, .. } | Finding::DirDamaged { ino, .. } => {
                    rebuild.entry(*ino).or_default().push(k)
                }
                Finding::InodeDamaged {
                    ino,
                    named_by: None,
                    ..
                } if *ino == root => {
                    fixed[k] = self.recreate_root()?;
                    changed = true;
                }
                _ => {}
            }
        }
        let dirs: BTreeSet<u64> = remove
            .keys()
            .chain(retype.keys())
            .chain(rebuild.keys())
            .copied()
            .collect();
        for d in dirs {
            let (Some(inode), Some(blocks)) = (self.current(d), self.model.dir_blocks.get(&d))
            else {
                continue;
            };
            let s = dirs::salvage(self.disk, self.vol, blocks)?;
            let rm = remove.remove(&d).unwrap_or_default();
            let rt = retype.remove(&d).unwrap_or_default();
            let mut entries: Vec<DirEntry> = s
                .entries
                .into_iter()
                .filter(|e| !rm.iter().any(|(_, n)| *n == e.name))
                .collect();
            for e in &mut entries {
                if let Some((_, _, t)) = rt.iter().find(|(_, n, _)| *n == e.name) {
                    e.dtype = *t;
                }
            }
            let seed = s.seed.unwrap_or_else(rand::random);
            let ok = match dirs::rebuild(self.disk, self.vol, &inode, blocks, seed, entries) {
                Ok(i) => {
                    self.inodes.insert(d, i);
                    true
                }
                Err(e) => refused(e)?,
            };
            changed |= ok;
            let ks = rm
                .iter()
                .map(|x| x.0)
                .chain(rt.iter().map(|x| x.0))
                .chain(rebuild.remove(&d).unwrap_or_default());
            for k in ks {
                fixed[k] = ok;
            }
        }
        self.disk.flush()?;
        Ok(changed)
    }

    fn recreate_root(&mut self) -> Result<bool, FsckError> {
        let root = self.vol.header.root_ino;
        let addr = self.vol.inode_addr(root) + SECTOR as u64;
        let old = self.disk.read(addr, SECTOR)?;
        let generation = get_u64(&old, 24).saturating_add(1).max(1);
        let mut i = Inode::new(addr, root, generation, libc::S_IFDIR | 0o755);
        i.nlink = 2;
        i.parent = root;
        self.disk.write(addr, &i.encode())?;
        alloc::set_bit(self.disk, self.vol, ResourceKind::Inode, root, true)?;
        Ok(true)
    }

    /// Step 3.
    fn orphans_step(
        &mut self,
        found: &[(Code, Finding)],
        fixed: &mut [bool],
    ) -> Result<(), FsckError> {
        let orphans: Vec<(usize, u64)> = found
            .iter()
            .enumerate()
            .filter_map(|(k, (_, f))| match f {
                Finding::Orphan { ino } => Some((k, *ino)),
                _ => None,
            })
            .collect();
        if orphans.is_empty() {
            return Ok(());
        }
        let root = self.vol.header.root_ino;
        let (Some(root_i), Some(root_entries), Some(root_blocks)) = (
            self.current(root),
            self.model.entries.get(&root),
            self.model.dir_blocks.get(&root),
        ) else {
            return Ok(());
        };
        let existing = root_entries
            .iter()
            .find(|e| e.name == LOST_FOUND)
            .and_then(|e| self.model.inodes.get(&e.ino))
            .filter(|i| i.mode & libc::S_IFMT == libc::S_IFDIR);
        let (lf, lf_blocks, mut entries) = match existing {
            Some(i) => {
                let i = self.current(i.ino).unwrap_or_else(|| i.clone());
                let (Some(b), Some(es)) = (
                    self.model.dir_blocks.get(&i.ino),
                    self.model.entries.get(&i.ino),
                ) else {
                    return Ok(());
                };
                (i.clone(), b.clone(), es.clone())
            }
            None => {
                let i = match dirs::new_inode(self.disk, self.vol, libc::S_IFDIR | 0o700, root) {
                    Ok(i) => i,
                    Err(e) => {
                        refused(e)?;
                        return Ok(());
                    }
                };
                let mut es = root_entries.clone();
                es.retain(|e| e.name != LOST_FOUND);
                es.push(DirEntry {
                    key: 0,
                    ino: i.ino,
                    dtype: dtype(i.mode),
                    name: LOST_FOUND.to_vec(),
                });
                let seed = dirs::salvage(self.disk, self.vol, root_blocks)?
                    .seed
                    .unwrap_or_else(rand::random);
                let mut r = dirs::rebuild(self.disk, self.vol, &root_i, root_blocks, seed, es)?;
                r.nlink += 1;
                self.disk.write(r.addr, &r.encode())?;
                (i, BTreeMap::new(), Vec::new())
            }
        };
        let mut subdirs = 0;
        let mut moved = Vec::new();
        for &(k, ino) in &orphans {
            let Some(o) = self.current(ino) else {
                continue;
            };
            if ino == lf.ino {
                continue;
            }
            let base = format!("#{ino}");
            let mut name = base.clone().into_bytes();
            let mut n = 1;
            while entries.iter().any(|e| e.name == name) {
                name = format!("{base}-{n}").into_bytes();
                n += 1;
            }
            entries.push(DirEntry {
                key: 0,
                ino,
                dtype: dtype(o.mode),
                name,
            });
            if o.mode & libc::S_IFMT == libc::S_IFDIR {
                subdirs += 1;
                let mut o = o;
                o.parent = lf.ino;
                self.disk.write(o.addr, &o.encode())?;
            }
            moved.push(k);
        }
        let seed = dirs::salvage(self.disk, self.vol, &lf_blocks)?
            .seed
            .unwrap_or_else(rand::random);
        let mut written = match dirs::rebuild(self.disk, self.vol, &lf, &lf_blocks, seed, entries) {
            Ok(i) => i,
            Err(e) => {
                refused(e)?;
                return Ok(());
            }
        };
        written.nlink += subdirs;
        self.disk.write(written.addr, &written.encode())?;
        for k in moved {
            fixed[k] = true;
        }
        self.disk.flush()
    }

    /// Step 4.
    fn bitmaps_step(
        &mut self,
        found: &[(Code, Finding)],
        fixed: &mut [bool],
    ) -> Result<(), FsckError> {
        for (k, (_, f)) in found.iter().enumerate() {
            match f {
                Finding::RefFree { kind, r, .. }
                    if *kind != ResourceKind::Inode || *r == self.vol.header.root_ino =>
                {
                    fixed[k] = alloc::set_bit(self.disk, self.vol, *kind, *r, true)?;
                }
                Finding::ClusterDamaged { kind, cluster, .. } => {
                    fixed[k] = self.rebuild_cluster(*kind, *cluster)?;
                }
                _ => {}
            }
        }
        self.disk.flush()?;
        for (k, (_, f)) in found.iter().enumerate() {
            if let Finding::Leaked { kind, r } = f {
                if *kind == ResourceKind::Inode && *r == self.vol.header.root_ino {
                    // A damaged root is recreated, never freed.
                    continue;
                }
                fixed[k] = alloc::set_bit(self.disk, self.vol, *kind, *r, false)?;
            }
        }
        self.disk.flush()
    }

    fn rebuild_cluster(&self, kind: ResourceKind, c: u32) -> Result<bool, FsckError> {
        let reg = self.vol.header.region(kind);
        let first = u64::from(c) * u64::from(reg.per_cluster);
        let len = self.vol.cluster_len(kind, c);
        let mut h = ClusterHeader::new(self.vol.cluster_header_addr(kind, c), kind, c, first, len);
        for i in 0..len {
            let r = first + u64::from(i);
            if self.model.refs.contains_key(&(kind.code(), r))
                || (kind == ResourceKind::Inode && r == 0)
            {
                h.set(i, true);
            }
        }
        self.disk.write(h.addr, &h.encode())?;
        Ok(true)
    }

    /// Apply one pass of repairs; returns, per finding, whether it was fixed.
    pub fn apply(&mut self, found: &[(Code, Finding)]) -> Result<Vec<bool>, FsckError> {
        let mut fixed = vec![false; found.len()];
        self.inodes_step(found, &mut fixed)?;
        let changed = self.dirs_step(found, &mut fixed)?;
        if !changed {
            self.orphans_step(found, &mut fixed)?;
        }
        self.bitmaps_step(found, &mut fixed)?;
        Ok(fixed)
    }
}

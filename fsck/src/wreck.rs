//! The corruption injector: creates the problem of a given code on a
//! volume that has files (regular files with data, a subdirectory with a
//! subdirectory, an inline symlink, a file with an indirect block — the
//! test builds one), so that every code is proven found and repaired.
//! Each wreck returns the paths whose contents or names it may change.

use std::collections::BTreeMap;

use vmfs::cluster::Host;
use vmfs::format::block::{get_u64, put_u64, seal};
use vmfs::format::header::FEATURE_SMALL_FILES;
use vmfs::format::{
    BlockAddr, HeartbeatSlot, Holder, Inode, LockMode, LockRecord, ResourceKind, SlotState, SECTOR,
};
use vmfs::fs::check::{walk, Model};
use vmfs::fs::dir::DIR_BLOCK;
use vmfs::fs::{data_kind, is_small_file, Fs};
use vmfs::volume::{cluster_lock_resource, Volume};

use crate::{alloc, dirs, Code, Disk, FsckError};

fn fail(why: impl Into<String>) -> FsckError {
    FsckError::Wreck(why.into())
}

struct Target<'a> {
    disk: &'a Disk,
    vol: Volume,
    model: Model,
    /// ino -> (parent, name)
    names: BTreeMap<u64, (u64, Vec<u8>)>,
}

impl Target<'_> {
    fn path(&self, mut ino: u64) -> String {
        let mut parts = Vec::new();
        while let Some((p, n)) = self.names.get(&ino) {
            parts.push(String::from_utf8_lossy(n).into_owned());
            if *p == ino || parts.len() > 64 {
                break;
            }
            ino = *p;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    fn of_type(&self, t: u32) -> impl Iterator<Item = &Inode> {
        let root = self.vol.header.root_ino;
        self.model
            .inodes
            .values()
            .filter(move |i| i.mode & libc::S_IFMT == t && i.ino != root)
    }

    /// Regular files with a first data block and no indirect block.
    fn files(&self) -> Vec<&Inode> {
        self.of_type(libc::S_IFREG)
            .filter(|i| i.direct[0] != 0 && i.indirect == 0 && i.double == 0)
            .collect()
    }

    fn file(&self, n: usize) -> Result<Inode, FsckError> {
        self.files().get(n).map(|i| (*i).clone()).ok_or_else(|| {
            fail(format!(
                "the volume needs {} regular files with data",
                n + 1
            ))
        })
    }

    fn dir(&self) -> Result<Inode, FsckError> {
        self.of_type(libc::S_IFDIR)
            .find(|d| {
                self.model
                    .entries
                    .get(&d.ino)
                    .is_some_and(|e| !e.is_empty())
            })
            .cloned()
            .ok_or_else(|| fail("the volume needs a non-empty subdirectory"))
    }

    /// Every path at or under `ino`.
    fn subtree(&self, ino: u64) -> Vec<String> {
        let mut out = vec![self.path(ino)];
        for e in self.model.entries.get(&ino).into_iter().flatten() {
            if e.ino != ino && self.names.get(&e.ino).is_some_and(|(p, _)| *p == ino) {
                out.extend(self.subtree(e.ino));
            }
        }
        out
    }

    fn write_inode(&self, i: &Inode) -> Result<(), FsckError> {
        self.disk.write(i.addr, &i.encode())
    }

    /// Flip bits of the byte at `off` (no checksum update).
    fn flip(&self, off: u64) -> Result<(), FsckError> {
        let s = off / SECTOR as u64 * SECTOR as u64;
        let mut sec = self.disk.read(s, SECTOR)?;
        sec[(off - s) as usize] ^= 0x5a;
        self.disk.write(s, &sec)
    }

    fn slot(&self, n: u32) -> Result<HeartbeatSlot, FsckError> {
        let addr = self.vol.heartbeat_slot_addr(n);
        HeartbeatSlot::decode(&self.disk.read(addr, SECTOR)?, addr).map_err(|e| fail(e.to_string()))
    }

    fn lock(&self, addr: u64) -> Result<LockRecord, FsckError> {
        LockRecord::decode(&self.disk.read(addr, SECTOR)?, addr).map_err(|e| fail(e.to_string()))
    }

    fn dead_live(&self, n: u32, uuid: [u8; 16]) -> Result<(), FsckError> {
        let mut s = self.slot(n)?;
        s.state = SlotState::Live;
        s.hb_gen += 1;
        s.counter += 1;
        s.host_uuid = uuid;
        s.mount_nonce = rand::random();
        s.write_nonce = rand::random();
        s.interval_ms = self.vol.header.timeouts.heartbeat_ms;
        s.host_name = "wrecked".into();
        self.disk.write(s.addr, &s.encode())
    }

    fn rewrite_dir(
        &self,
        d: u64,
        edit: impl FnOnce(&mut Vec<vmfs::fs::DirEntry>),
    ) -> Result<(), FsckError> {
        let (Some(i), Some(b)) = (self.model.inodes.get(&d), self.model.dir_blocks.get(&d)) else {
            return Err(fail(format!("directory {d} not found")));
        };
        let s = dirs::salvage(self.disk, &self.vol, b)?;
        let mut es = s.entries;
        edit(&mut es);
        dirs::rebuild(self.disk, &self.vol, i, b, s.seed.unwrap_or(0), es)?;
        Ok(())
    }
}

/// The codes `wreck` can create (all of them).
pub fn codes() -> Vec<Code> {
    Code::ALL.to_vec()
}

/// Create the problem `code` on the volume of `disk` (opened for writing).
/// Returns the paths it may have changed.
pub fn wreck(disk: &Disk, code: Code) -> Result<Vec<String>, FsckError> {
    let vol = Volume::open(disk.dev.clone())?;
    if code == Code::Jrnl001 || code == Code::Jrnl002 {
        return crash_host(disk, vol, code);
    }
    if code.phase() == 7 {
        drop(vol);
        return crate::wreck_vmdk::wreck(disk, code);
    }
    let (_, model) = walk(&vol)?;
    let mut names = BTreeMap::new();
    for (d, es) in &model.entries {
        for e in es {
            names.entry(e.ino).or_insert((*d, e.name.clone()));
        }
    }
    let t = Target {
        disk,
        vol,
        model,
        names,
    };
    let h = t.vol.header.clone();
    let mut touched = Vec::new();
    match code {
        Code::Hdr001 => t.flip(50)?,
        Code::Hdr002 => t.flip(h.backup_offset() + 50)?,
        Code::Slot001 => t.flip(t.vol.heartbeat_slot_addr(0) + 130)?,
        Code::Slot002 => {
            let mut s = t.slot(1)?;
            s.journal_addr += 4096;
            disk.write(s.addr, &s.encode())?;
        }
        Code::Slot003 => t.dead_live(0, rand::random())?,
        Code::Slot004 => {
            let u = rand::random();
            t.dead_live(0, u)?;
            t.dead_live(1, u)?;
        }
        Code::Jrnl001 | Code::Jrnl002 => unreachable!("handled above"),
        Code::Vmdk001
        | Code::Vmdk002
        | Code::Vmdk003
        | Code::Vmdk004
        | Code::Vmdk005
        | Code::Vmdk006
        | Code::Vmdk007
        | Code::Vswp001 => unreachable!("handled above"),
        Code::Lock001 => t.flip(t.vol.cluster_lock_addr(ResourceKind::Inode, 0) + 60)?,
        Code::Lock002 | Code::Lock003 => {
            let addr = t.vol.cluster_lock_addr(ResourceKind::FileBlock, 0);
            let mut l = t.lock(addr)?;
            let slot = if code == Code::Lock002 {
                0
            } else {
                h.max_hosts as u16 + 3
            };
            let gen = t.slot(0)?.hb_gen.saturating_sub(1);
            l.mode = LockMode::Exclusive;
            l.holders = vec![Holder { slot, hb_gen: gen }];
            l.lock_gen += 1;
            disk.write(addr, &l.encode())?;
        }
        Code::Lock004 => {
            let f = t.file(0)?;
            let addr = t.vol.inode_addr(f.ino);
            let mut l = t.lock(addr)?;
            l.resource = cluster_lock_resource(ResourceKind::Inode, 7) + 1000;
            disk.write(addr, &l.encode())?;
        }
        Code::Bmap001 => {
            let f = t.file(0)?;
            let a = BlockAddr::decode(f.direct[0])
                .ok()
                .flatten()
                .ok_or_else(|| fail("bad address"))?;
            let (c, _) = t.vol.cluster_of(a.kind, a.index);
            t.flip(t.vol.cluster_header_addr(a.kind, c) + 100)?;
        }
        Code::Bmap002 => {
            let kind = ResourceKind::SmallBlock;
            let (c, i) = (0..h.region(kind).clusters)
                .find_map(|c| {
                    let hd = alloc::read_cluster(disk, &t.vol, kind, c).ok().flatten()?;
                    hd.find_free(hd.resource_count / 2).map(|i| (c, i))
                })
                .ok_or_else(|| fail("no free small block"))?;
            let mut hd =
                alloc::read_cluster(disk, &t.vol, kind, c)?.ok_or_else(|| fail("cluster"))?;
            hd.set(i, true);
            disk.write(hd.addr, &hd.encode())?;
        }
        Code::Bmap003 => {
            let f = t.file(0)?;
            let a = BlockAddr::decode(f.direct[0])
                .ok()
                .flatten()
                .ok_or_else(|| fail("bad address"))?;
            alloc::set_bit(disk, &t.vol, a.kind, a.index, false)?;
        }
        Code::Bmap004 => {
            // Two files whose maps address the same kind (small-block files
            // and file-block files cannot share a block).
            let a = t.file(0)?;
            let kind = data_kind(&a);
            let mut b = t
                .files()
                .into_iter()
                .find(|i| i.ino != a.ino && data_kind(i) == kind)
                .cloned()
                .ok_or_else(|| fail("the volume needs two files of one block kind"))?;
            b.direct[0] = a.direct[0];
            t.write_inode(&b)?;
            touched.push(t.path(b.ino));
        }
        Code::Bmap005 => {
            let mut f = t.file(0)?;
            let count = h.region(ResourceKind::FileBlock).count;
            let n = f.direct.len() - 1;
            if f.direct[n] != 0 || f.size > n as u64 * u64::from(h.file_block_size) {
                return Err(fail("the first file is too large"));
            }
            f.direct[n] = if is_small_file(&f) {
                // A real small block, past the small-file limit.
                BlockAddr::new(ResourceKind::SmallBlock, 0).encode()
            } else {
                BlockAddr::new(ResourceKind::FileBlock, count + 10).encode()
            };
            t.write_inode(&f)?;
        }
        Code::Inode001 => {
            let f = t.file(0)?;
            t.flip(f.addr + 200)?;
            touched.push(t.path(f.ino));
        }
        Code::Inode002 | Code::Inode003 | Code::Inode005 => {
            let mut f = t.file(0)?;
            match code {
                Code::Inode002 => f.blocks += 3,
                Code::Inode003 => f.nlink += 1,
                _ => f.generation = 0,
            }
            t.write_inode(&f)?;
        }
        Code::Inode004 => {
            let mut l = t
                .of_type(libc::S_IFLNK)
                .find(|i| !i.inline.is_empty())
                .cloned()
                .ok_or_else(|| fail("the volume needs an inline symlink"))?;
            l.size += 5;
            t.write_inode(&l)?;
        }
        Code::Inode006 => {
            let f = t
                .of_type(libc::S_IFREG)
                .find(|i| i.indirect != 0)
                .cloned()
                .ok_or_else(|| fail("the volume needs a file with an indirect block"))?;
            let a = BlockAddr::decode(f.indirect)
                .ok()
                .flatten()
                .ok_or_else(|| fail("bad address"))?;
            t.flip(t.vol.resource_addr(a.kind, a.index) + 100)?;
            touched.push(t.path(f.ino));
        }
        Code::Inode007 => {
            // A consistent header (both copies, checksums valid) that has
            // lost SMALL_FILES while small-block files exist.
            if !t.of_type(libc::S_IFREG).any(is_small_file) {
                return Err(fail("the volume needs a small-block file"));
            }
            let mut old = h.clone();
            old.features &= !FEATURE_SMALL_FILES;
            disk.write(0, &old.encode(0))?;
            let backup = old.backup_offset();
            disk.write(backup, &old.encode(backup))?;
        }
        Code::Dir001 => {
            let f = t.file(0)?;
            alloc::set_bit(disk, &t.vol, ResourceKind::Inode, f.ino, false)?;
            touched.push(t.path(f.ino));
        }
        Code::Dir002 => {
            let d = t.dir()?;
            let blocks = t
                .model
                .dir_blocks
                .get(&d.ino)
                .ok_or_else(|| fail("dir blocks"))?;
            let bs = u64::from(h.small_block_size);
            let lofs: u64 = 2 << 20;
            let a = blocks
                .get(&(lofs / bs))
                .ok_or_else(|| fail("bucket 0 missing"))?;
            t.flip(t.vol.resource_addr(a.kind, a.index) + lofs % bs + 40)?;
            touched.extend(t.subtree(d.ino).into_iter().skip(1));
        }
        Code::Dir003 => {
            let root = h.root_ino;
            let blocks = t
                .model
                .dir_blocks
                .get(&root)
                .ok_or_else(|| fail("root blocks"))?;
            let a = blocks.get(&0).ok_or_else(|| fail("root header missing"))?;
            let addr = t.vol.resource_addr(a.kind, a.index);
            let mut b = disk.read(addr, DIR_BLOCK)?;
            let n = get_u64(&b, 24);
            put_u64(&mut b, 24, n + 1);
            seal(&mut b, u32::from_le_bytes(*b"VDIR"), addr);
            disk.write(addr, &b)?;
        }
        Code::Dir004 => {
            let mut d = t.dir()?;
            d.parent = t.file(0)?.ino;
            t.write_inode(&d)?;
        }
        Code::Dir005 => {
            let d = t.dir()?;
            let root = h.root_ino;
            t.rewrite_dir(d.ino, |es| {
                es.push(vmfs::fs::DirEntry {
                    key: 0,
                    ino: root,
                    dtype: dirs::dtype(libc::S_IFDIR),
                    name: b"loop-to-root".to_vec(),
                })
            })?;
        }
        Code::Dir006 => {
            let f = t.file(0)?;
            let (p, n) = t
                .names
                .get(&f.ino)
                .cloned()
                .ok_or_else(|| fail("no name"))?;
            touched.push(t.path(f.ino));
            t.rewrite_dir(p, |es| es.retain(|e| e.name != n))?;
        }
        Code::Dir007 => {
            let f = t.file(0)?;
            let (p, n) = t
                .names
                .get(&f.ino)
                .cloned()
                .ok_or_else(|| fail("no name"))?;
            t.rewrite_dir(p, |es| {
                for e in es.iter_mut().filter(|e| e.name == n) {
                    e.dtype = dirs::dtype(libc::S_IFLNK);
                }
            })?;
        }
    }
    disk.flush()?;
    Ok(touched)
}

/// JRNL001: a host that committed transactions and crashed. JRNL002: the
/// same, then its first record made to point outside the device (with
/// valid checksums).
fn crash_host(disk: &Disk, vol: Volume, code: Code) -> Result<Vec<String>, FsckError> {
    let host = Host::join(vol.clone(), crate::wreck_vmdk::host_config(&vol))?;
    host.start();
    let slot = host.slot();
    let fs = Fs::mount(host.clone())?;
    let name = format!("wreck-{}", rand::random::<u32>());
    let a = fs.create(fs.root(), name.as_bytes(), 0o644, 0, 0)?;
    let fh = fs.open(a.ino, true)?;
    fs.write(fh, 0, b"written by a host that then crashed")?;
    fs.close(fh)?;
    drop(fs);
    host.abandon();
    if code == Code::Jrnl002 {
        let rec = vol.journal_addr(slot) + vmfs::cluster::journal::HEAD_LEN;
        let mut h = disk.read(rec, SECTOR)?;
        let total = get_u64(&h, 56) as usize;
        if total < 2 * SECTOR || total as u64 > vol.header.journal_size {
            return Err(fail("no journal record to wreck"));
        }
        let mut r = disk.read(rec, total)?;
        // Entry 0's lock address (record layout: docs/locking.md).
        put_u64(&mut r, SECTOR + 16, disk.dev.size() + 4096);
        let crc = crc32fast::hash(&r[SECTOR..]);
        h.copy_from_slice(&r[..SECTOR]);
        h[64..68].copy_from_slice(&crc.to_le_bytes());
        seal(&mut h, vmfs::cluster::journal::RECORD_MAGIC, rec);
        r[..SECTOR].copy_from_slice(&h);
        disk.write(rec, &r)?;
        disk.flush()?;
    }
    Ok(vec![format!("/{name}")])
}

//! The block map of one inode: file block number -> block address, through
//! 64 direct addresses, one indirect and one double-indirect pointer block.
//! Pointer blocks are cached while the map lives (a map of an inode this
//! host holds EXCLUSIVE lives as long as the lock, so its cache is exact).

use std::collections::{BTreeSet, HashMap};

use crate::cluster::HeldLock;
use crate::dev::BlockDev;
use crate::format::inode::{DIRECT, FLAG_SMALL_BLOCKS};
use crate::format::pointer::entries_per_block;
use crate::format::{BlockAddr, Inode, PointerBlock, ResourceKind};

use super::alloc::Allocator;
use super::change::Change;
use super::error::{FsError, FsResult};
use super::inode::{file_type, Ctx};

/// Where block `n`'s address is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Direct(usize),
    Indirect(usize),
    Double(usize, usize),
}

/// An inode and its block map.
#[derive(Debug)]
pub struct FileMap {
    pub inode: Inode,
    /// The inode lock, when this host holds it EXCLUSIVE (needed to change).
    pub lock: Option<HeldLock>,
    pub inode_dirty: bool,
    ptrs: HashMap<u64, PointerBlock>,
    dirty: BTreeSet<u64>,
    entries: u64,
    ptr_size: u32,
    /// Kind and size of this inode's data blocks (from its mode and its
    /// SMALL_BLOCKS flag; changed by a promotion).
    pub data_kind: ResourceKind,
    pub block_size: u64,
    /// Size of a file block: what the largest file is measured in, and the
    /// small-file limit (a small-block file has no data at or past it).
    pub file_block_size: u64,
    /// Bytes of block images one transaction may carry (batches stop there).
    pub txn_limit: usize,
}

/// Data block kind of an inode: regular files use file blocks unless
/// flagged SMALL_BLOCKS; directories and symlinks use small blocks.
pub fn data_kind(inode: &Inode) -> ResourceKind {
    if file_type(inode.mode) == libc::S_IFREG && inode.flags & FLAG_SMALL_BLOCKS == 0 {
        ResourceKind::FileBlock
    } else {
        ResourceKind::SmallBlock
    }
}

/// Small blocks a small-block file may use: one file block's worth, at
/// most the direct slots (no pointer blocks).
pub fn small_limit_blocks(h: &crate::format::Header) -> u64 {
    u64::from(h.file_block_size / h.small_block_size).min(DIRECT as u64)
}

/// Is this a regular file whose data lives in small blocks?
pub fn is_small_file(inode: &Inode) -> bool {
    inode.flags & FLAG_SMALL_BLOCKS != 0
}

impl FileMap {
    pub fn new(ctx: &Ctx, inode: Inode, lock: Option<HeldLock>) -> FileMap {
        let ptr_size = ctx
            .vol
            .header
            .region(ResourceKind::PointerBlock)
            .resource_size;
        let data_kind = data_kind(&inode);
        FileMap {
            block_size: u64::from(ctx.vol.header.region(data_kind).resource_size),
            file_block_size: u64::from(ctx.vol.header.file_block_size),
            data_kind,
            inode,
            lock,
            inode_dirty: false,
            ptrs: HashMap::new(),
            dirty: BTreeSet::new(),
            entries: entries_per_block(ptr_size),
            ptr_size,
            txn_limit: (ctx.vol.header.journal_size / 4) as usize,
        }
    }

    pub fn ino(&self) -> u64 {
        self.inode.ino
    }

    /// Blocks a map can address.
    pub fn max_blocks(&self) -> u64 {
        DIRECT as u64 + self.entries + self.entries * self.entries
    }

    /// Largest file size: what a map of file blocks reaches (a small-block
    /// file is promoted before it holds data past the small-file limit).
    pub fn max_bytes(&self) -> u64 {
        self.max_blocks().saturating_mul(self.file_block_size)
    }

    /// Does this map address small blocks for a regular file?
    pub fn is_small(&self) -> bool {
        is_small_file(&self.inode)
    }

    /// Small blocks below the small-file limit (the direct slots a
    /// small-block file may use).
    pub fn small_limit_blocks(&self, ctx: &Ctx) -> u64 {
        small_limit_blocks(&ctx.vol.header)
    }

    /// The small-file limit in bytes: a small-block file has no data at or
    /// past it.
    pub fn small_limit(&self, ctx: &Ctx) -> u64 {
        self.small_limit_blocks(ctx) * u64::from(ctx.vol.header.small_block_size)
    }

    /// Take the data kind and block size from the inode (after its flags
    /// changed or it was re-read).
    pub fn set_kind(&mut self, ctx: &Ctx) {
        self.data_kind = data_kind(&self.inode);
        self.block_size = u64::from(ctx.vol.header.region(self.data_kind).resource_size);
    }

    fn corrupt(&self, why: String) -> FsError {
        FsError::Corrupt {
            ino: self.inode.ino,
            why,
        }
    }

    fn slot(&self, n: u64) -> FsResult<Slot> {
        let e = self.entries;
        if n < DIRECT as u64 {
            return Ok(Slot::Direct(n as usize));
        }
        let m = n - DIRECT as u64;
        if m < e {
            return Ok(Slot::Indirect(m as usize));
        }
        let m = m - e;
        if m < e * e {
            return Ok(Slot::Double((m / e) as usize, (m % e) as usize));
        }
        Err(FsError::TooBig(format!(
            "inode {}: block {n} is beyond the {} a block map reaches",
            self.inode.ino,
            self.max_blocks()
        )))
    }

    /// Device offset of a pointer block address, checking its kind.
    fn ptr_addr(&self, ctx: &Ctx, raw: u64) -> FsResult<u64> {
        match BlockAddr::decode(raw).map_err(|w| self.corrupt(w))? {
            Some(a) if a.kind == ResourceKind::PointerBlock => {
                self.check_index(ctx, a)?;
                Ok(ctx.vol.resource_addr(ResourceKind::PointerBlock, a.index))
            }
            _ => Err(self.corrupt(format!("{raw:#x} is not a pointer block address"))),
        }
    }

    fn check_index(&self, ctx: &Ctx, a: BlockAddr) -> FsResult<()> {
        let count = ctx.vol.header.region(a.kind).count;
        if a.index >= count {
            return Err(self.corrupt(format!(
                "{} {} is beyond the {count} there are",
                a.kind.name(),
                a.index
            )));
        }
        Ok(())
    }

    /// The pointer block at `raw` (read and checked on first use).
    fn ptr(&mut self, ctx: &Ctx, raw: u64, level: u8) -> FsResult<&mut PointerBlock> {
        let addr = self.ptr_addr(ctx, raw)?;
        if !self.ptrs.contains_key(&addr) {
            // Unheld (another host writes the file): a torn read is retried.
            let p = ctx.read_decoded(addr, self.ptr_size as usize, |b| {
                Ok(PointerBlock::decode(b, addr)?)
            })?;
            if p.owner != self.inode.ino || p.level != level {
                return Err(self.corrupt(format!(
                    "pointer block at {addr} belongs to inode {} at level {}, expected level {level}",
                    p.owner, p.level
                )));
            }
            self.ptrs.insert(addr, p);
        }
        Ok(self.ptrs.get_mut(&addr).expect("inserted above"))
    }

    /// Raw address of block `n` (0: a hole).
    pub fn get_raw(&mut self, ctx: &Ctx, n: u64) -> FsResult<u64> {
        if self.is_small() && n >= DIRECT as u64 {
            // Past the direct slots of a small-block file: always a hole (its
            // size may reach far beyond what 64 KiB blocks could address).
            return Ok(0);
        }
        Ok(match self.slot(n)? {
            Slot::Direct(i) => self.inode.direct[i],
            Slot::Indirect(i) => match self.inode.indirect {
                0 => 0,
                p => self.ptr(ctx, p, 1)?.entries[i],
            },
            Slot::Double(a, b) => match self.inode.double {
                0 => 0,
                p => match self.ptr(ctx, p, 2)?.entries[a] {
                    0 => 0,
                    l1 => self.ptr(ctx, l1, 1)?.entries[b],
                },
            },
        })
    }

    /// Decoded address of data block `n`, checked to be of this map's kind.
    pub fn get(&mut self, ctx: &Ctx, n: u64) -> FsResult<Option<BlockAddr>> {
        let raw = self.get_raw(ctx, n)?;
        let a = BlockAddr::decode(raw).map_err(|w| self.corrupt(w))?;
        if let Some(a) = a {
            if a.kind != self.data_kind {
                return Err(self.corrupt(format!(
                    "block {n} is a {}, expected a {}",
                    a.kind.name(),
                    self.data_kind.name()
                )));
            }
            self.check_index(ctx, a)?;
        }
        Ok(a)
    }

    /// Device offset of a data block address.
    pub fn data_addr(&self, ctx: &Ctx, a: BlockAddr) -> u64 {
        ctx.vol.resource_addr(a.kind, a.index)
    }

    fn need_lock(&self) -> FsResult<HeldLock> {
        self.lock.ok_or_else(|| FsError::Busy {
            ino: self.inode.ino,
            why: "changing a block map needs the inode lock EXCLUSIVE".into(),
        })
    }

    fn new_ptr(
        &mut self,
        ctx: &Ctx,
        alloc: &mut Allocator,
        ch: &mut Change,
        level: u8,
    ) -> FsResult<u64> {
        let r = alloc.alloc(ch, ResourceKind::PointerBlock)?;
        let addr = ctx.vol.resource_addr(ResourceKind::PointerBlock, r);
        self.ptrs.insert(
            addr,
            PointerBlock::new(addr, self.inode.ino, level, self.ptr_size),
        );
        self.dirty.insert(addr);
        self.inode.blocks += 1;
        self.inode_dirty = true;
        Ok(BlockAddr::new(ResourceKind::PointerBlock, r).encode())
    }

    fn set_ptr_entry(&mut self, ctx: &Ctx, p: u64, level: u8, i: usize, raw: u64) -> FsResult<()> {
        let addr = self.ptr_addr(ctx, p)?;
        self.ptr(ctx, p, level)?.entries[i] = raw;
        self.dirty.insert(addr);
        Ok(())
    }

    /// Set block `n`'s raw address, allocating pointer blocks on the way.
    pub fn set(
        &mut self,
        ctx: &Ctx,
        alloc: &mut Allocator,
        ch: &mut Change,
        n: u64,
        raw: u64,
    ) -> FsResult<()> {
        self.need_lock()?;
        match self.slot(n)? {
            Slot::Direct(i) => {
                self.inode.direct[i] = raw;
                self.inode_dirty = true;
            }
            Slot::Indirect(i) => {
                if self.inode.indirect == 0 {
                    if raw == 0 {
                        return Ok(());
                    }
                    self.inode.indirect = self.new_ptr(ctx, alloc, ch, 1)?;
                }
                let p = self.inode.indirect;
                self.set_ptr_entry(ctx, p, 1, i, raw)?;
            }
            Slot::Double(a, b) => {
                if self.inode.double == 0 {
                    if raw == 0 {
                        return Ok(());
                    }
                    self.inode.double = self.new_ptr(ctx, alloc, ch, 2)?;
                }
                let d = self.inode.double;
                let mut l1 = self.ptr(ctx, d, 2)?.entries[a];
                if l1 == 0 {
                    if raw == 0 {
                        return Ok(());
                    }
                    l1 = self.new_ptr(ctx, alloc, ch, 1)?;
                    self.set_ptr_entry(ctx, d, 2, a, l1)?;
                }
                self.set_ptr_entry(ctx, l1, 1, b, raw)?;
            }
        }
        Ok(())
    }

    /// First allocated data block at or after `from`, with its raw address.
    pub fn next_allocated(&mut self, ctx: &Ctx, from: u64) -> FsResult<Option<(u64, u64)>> {
        let e = self.entries;
        let d = DIRECT as u64;
        for n in from..d {
            let raw = self.inode.direct[n as usize];
            if raw != 0 {
                return Ok(Some((n, raw)));
            }
        }
        if self.inode.indirect != 0 && from < d + e {
            let start = from.max(d) - d;
            let p = self.inode.indirect;
            let pb = self.ptr(ctx, p, 1)?;
            if let Some(i) = (start..e).find(|&i| pb.entries[i as usize] != 0) {
                return Ok(Some((d + i, pb.entries[i as usize])));
            }
        }
        if self.inode.double != 0 {
            let base = d + e;
            let start = from.max(base) - base;
            let dbl = self.inode.double;
            for a in start / e..e {
                let l1 = self.ptr(ctx, dbl, 2)?.entries[a as usize];
                if l1 == 0 {
                    continue;
                }
                let lo = if a == start / e { start % e } else { 0 };
                let pb = self.ptr(ctx, l1, 1)?;
                if let Some(b) = (lo..e).find(|&b| pb.entries[b as usize] != 0) {
                    return Ok(Some((base + a * e + b, pb.entries[b as usize])));
                }
            }
        }
        Ok(None)
    }

    /// Every pointer block address this map uses.
    pub fn pointer_blocks(&mut self, ctx: &Ctx) -> FsResult<Vec<u64>> {
        let mut out = Vec::new();
        if self.inode.indirect != 0 {
            out.push(self.inode.indirect);
        }
        if self.inode.double != 0 {
            let d = self.inode.double;
            out.push(d);
            let l2 = self.ptr(ctx, d, 2)?.entries.clone();
            out.extend(l2.into_iter().filter(|&x| x != 0));
        }
        Ok(out)
    }

    /// Free data blocks `from..` (at most `budget` of them) and any pointer
    /// block left empty. Returns true when nothing is left at or past `from`.
    pub fn free_from(
        &mut self,
        ctx: &Ctx,
        alloc: &mut Allocator,
        ch: &mut Change,
        from: u64,
        budget: usize,
    ) -> FsResult<bool> {
        self.need_lock()?;
        let mut n = from;
        let mut freed = 0;
        let done = loop {
            if freed >= budget || self.staged_bytes(ch) > self.txn_limit {
                break self.next_allocated(ctx, n)?.is_none();
            }
            let Some((m, raw)) = self.next_allocated(ctx, n)? else {
                break true;
            };
            let a = BlockAddr::decode(raw)
                .map_err(|w| self.corrupt(w))?
                .expect("next_allocated returns no holes");
            alloc.free(ch, a.kind, a.index)?;
            self.set(ctx, alloc, ch, m, 0)?;
            self.inode.blocks = self.inode.blocks.saturating_sub(1);
            self.inode_dirty = true;
            freed += 1;
            n = m + 1;
        };
        self.prune(ctx, alloc, ch)?;
        Ok(done)
    }

    /// Bytes a transaction staging `ch` and this map's changes would carry.
    pub fn staged_bytes(&self, ch: &Change) -> usize {
        ch.bytes() + self.dirty.len() * self.ptr_size as usize + 4096
    }

    /// Free pointer blocks whose entries are all holes.
    pub fn prune(&mut self, ctx: &Ctx, alloc: &mut Allocator, ch: &mut Change) -> FsResult<()> {
        if self.inode.double != 0 {
            let d = self.inode.double;
            let l2 = self.ptr(ctx, d, 2)?.entries.clone();
            for (a, &l1) in l2.iter().enumerate() {
                if l1 == 0 {
                    continue;
                }
                let addr = self.ptr_addr(ctx, l1)?;
                if !self.dirty.contains(&addr) {
                    continue;
                }
                if self.ptr(ctx, l1, 1)?.entries.iter().all(|&x| x == 0) {
                    self.drop_ptr(ctx, alloc, ch, l1)?;
                    self.set_ptr_entry(ctx, d, 2, a, 0)?;
                }
            }
            if self.ptr(ctx, d, 2)?.entries.iter().all(|&x| x == 0) {
                self.drop_ptr(ctx, alloc, ch, d)?;
                self.inode.double = 0;
            }
        }
        if self.inode.indirect != 0 {
            let p = self.inode.indirect;
            if self.ptr(ctx, p, 1)?.entries.iter().all(|&x| x == 0) {
                self.drop_ptr(ctx, alloc, ch, p)?;
                self.inode.indirect = 0;
            }
        }
        Ok(())
    }

    fn drop_ptr(
        &mut self,
        ctx: &Ctx,
        alloc: &mut Allocator,
        ch: &mut Change,
        raw: u64,
    ) -> FsResult<()> {
        let addr = self.ptr_addr(ctx, raw)?;
        let a = BlockAddr::decode(raw)
            .map_err(|w| self.corrupt(w))?
            .expect("not a hole");
        alloc.free(ch, ResourceKind::PointerBlock, a.index)?;
        self.ptrs.remove(&addr);
        self.dirty.remove(&addr);
        self.inode.blocks = self.inode.blocks.saturating_sub(1);
        self.inode_dirty = true;
        Ok(())
    }

    /// Stage the changed pointer blocks and inode body in `ch`.
    pub fn stage(&mut self, ch: &mut Change) -> FsResult<()> {
        let lock = self.need_lock()?;
        for addr in std::mem::take(&mut self.dirty) {
            ch.put(addr, self.ptrs[&addr].encode(), &lock);
        }
        if self.inode_dirty {
            ch.put(self.inode.addr, self.inode.encode(), &lock);
            self.inode_dirty = false;
        }
        Ok(())
    }

    /// Forget everything cached and re-read the inode (after a failed change).
    pub fn reload(&mut self, ctx: &Ctx) -> FsResult<()> {
        self.ptrs.clear();
        self.dirty.clear();
        self.inode_dirty = false;
        self.inode = ctx.read_inode(self.inode.ino)?;
        self.set_kind(ctx);
        Ok(())
    }

    /// Read `buf.len()` bytes of the device at `off` (any alignment).
    pub fn read_dev(ctx: &Ctx, off: u64, buf: &mut [u8]) -> FsResult<()> {
        let s = off & !511;
        let e = (off + buf.len() as u64).div_ceil(512) * 512;
        if s == off && e == off + buf.len() as u64 {
            ctx.dev.read_at(buf, off)?;
            return Ok(());
        }
        let mut tmp = vec![0u8; (e - s) as usize];
        ctx.dev.read_at(&mut tmp, s)?;
        let o = (off - s) as usize;
        buf.copy_from_slice(&tmp[o..o + buf.len()]);
        Ok(())
    }
}

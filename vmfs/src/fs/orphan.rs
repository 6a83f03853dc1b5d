//! The orphan table (layout in `docs/format.md` §13): inodes whose space is
//! still being freed. An inode goes on it, in a transaction of its own,
//! *before* the change that could leave its space unreachable after a crash
//! — the unlink of a file open here (reclaimed at its last close), the
//! unlink of a file too large to free in one transaction, a truncate that
//! frees more than one transaction can — and comes off it after the last
//! transaction of the free. Whoever finds an entry whose inode nobody
//! holds (this host at mount, any host's housekeeping: a crashed host's
//! orphans once its locks can be broken) finishes the free.

use crate::format::orphan::OrphanTable;
use crate::format::{BlockAddr, LockMode, ResourceKind};

use super::bmap::FileMap;
use super::change::Change;
use super::error::{FsError, FsResult};
use super::{Inner, Locked, State, FREE_BATCH};

/// Does freeing `map`'s blocks take more than one transaction?
pub(super) fn needs_batches(map: &FileMap) -> bool {
    map.inode.blocks > FREE_BATCH as u64
}

impl Inner {
    fn small_size(&self) -> usize {
        self.ctx
            .vol
            .header
            .region(ResourceKind::SmallBlock)
            .resource_size as usize
    }

    /// The table's entries (`root` is the root directory's map).
    fn read_orphans(&self, root: &FileMap) -> FsResult<Vec<(u64, u64)>> {
        let Some(a) = BlockAddr::decode(root.inode.orphans)
            .map_err(|why| FsError::Corrupt {
                ino: root.ino(),
                why: format!("orphan table address: {why}"),
            })?
            .filter(|a| a.kind == ResourceKind::SmallBlock)
        else {
            return Ok(Vec::new());
        };
        let addr = self.ctx.vol.resource_addr(a.kind, a.index);
        let mut b = vec![0u8; self.small_size()];
        FileMap::read_dev(&self.ctx, addr, &mut b)?;
        Ok(OrphanTable::decode(&b, addr)?.entries)
    }

    /// Rewrite the table with `entries` (allocating or freeing its block)
    /// and commit it with the root inode.
    fn write_orphans(
        &self,
        st: &mut State,
        root: &mut FileMap,
        entries: Vec<(u64, u64)>,
    ) -> FsResult<()> {
        let lock = root.lock.ok_or_else(|| FsError::Busy {
            ino: root.ino(),
            why: "the orphan table needs the root directory's lock".into(),
        })?;
        let mut ch = Change::new();
        let staged = (|| {
            let cur = BlockAddr::decode(root.inode.orphans)
                .ok()
                .flatten()
                .filter(|a| a.kind == ResourceKind::SmallBlock);
            if entries.is_empty() {
                if let Some(a) = cur {
                    st.alloc.free(&mut ch, a.kind, a.index)?;
                    root.inode.orphans = 0;
                    root.inode.blocks = root.inode.blocks.saturating_sub(1);
                }
                return Ok(());
            }
            let a = match cur {
                Some(a) => a,
                None => {
                    let r = st.alloc.alloc(&mut ch, ResourceKind::SmallBlock)?;
                    let a = BlockAddr::new(ResourceKind::SmallBlock, r);
                    root.inode.orphans = a.encode();
                    root.inode.blocks += 1;
                    a
                }
            };
            let addr = self.ctx.vol.resource_addr(a.kind, a.index);
            let img = OrphanTable { addr, entries }
                .encode(self.small_size())
                .ok_or_else(|| FsError::NoSpace("the orphan table is full".into()))?;
            ch.put(addr, img, &lock);
            Ok(())
        })();
        root.inode_dirty = true;
        if let Err(e) = staged {
            st.alloc.invalidate(&ch);
            root.reload(&self.ctx)?;
            return Err(e);
        }
        self.commit(st, ch, &mut [root])
    }

    /// Run `f` on the root directory's map: `held` when the operation holds
    /// the root already, else locked for the call.
    fn with_root<T>(
        &self,
        st: &mut State,
        held: Option<&mut FileMap>,
        f: impl FnOnce(&Inner, &mut State, &mut FileMap) -> FsResult<T>,
    ) -> FsResult<T> {
        if let Some(root) = held {
            return f(self, st, root);
        }
        let mut l: Locked = self.lock_inode(st, self.ctx.vol.header.root_ino)?;
        let r = f(self, st, &mut l.map);
        let rel = self.release(st, l);
        let v = r?;
        rel?;
        Ok(v)
    }

    /// Put `map`'s inode on the orphan table (`root`: the root directory's
    /// map if this operation holds it).
    pub(super) fn orphan_add(
        &self,
        st: &mut State,
        root: Option<&mut FileMap>,
        map: &FileMap,
    ) -> FsResult<()> {
        let e = (map.ino(), map.inode.generation);
        self.with_root(st, root, |i, st, root| {
            let mut entries = i.read_orphans(root)?;
            if entries.contains(&e) {
                return Ok(());
            }
            entries.push(e);
            i.write_orphans(st, root, entries)
        })
    }

    /// Take `(ino, generation)` off the orphan table.
    pub(super) fn orphan_remove(
        &self,
        st: &mut State,
        root: Option<&mut FileMap>,
        e: (u64, u64),
    ) -> FsResult<()> {
        self.with_root(st, root, |i, st, root| {
            let mut entries = i.read_orphans(root)?;
            let before = entries.len();
            entries.retain(|x| *x != e);
            if entries.len() == before {
                return Ok(());
            }
            i.write_orphans(st, root, entries)
        })
    }

    /// Finish the frees of every orphan nobody holds (not open here, lock
    /// free or its holder gone). Returns how many were finished.
    pub(super) fn finish_orphans(&self, st: &mut State) -> FsResult<usize> {
        let root_ino = self.ctx.vol.header.root_ino;
        if self.ctx.read_inode(root_ino)?.orphans == 0 {
            return Ok(0);
        }
        let mut root = self.lock_inode(st, root_ino)?;
        let r = self.finish_orphans_locked(st, &mut root.map);
        let rel = self.release(st, root);
        let n = r?;
        rel?;
        Ok(n)
    }

    fn finish_orphans_locked(&self, st: &mut State, root: &mut FileMap) -> FsResult<usize> {
        let mut done = 0;
        for (ino, generation) in self.read_orphans(root)? {
            if st.open.contains_key(&ino) {
                continue; // ours, reclaimed at its last close
            }
            let addr = self.ctx.lock_addr(ino);
            let Some(lock) = self.ctx.host.try_lock(addr, ino, LockMode::Exclusive)? else {
                continue; // open on a live host: its close finishes it
            };
            let r = self.finish_one(st, ino, generation, lock);
            let un = self.ctx.host.unlock(addr);
            r?;
            un?;
            self.orphan_remove(st, Some(root), (ino, generation))?;
            done += 1;
        }
        Ok(done)
    }

    /// Finish one orphan's free (its lock held): reclaim it if it has no
    /// links, else free its blocks past the end (an interrupted truncate).
    /// Nothing if the inode was freed (or reused) meanwhile.
    fn finish_one(
        &self,
        st: &mut State,
        ino: u64,
        generation: u64,
        lock: crate::cluster::HeldLock,
    ) -> FsResult<()> {
        if !st.alloc.is_allocated(ResourceKind::Inode, ino)? {
            return Ok(());
        }
        let mut map = self.new_map(ino, Some(lock))?;
        if map.inode.generation != generation {
            return Ok(());
        }
        if map.inode.nlink == 0 {
            tracing::info!("reclaiming orphan inode {ino}");
            return self.reclaim(st, &mut map);
        }
        let size = map.inode.size;
        self.free_past(st, &mut map, size)
    }
}

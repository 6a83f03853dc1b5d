//! Small files in small blocks, and their promotion to file blocks.
//!
//! A regular file created on a volume with the SMALL_FILES feature starts
//! with the inode flag SMALL_BLOCKS: its block map addresses 64 KiB small
//! blocks, all in the first direct slots, none at or past the small-file
//! limit (one file block). The first allocation that would place data at
//! or past the limit — a write, a preallocation, thick inflation — or that
//! finds the small-block region full first *promotes* the file:
//!
//! 1. a file block is allocated (in a held cluster, not yet committed) and
//!    the small blocks' bytes are written into it on the device, holes and
//!    to-be-zeroed blocks as zeros;
//! 2. one transaction switches the map: `direct[0]` names the file block,
//!    the other small slots are cleared, SMALL_BLOCKS is cleared, `blocks`
//!    is recounted, the file block is allocated and the small blocks freed
//!    in their cluster bitmaps.
//!
//! The copy is flushed before the transaction's record is written (the
//! record and the copy must not share one flush: the record could land
//! without the copy), so the copy is durable before any map names it. A
//! crash before the commit leaves the old map
//! and the old small blocks intact and the file block free (its bytes are
//! garbage in a free block); after it, the new map. Freed small blocks are
//! discarded after the commit, like any freed data block. Promotion is one
//! way: truncating a promoted file back down leaves it in file blocks.

use crate::dev::BlockDev;
use crate::format::header::FEATURE_SMALL_FILES;
use crate::format::inode::FLAG_SMALL_BLOCKS;
use crate::format::{BlockAddr, Inode, ResourceKind};

use super::bmap::FileMap;
use super::change::Change;
use super::error::{FsError, FsResult};
use super::inode::{file_type, Ctx};
use super::{Inner, State};

/// Flag a new inode SMALL_BLOCKS when it is a regular file and the volume
/// has small files (volumes made before the feature keep file blocks).
pub(super) fn start_small(ctx: &Ctx, inode: &mut Inode) {
    if file_type(inode.mode) == libc::S_IFREG && ctx.vol.header.features & FEATURE_SMALL_FILES != 0
    {
        inode.flags |= FLAG_SMALL_BLOCKS;
    }
}

/// Would allocating anything in `off..end` put data of this small-block
/// file at or past the small-file limit?
pub(super) fn needs_promotion(ctx: &Ctx, map: &FileMap, off: u64, end: u64) -> bool {
    map.is_small() && end > off && end > map.small_limit(ctx)
}

impl Inner {
    /// Promote `map` if it is a small-block file and `off..end` reaches
    /// past the small-file limit.
    pub(super) fn promote_for(
        &self,
        st: &mut State,
        map: &mut FileMap,
        off: u64,
        end: u64,
    ) -> FsResult<()> {
        if needs_promotion(&self.ctx, map, off, end) {
            self.promote(st, map)?;
        }
        Ok(())
    }

    /// Move a small-block file's data into a file block (see the module
    /// comment for the order and the crash argument). No-op for a file
    /// already in file blocks.
    pub(super) fn promote(&self, st: &mut State, map: &mut FileMap) -> FsResult<()> {
        if !map.is_small() {
            return Ok(());
        }
        let mut ch = Change::new();
        let r = self.stage_promotion(st, map, &mut ch);
        if let Err(e) = r {
            st.alloc.invalidate(&ch);
            map.reload(&self.ctx)?;
            return Err(e);
        }
        self.commit(st, ch, &mut [map])
    }

    fn stage_promotion(&self, st: &mut State, map: &mut FileMap, ch: &mut Change) -> FsResult<()> {
        let ctx = &self.ctx;
        let n = map.small_limit_blocks(ctx);
        let sb = map.block_size;
        let mut small = Vec::new();
        for i in 0..n {
            if let Some(a) = map.get(ctx, i)? {
                small.push((i, a));
            }
        }
        let fb = map.file_block_size;
        let target = if small.is_empty() {
            None
        } else {
            let r = st.alloc.alloc(ch, ResourceKind::FileBlock)?;
            // Only lazily zeroed small blocks: the file block inherits the
            // to-be-zeroed bit and nothing is copied.
            let lazy = small.iter().all(|(_, a)| a.to_be_zeroed);
            let a = BlockAddr {
                kind: ResourceKind::FileBlock,
                index: r,
                to_be_zeroed: lazy,
            };
            if !lazy {
                let mut buf = vec![0u8; fb as usize];
                for &(i, s) in &small {
                    if !s.to_be_zeroed {
                        let o = (i * sb) as usize;
                        ctx.dev
                            .read_at(&mut buf[o..o + sb as usize], map.data_addr(ctx, s))?;
                    }
                }
                ctx.dev.write_at(&buf, map.data_addr(ctx, a))?;
                // The journal record and the copy would otherwise share
                // one flush: a crash could land the record without the
                // copy, and the switched map would name unwritten bytes
                // of data that was already promised (the crash sweep
                // finds exactly that).
                ctx.dev.flush()?;
            }
            Some(a)
        };
        for &(i, s) in &small {
            st.alloc.free(ch, s.kind, s.index)?;
            map.set(ctx, &mut st.alloc, ch, i, 0)?;
        }
        map.inode.flags &= !FLAG_SMALL_BLOCKS;
        map.inode.blocks = map.inode.blocks.saturating_sub(small.len() as u64);
        map.set_kind(ctx);
        if let Some(a) = target {
            map.set(ctx, &mut st.alloc, ch, 0, a.encode())?;
            map.inode.blocks += 1;
        }
        map.inode_dirty = true;
        if map.block_size != fb {
            return Err(FsError::Corrupt {
                ino: map.ino(),
                why: format!(
                    "promoted to blocks of {} bytes, expected file blocks of {fb}",
                    map.block_size
                ),
            });
        }
        Ok(())
    }
}

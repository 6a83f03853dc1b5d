//! File data through a block map: reads (holes and to-be-zeroed blocks read
//! as zeros), thin writes (allocate on first write, zero what the write
//! does not cover), preallocation (eager or lazily zeroed), punching holes.
//! Data always reaches the device before the change that makes it
//! reachable commits (the journal commit flushes it).

use crate::dev::BlockDev;
use crate::format::BlockAddr;

use super::alloc::Allocator;
use super::bmap::FileMap;
use super::change::Change;
use super::error::{FsError, FsResult};
use super::inode::Ctx;

/// Split `off..off+len` into (block number, offset in block, length).
pub(super) fn pieces(off: u64, len: u64, bs: u64) -> impl Iterator<Item = (u64, u64, u64)> {
    let end = off + len;
    let mut pos = off;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let n = pos / bs;
        let s = pos % bs;
        let l = (bs - s).min(end - pos);
        pos += l;
        Some((n, s, l))
    })
}

/// Read `buf.len()` bytes at `off` (the caller clamps to the file size).
pub fn read(map: &mut FileMap, ctx: &Ctx, off: u64, buf: &mut [u8]) -> FsResult<()> {
    let bs = map.block_size;
    let mut done = 0usize;
    for (n, s, l) in pieces(off, buf.len() as u64, bs) {
        let out = &mut buf[done..done + l as usize];
        match map.get(ctx, n)? {
            Some(a) if !a.to_be_zeroed => {
                FileMap::read_dev(ctx, map.data_addr(ctx, a) + s, out)?;
            }
            _ => out.fill(0),
        }
        done += l as usize;
    }
    Ok(())
}

/// Write `data` into block `a` at `s` (block-relative). `fresh`: the block's
/// current content is to be treated as zeros (new or to-be-zeroed), so the
/// parts the write does not cover are zeroed.
fn write_piece(ctx: &Ctx, base: u64, bs: u64, s: u64, data: &[u8], fresh: bool) -> FsResult<()> {
    let e = s + data.len() as u64;
    let (as_, ae) = (s & !511, e.div_ceil(512) * 512);
    if as_ == s && ae == e {
        ctx.dev.write_at(data, base + s)?;
    } else {
        let mut tmp = vec![0u8; (ae - as_) as usize];
        if !fresh {
            ctx.dev.read_at(&mut tmp, base + as_)?;
        }
        tmp[(s - as_) as usize..(e - as_) as usize].copy_from_slice(data);
        ctx.dev.write_at(&tmp, base + as_)?;
    }
    if fresh {
        if as_ > 0 {
            ctx.dev.write_zeroes(base, as_)?;
        }
        if ae < bs {
            ctx.dev.write_zeroes(base + ae, bs - ae)?;
        }
    }
    Ok(())
}

/// Write `data` at `off`, allocating blocks as needed. Returns the bytes
/// written: fewer than asked only when the volume ran out of space after
/// some were written (ENOSPC if none could be).
pub fn write(
    map: &mut FileMap,
    ctx: &Ctx,
    alloc: &mut Allocator,
    ch: &mut Change,
    off: u64,
    data: &[u8],
) -> FsResult<usize> {
    let bs = map.block_size;
    let end = off
        .checked_add(data.len() as u64)
        .filter(|&e| e <= map.max_blocks() * bs)
        .ok_or_else(|| {
            FsError::TooBig(format!(
                "inode {}: write at {off} (+{}) ends past the {} bytes a file can hold",
                map.ino(),
                data.len(),
                map.max_blocks() * bs
            ))
        })?;
    let mut done = 0usize;
    for (n, s, l) in pieces(off, data.len() as u64, bs) {
        let piece = &data[done..done + l as usize];
        let cur = map.get(ctx, n)?;
        match cur {
            Some(a) if !a.to_be_zeroed => {
                write_piece(ctx, map.data_addr(ctx, a), bs, s, piece, false)?;
            }
            _ => {
                let a = match cur {
                    Some(a) => a,
                    None => {
                        let r = match alloc_data(alloc, ch, map) {
                            Ok(r) => r,
                            Err(FsError::NoSpace(_)) if done > 0 => break,
                            Err(e) => return Err(e),
                        };
                        map.inode.blocks += 1;
                        BlockAddr::new(map.data_kind, r)
                    }
                };
                write_piece(ctx, map.data_addr(ctx, a), bs, s, piece, true)?;
                ch.data_written();
                let clean = BlockAddr {
                    to_be_zeroed: false,
                    ..a
                };
                match map.set(ctx, alloc, ch, n, clean.encode()) {
                    Ok(()) => {}
                    Err(FsError::NoSpace(_)) if done > 0 => {
                        // No pointer block for it: give the block back.
                        if cur.is_none() {
                            alloc.free(ch, a.kind, a.index)?;
                            map.inode.blocks -= 1;
                        }
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        done += l as usize;
    }
    let end = end.min(off + done as u64);
    if end > map.inode.size {
        map.inode.size = end;
    }
    map.inode_dirty = true;
    Ok(done)
}

/// Allocate blocks under `off..off+len` that are holes. `lazy`: mark them
/// to-be-zeroed (no I/O); else zero them on the device now.
pub fn preallocate(
    map: &mut FileMap,
    ctx: &Ctx,
    alloc: &mut Allocator,
    ch: &mut Change,
    off: u64,
    len: u64,
    lazy: bool,
) -> FsResult<()> {
    let bs = map.block_size;
    let first = off / bs;
    let last = (off + len).div_ceil(bs);
    if last > map.max_blocks() {
        return Err(FsError::TooBig(format!(
            "inode {}: allocation up to {} bytes is past the largest file",
            map.ino(),
            off + len
        )));
    }
    for n in first..last {
        if map.get(ctx, n)?.is_some() {
            continue;
        }
        let r = alloc_data(alloc, ch, map)?;
        let a = BlockAddr {
            kind: map.data_kind,
            index: r,
            to_be_zeroed: lazy,
        };
        if !lazy {
            ctx.dev.write_zeroes(map.data_addr(ctx, a), bs)?;
            ch.data_written();
        }
        map.inode.blocks += 1;
        map.set(ctx, alloc, ch, n, a.encode())?;
    }
    map.inode_dirty = true;
    Ok(())
}

/// Zero `off..off+len` inside allocated blocks (partial blocks of a punch
/// or truncate); holes and to-be-zeroed blocks are zero already.
pub fn zero_range(map: &mut FileMap, ctx: &Ctx, off: u64, len: u64) -> FsResult<()> {
    let bs = map.block_size;
    for (n, s, l) in pieces(off, len, bs) {
        if let Some(a) = map.get(ctx, n)? {
            if !a.to_be_zeroed {
                zero_in_block(ctx, map.data_addr(ctx, a), bs, s, l)?;
            }
        }
    }
    Ok(())
}

/// Smallest sector-aligned span worth a `write_zeroes` (an allocation-free
/// zero range on files, WRITE SAME on LUNs) instead of a buffer of zeros.
const ZEROES_MIN: u64 = 64 << 10;

/// Zero `s..s+l` of the allocated block at `base`: the sector-aligned
/// interior with `write_zeroes` when large (truncating a 1 MiB block would
/// otherwise write up to 1 MiB of zeros), the partial sectors at the edges
/// by read-modify-write.
fn zero_in_block(ctx: &Ctx, base: u64, bs: u64, s: u64, l: u64) -> FsResult<()> {
    let e = s + l;
    let (is, ie) = (s.div_ceil(512) * 512, e / 512 * 512);
    if ie <= is || ie - is < ZEROES_MIN {
        let zeros = vec![0u8; l as usize];
        return write_piece(ctx, base, bs, s, &zeros, false);
    }
    if s < is {
        write_piece(ctx, base, bs, s, &vec![0u8; (is - s) as usize], false)?;
    }
    ctx.dev.write_zeroes(base + is, ie - is)?;
    if ie < e {
        write_piece(ctx, base, bs, ie, &vec![0u8; (e - ie) as usize], false)?;
    }
    Ok(())
}

/// Free the whole blocks inside `off..off+len` (at most `budget`), zero the
/// partial ones at the edges. Returns true when done.
pub fn punch(
    map: &mut FileMap,
    ctx: &Ctx,
    alloc: &mut Allocator,
    ch: &mut Change,
    off: u64,
    len: u64,
    budget: usize,
) -> FsResult<bool> {
    let bs = map.block_size;
    let end = off.saturating_add(len);
    let first_whole = off.div_ceil(bs);
    let end_whole = end / bs;
    if first_whole >= end_whole {
        zero_range(map, ctx, off, len)?;
        return Ok(true);
    }
    zero_range(map, ctx, off, first_whole * bs - off)?;
    zero_range(map, ctx, end_whole * bs, end - end_whole * bs)?;
    let mut freed = 0;
    let mut n = first_whole;
    while let Some((m, raw)) = map.next_allocated(ctx, n)? {
        if m >= end_whole {
            break;
        }
        if freed >= budget || map.staged_bytes(ch) > map.txn_limit {
            map.prune(ctx, alloc, ch)?;
            return Ok(false);
        }
        let a = BlockAddr::decode(raw)
            .map_err(|why| FsError::Corrupt {
                ino: map.ino(),
                why,
            })?
            .expect("not a hole");
        alloc.free(ch, a.kind, a.index)?;
        map.set(ctx, alloc, ch, m, 0)?;
        map.inode.blocks = map.inode.blocks.saturating_sub(1);
        freed += 1;
        n = m + 1;
    }
    map.prune(ctx, alloc, ch)?;
    map.inode_dirty = true;
    Ok(true)
}

/// SEEK_DATA (`data`) or SEEK_HOLE from `off`; `None`: ENXIO (no data at or
/// after `off`, or `off` at or past the end).
pub fn seek(map: &mut FileMap, ctx: &Ctx, off: u64, data: bool) -> FsResult<Option<u64>> {
    let size = map.inode.size;
    if off >= size {
        return Ok(None);
    }
    let bs = map.block_size;
    let mut n = off / bs;
    if data {
        // To-be-zeroed blocks are allocated: they count as data.
        return Ok(match map.next_allocated(ctx, n)? {
            Some((m, _)) if m * bs < size => Some((m * bs).max(off)),
            _ => None,
        });
    }
    loop {
        if n * bs >= size {
            return Ok(Some(size));
        }
        if map.get(ctx, n)?.is_none() {
            return Ok(Some((n * bs).max(off)));
        }
        n += 1;
    }
}

/// A new data block for `map`: a small-block file's stays out of the
/// small-block clusters' reserve (kept for directories).
pub(super) fn alloc_data(alloc: &mut Allocator, ch: &mut Change, map: &FileMap) -> FsResult<u64> {
    if map.is_small() {
        alloc.alloc_small_file_data(ch)
    } else {
        alloc.alloc(ch, map.data_kind)
    }
}

//! File I/O outside the filesystem's operation mutex. Under the mutex a
//! byte range of an open file is resolved through its block map (pointer
//! blocks cached in the [`FileMap`]) into device extents and zero fills and
//! the file's data guard is taken shared; the device I/O then runs with the
//! mutex dropped, so reads of one file, of different files, and metadata
//! operations of other files overlap. Only overwrites of blocks that are
//! allocated, not to-be-zeroed and inside the file size go this way: they
//! change no metadata. Everything else stays under the mutex (`data.rs`).

use crate::dev::BlockDev;

use super::bmap::FileMap;
use super::data::pieces;
use super::error::FsResult;
use super::inode::Ctx;

/// One stretch of a resolved range, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// `len` bytes on the device at `addr`.
    Dev { addr: u64, len: u64 },
    /// `len` bytes that read as zeros (a hole or a to-be-zeroed block).
    Zero { len: u64 },
}

/// Append `e`, merging it into the last extent when they are contiguous
/// (a file's blocks are often adjacent on the device: one pread for many).
fn push(out: &mut Vec<Extent>, e: Extent) {
    match (out.last_mut(), e) {
        (Some(Extent::Dev { addr, len }), Extent::Dev { addr: a, len: l }) if *addr + *len == a => {
            *len += l;
        }
        (Some(Extent::Zero { len }), Extent::Zero { len: l }) => *len += l,
        _ => out.push(e),
    }
}

/// Resolve `off..off+len` (inside the file) for reading.
pub fn for_read(map: &mut FileMap, ctx: &Ctx, off: u64, len: u64) -> FsResult<Vec<Extent>> {
    let bs = map.block_size;
    let mut out = Vec::new();
    for (n, s, l) in pieces(off, len, bs) {
        let e = match map.get(ctx, n)? {
            Some(a) if !a.to_be_zeroed => Extent::Dev {
                addr: map.data_addr(ctx, a) + s,
                len: l,
            },
            _ => Extent::Zero { len: l },
        };
        push(&mut out, e);
    }
    Ok(out)
}

/// Resolve `off..off+len` for an overwrite that needs no metadata change:
/// `None` unless every block under it is allocated and not to-be-zeroed,
/// the range ends inside the file, and it is whole sectors (a partial
/// sector needs a read-modify-write, which must not interleave with
/// another write of the same sector: those stay under the mutex).
pub fn for_overwrite(
    map: &mut FileMap,
    ctx: &Ctx,
    off: u64,
    len: u64,
) -> FsResult<Option<Vec<Extent>>> {
    let inside = off
        .checked_add(len)
        .is_some_and(|end| end <= map.inode.size);
    if len == 0 || !inside || off % 512 != 0 || len % 512 != 0 {
        return Ok(None);
    }
    let bs = map.block_size;
    let mut out = Vec::new();
    for (n, s, l) in pieces(off, len, bs) {
        match map.get(ctx, n)? {
            Some(a) if !a.to_be_zeroed => push(
                &mut out,
                Extent::Dev {
                    addr: map.data_addr(ctx, a) + s,
                    len: l,
                },
            ),
            _ => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// Fill `buf` from resolved extents covering exactly `buf.len()` bytes.
pub fn read(ctx: &Ctx, extents: &[Extent], buf: &mut [u8]) -> FsResult<()> {
    let mut done = 0usize;
    for e in extents {
        match *e {
            Extent::Dev { addr, len } => {
                FileMap::read_dev(ctx, addr, &mut buf[done..done + len as usize])?;
                done += len as usize;
            }
            Extent::Zero { len } => {
                buf[done..done + len as usize].fill(0);
                done += len as usize;
            }
        }
    }
    Ok(())
}

/// Like [`read`], but only from the device's cache: `false` (and `buf`
/// undefined) as soon as a piece would wait for the medium.
pub fn read_cached(ctx: &Ctx, extents: &[Extent], buf: &mut [u8]) -> FsResult<bool> {
    let mut done = 0usize;
    for e in extents {
        match *e {
            Extent::Dev { addr, len } => {
                let out = &mut buf[done..done + len as usize];
                let s = addr & !511;
                let end = (addr + len).div_ceil(512) * 512;
                let hit = if s == addr && end == addr + len {
                    ctx.dev.read_cached(out, addr)?
                } else {
                    let mut tmp = vec![0u8; (end - s) as usize];
                    let hit = ctx.dev.read_cached(&mut tmp, s)?;
                    let o = (addr - s) as usize;
                    out.copy_from_slice(&tmp[o..o + out.len()]);
                    hit
                };
                if !hit {
                    return Ok(false);
                }
                done += len as usize;
            }
            Extent::Zero { len } => {
                buf[done..done + len as usize].fill(0);
                done += len as usize;
            }
        }
    }
    Ok(true)
}

/// The bytes of a resolved range as one slice of the device's memory
/// mapping ([`BlockDev::cached_view`]): only when the range is a single
/// device extent (no hole or to-be-zeroed block, which read as zeros
/// through [`read_cached`]) and the device's cache holds all of it.
/// The caller holds the file's data guard for as long as it uses the
/// slice, as it would across a read, so the blocks stay this file's.
pub fn mapped<'a>(ctx: &'a Ctx, extents: &[Extent]) -> FsResult<Option<&'a [u8]>> {
    match extents {
        [Extent::Dev { addr, len }] => Ok(ctx.dev.cached_view(*addr, *len)?),
        _ => Ok(None),
    }
}

/// Ask the device to start reading the device extents of a resolved range,
/// up to the first hole (a hint: nothing waits for it).
pub fn prefetch(ctx: &Ctx, extents: &[Extent]) {
    for e in extents {
        match *e {
            Extent::Dev { addr, len } => ctx.dev.prefetch(addr, len),
            Extent::Zero { .. } => return,
        }
    }
}

/// Write `data` through extents from [`for_overwrite`] (device only,
/// sector-aligned).
pub fn write(ctx: &Ctx, extents: &[Extent], data: &[u8]) -> FsResult<()> {
    let mut done = 0usize;
    for e in extents {
        if let Extent::Dev { addr, len } = *e {
            ctx.dev.write_at(&data[done..done + len as usize], addr)?;
            done += len as usize;
        }
    }
    Ok(())
}

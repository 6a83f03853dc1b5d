//! Open files: the lock an open holds (EXCLUSIVE for write, SHARED_READ
//! for read), reads, writes, fsync, fallocate, SEEK_DATA/SEEK_HOLE,
//! truncation and reclaiming an inode whose last link is gone.

use std::sync::{Arc, MutexGuard, TryLockError};

use crate::dev::BlockDev;
use crate::format::inode::FLAG_INLINE;
use crate::format::{LockMode, ResourceKind};

use super::bmap::FileMap;
use super::change::Change;
use super::data;
use super::error::{FsError, FsResult};
use super::inode::{is_dir, now_ns};
use super::io;
use super::orphan::needs_batches;
use super::{
    exclusive, lock_st, shared, DataGuard, Falloc, Fs, Inner, Open, OpenMeta, OpenMode, SetAttr,
    State, FREE_BATCH, WRITE_BATCH,
};

/// Where [`Fs::read_now`] hands the bytes of a read.
type Reply<'a> = &'a mut dyn FnMut(&[u8]);

/// Where [`Fs::read_now`] took the bytes it handed over from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadVia {
    /// A slice of the device's memory mapping (no copy of ours).
    Mapping,
    /// The caller's buffer, filled by a read (or zeros, inline data).
    Buffer,
}

impl Fs {
    /// Open `ino`. For write: EXCLUSIVE, held until the last close (a
    /// second host gets EBUSY). Read-only: SHARED_READ, or no lock at all
    /// when another host has the file open for write (reads then follow the
    /// on-disk block map as that host commits it).
    pub fn open(&self, ino: u64, write: bool) -> FsResult<u64> {
        let mut st = lock_st(&self.inner.st);
        let inner = &*self.inner;
        inner.ctx.check_ino(ino)?;
        let addr = inner.ctx.lock_addr(ino);
        let host = &inner.ctx.host;
        if let Some(o) = st.open.get_mut(&ino) {
            if write && o.mode != OpenMode::Exclusive {
                match host.try_lock(addr, ino, LockMode::Exclusive)? {
                    Some(l) if o.mode == OpenMode::Shared => {
                        o.map.lock = Some(l);
                        o.mode = OpenMode::Exclusive;
                    }
                    Some(l) => {
                        // Was unlocked (another host's writer has gone):
                        // start from the disk.
                        o.map.lock = Some(l);
                        o.map.reload(&inner.ctx)?;
                        o.mode = OpenMode::Exclusive;
                    }
                    None => {
                        return Err(FsError::Busy {
                            ino,
                            why: "open on another host".into(),
                        })
                    }
                }
            }
            if write {
                o.meta.writers += 1;
            } else {
                o.meta.readers += 1;
            }
        } else {
            let want = if write {
                LockMode::Exclusive
            } else {
                LockMode::SharedRead
            };
            let (lock, mode) = match host.try_lock(addr, ino, want)? {
                Some(l) if write => (Some(l), OpenMode::Exclusive),
                Some(_) => (None, OpenMode::Shared),
                None if write => {
                    return Err(FsError::Busy {
                        ino,
                        why: "open on another host".into(),
                    })
                }
                None => (None, OpenMode::Unlocked),
            };
            let map = match inner.new_map(ino, lock) {
                Ok(m) if write && is_dir(m.inode.mode) => {
                    let _ = host.unlock(addr);
                    return Err(FsError::IsDir(ino));
                }
                // Removed since the caller found it (another host unlinked
                // or replaced the name, and may have reclaimed it): opening
                // it would show an empty file, or nothing real at all.
                Ok(m) if m.inode.nlink == 0 => {
                    if mode != OpenMode::Unlocked {
                        let _ = host.unlock(addr);
                    }
                    return Err(FsError::Stale(ino));
                }
                Ok(m) => m,
                Err(e) => {
                    if mode != OpenMode::Unlocked {
                        let _ = host.unlock(addr);
                    }
                    return Err(e);
                }
            };
            let meta = OpenMeta::first(write);
            st.open.insert(
                ino,
                Open {
                    map,
                    mode,
                    meta,
                    data: DataGuard::default(),
                },
            );
        }
        Ok(st.new_handle(ino, write))
    }

    /// Close a handle; the last close of a file releases its lock (and
    /// reclaims it if it was unlinked while open).
    pub fn close(&self, fh: u64) -> FsResult<()> {
        let mut st = lock_st(&self.inner.st);
        let inner = &*self.inner;
        let (ino, write) = st.handles.remove(&fh).ok_or(FsError::BadHandle(fh))?;
        let addr = inner.ctx.lock_addr(ino);
        let o = st.open.get_mut(&ino).expect("open file of a handle");
        if write {
            o.meta.writers -= 1;
        } else {
            o.meta.readers -= 1;
        }
        let left = o.meta.writers + o.meta.readers;
        // The last close releases the lock (or reclaims the blocks), a
        // writer's may downgrade it: let I/O in flight on the file finish.
        let data = Arc::clone(&o.data);
        let drained = (write || left == 0).then(|| exclusive(&data));
        let mut first_err = None;
        if o.mode == OpenMode::Exclusive && o.map.inode_dirty {
            // Times changed by writes that needed no transaction of their own.
            let mut o = st.open.remove(&ino).expect("present");
            if let Err(e) = inner.commit(&mut st, Change::new(), &mut [&mut o.map]) {
                first_err = Some(e);
            }
            st.open.insert(ino, o);
        }
        if left > 0 {
            let o = st.open.get_mut(&ino).expect("present");
            if o.meta.writers == 0 && o.mode == OpenMode::Exclusive && !o.meta.unlinked {
                host_downgrade(inner, o, addr)?;
            }
            return first_err.map_or(Ok(()), Err);
        }
        let mut o = st.open.remove(&ino).expect("present");
        if o.meta.unlinked {
            let lock = match o.mode {
                OpenMode::Exclusive => o.map.lock,
                _ => inner.ctx.host.try_lock(addr, ino, LockMode::Exclusive)?,
            };
            match lock {
                Some(l) => {
                    o.map.lock = Some(l);
                    let e = (ino, o.map.inode.generation);
                    let r = inner
                        .reclaim(&mut st, &mut o.map)
                        .and_then(|()| inner.orphan_remove(&mut st, None, e));
                    if let Err(e) = r {
                        first_err.get_or_insert(e);
                    }
                }
                None => {
                    tracing::warn!("inode {ino} unlinked while open could not be reclaimed: busy")
                }
            }
        }
        if o.mode != OpenMode::Unlocked {
            if let Err(e) = inner.ctx.host.unlock(addr) {
                first_err.get_or_insert(e.into());
            }
        }
        drop(drained);
        first_err.map_or(Ok(()), Err)
    }

    fn handle(&self, st: &State, fh: u64) -> FsResult<(u64, bool)> {
        st.handles.get(&fh).copied().ok_or(FsError::BadHandle(fh))
    }

    /// Read up to `len` bytes at `off` (short at end of file).
    pub fn read(&self, fh: u64, off: u64, len: usize) -> FsResult<Vec<u8>> {
        let mut buf = Vec::new();
        let n = self.read_into(fh, off, len, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Read up to `len` bytes at `off` into `buf[..n]`, returning `n`
    /// (short at end of file). `buf` is grown as needed and may be reused
    /// between calls (no allocation or zeroing per read). The device read
    /// runs outside the filesystem mutex under the file's data guard.
    pub fn read_into(&self, fh: u64, off: u64, len: usize, buf: &mut Vec<u8>) -> FsResult<usize> {
        let st = lock_st(&self.inner.st);
        match self.inner.read_resolved(st, fh, off, len, buf, None)? {
            Some((n, _)) => Ok(n),
            None => unreachable!("a read that may wait always completes"),
        }
    }

    /// [`Fs::read_into`], but only if it finishes without waiting for
    /// anything but the CPU: the filesystem mutex is free (no operation,
    /// and so no wait for another host's lock, is under way), the file is
    /// locked here (its cached map is current: no re-read from the
    /// device) and the device has the bytes in its cache. The bytes go to
    /// `reply`, called once, with the file's data guard still held: from
    /// the device's memory mapping when the range is one device extent
    /// the device maps ([`BlockDev::cached_view`]), else from `buf` (as
    /// [`Fs::read_into`] fills it). `None`: nothing is read and `reply`
    /// is not called; do it with [`Fs::read_into`] on a thread that may
    /// wait.
    pub fn read_now(
        &self,
        fh: u64,
        off: u64,
        len: usize,
        buf: &mut Vec<u8>,
        reply: &mut dyn FnMut(&[u8]),
    ) -> FsResult<Option<ReadVia>> {
        let st = match self.inner.st.try_lock() {
            Ok(st) => st,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(None),
        };
        let r = self
            .inner
            .read_resolved(st, fh, off, len, buf, Some(reply))?;
        Ok(r.map(|(_, via)| via))
    }

    /// Write `buf` at `off`. Returns the bytes written: short only when the
    /// volume filled up part way (ENOSPC if nothing could be written).
    /// Overwrites of allocated blocks inside the file do their device I/O
    /// outside the filesystem mutex (`io.rs`); the rest runs under it.
    pub fn write(&self, fh: u64, off: u64, buf: &[u8]) -> FsResult<usize> {
        let mut st = lock_st(&self.inner.st);
        let inner = &*self.inner;
        let (ino, write) = self.handle(&st, fh)?;
        if !write {
            return Err(FsError::BadHandle(fh));
        }
        if let Some((extents, data)) = inner.overwrite_plan(&mut st, ino, off, buf.len())? {
            let _writing = shared(&data);
            drop(st);
            io::write(&inner.ctx, &extents, buf)?;
            return Ok(buf.len());
        }
        let mut o = st.open.remove(&ino).expect("open file of a handle");
        // Partial sectors are read-modify-written: no overwrite of the same
        // sectors may be in flight meanwhile. A file not (yet) in file
        // blocks may have its blocks moved by the write (promotion of a
        // small file): no read may be in flight then either.
        let data = Arc::clone(&o.data);
        let aligned = off % 512 == 0 && buf.len() % 512 == 0;
        let moves = o.map.data_kind != ResourceKind::FileBlock;
        let _alone = (!aligned || moves).then(|| exclusive(&data));
        let r = inner.write_locked(&mut st, &mut o.map, off, buf);
        st.open.insert(ino, o);
        r
    }

    /// [`Fs::write`], but only if it is an overwrite of allocated blocks
    /// (no metadata change but the times) and the filesystem mutex is
    /// free: it then waits for nothing but the device's write. `None`:
    /// nothing is written; do it with [`Fs::write`].
    pub fn write_now(&self, fh: u64, off: u64, buf: &[u8]) -> FsResult<Option<usize>> {
        let mut st = match self.inner.st.try_lock() {
            Ok(st) => st,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(None),
        };
        let inner = &*self.inner;
        let (ino, write) = self.handle(&st, fh)?;
        if !write {
            return Err(FsError::BadHandle(fh));
        }
        let Some((extents, data)) = inner.overwrite_plan(&mut st, ino, off, buf.len())? else {
            return Ok(None);
        };
        let _writing = shared(&data);
        drop(st);
        io::write(&inner.ctx, &extents, buf)?;
        Ok(Some(buf.len()))
    }

    /// Make everything written through `fh` durable.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let mut st = lock_st(&self.inner.st);
        let inner = &*self.inner;
        let (ino, _) = self.handle(&st, fh)?;
        let mut o = st.open.remove(&ino).expect("open file of a handle");
        let r = if o.map.inode_dirty && o.map.lock.is_some() {
            inner.commit(&mut st, Change::new(), &mut [&mut o.map])
        } else {
            Ok(())
        };
        st.open.insert(ino, o);
        r?;
        inner.ctx.dev.flush()?;
        Ok(())
    }

    /// Preallocate or punch a hole.
    pub fn fallocate(&self, fh: u64, off: u64, len: u64, mode: Falloc) -> FsResult<()> {
        let mut st = lock_st(&self.inner.st);
        let inner = &*self.inner;
        let (ino, write) = self.handle(&st, fh)?;
        if !write {
            return Err(FsError::BadHandle(fh));
        }
        if len == 0 || off.checked_add(len).is_none() {
            return Err(FsError::Invalid(format!("fallocate range {off} (+{len})")));
        }
        let mut o = st.open.remove(&ino).expect("open file of a handle");
        // Punching frees blocks; allocating changes to-be-zeroed state.
        let data = Arc::clone(&o.data);
        let _drained = exclusive(&data);
        let r = inner.fallocate_locked(&mut st, &mut o.map, off, len, mode);
        st.open.insert(ino, o);
        r
    }

    /// SEEK_DATA (`data`) / SEEK_HOLE from `off`; `None` is ENXIO.
    pub fn seek(&self, fh: u64, off: u64, data: bool) -> FsResult<Option<u64>> {
        let mut st = lock_st(&self.inner.st);
        let inner = &*self.inner;
        let (ino, _) = self.handle(&st, fh)?;
        let o = st.open.get_mut(&ino).expect("open file of a handle");
        if o.mode == OpenMode::Unlocked {
            reload_unlocked(inner, &mut o.map)?;
        }
        data::seek(&mut o.map, &inner.ctx, off, data)
    }
}

/// Re-read the map of a file open here without a lock (another host has
/// it open for write and commits as it goes). Once that host has removed
/// the last name and reclaimed it, the inode reads as empty: stale, not an
/// empty file.
fn reload_unlocked(inner: &Inner, map: &mut FileMap) -> FsResult<()> {
    map.reload(&inner.ctx)?;
    if map.inode.nlink == 0 {
        return Err(FsError::Stale(map.ino()));
    }
    Ok(())
}

impl Inner {
    /// A file just made by this host, its map holding the EXCLUSIVE lock:
    /// open it (downgraded to SHARED_READ for a read-only open).
    pub(super) fn register_open(&self, st: &mut State, map: FileMap, write: bool) -> FsResult<u64> {
        let ino = map.ino();
        let mut o = Open {
            map,
            mode: OpenMode::Exclusive,
            meta: OpenMeta::first(write),
            data: DataGuard::default(),
        };
        if !write {
            let addr = self.ctx.lock_addr(ino);
            if let Err(e) = host_downgrade(self, &mut o, addr) {
                let _ = self.ctx.host.unlock(addr);
                return Err(e);
            }
        }
        st.open.insert(ino, o);
        Ok(st.new_handle(ino, write))
    }
}

fn host_downgrade(inner: &Inner, o: &mut Open, addr: u64) -> FsResult<()> {
    inner
        .ctx
        .host
        .try_lock(addr, o.map.ino(), LockMode::SharedRead)?;
    o.map.lock = None;
    o.mode = OpenMode::Shared;
    Ok(())
}

impl Inner {
    /// The read of `off..off+len` through `fh`, with the mutex held as
    /// `st`: resolved under it, then the device read outside it under the
    /// file's data guard. With `reply` (the fast path): give up (`None`)
    /// rather than re-read an unlocked file's map or wait for the medium,
    /// and hand the bytes to `reply` before the guard is let go — from the
    /// device's mapping if it offers one for the range, else from `buf`.
    fn read_resolved(
        &self,
        mut st: MutexGuard<'_, State>,
        fh: u64,
        off: u64,
        len: usize,
        buf: &mut Vec<u8>,
        reply: Option<Reply<'_>>,
    ) -> FsResult<Option<(usize, ReadVia)>> {
        let cached_only = reply.is_some();
        let ino = st
            .handles
            .get(&fh)
            .map(|h| h.0)
            .ok_or(FsError::BadHandle(fh))?;
        let o = st.open.get_mut(&ino).expect("open file of a handle");
        if o.mode == OpenMode::Unlocked {
            if cached_only {
                return Ok(None);
            }
            reload_unlocked(self, &mut o.map)?;
        }
        let size = o.map.inode.size;
        let n = (len as u64).min(size.saturating_sub(off)) as usize;
        if buf.len() < n {
            buf.resize(n, 0);
        }
        let out = &mut buf[..n];
        if n == 0 || o.map.inode.flags & FLAG_INLINE != 0 {
            let src = &o.map.inode.inline;
            let s = (off as usize).min(src.len());
            let e = (s + n).min(src.len());
            out[..e - s].copy_from_slice(&src[s..e]);
            out[e - s..].fill(0);
            drop(st);
            if let Some(reply) = reply {
                reply(out);
            }
            return Ok(Some((n, ReadVia::Buffer)));
        }
        let extents = io::for_read(&mut o.map, &self.ctx, off, n as u64)?;
        let ahead = match o.meta.stream.advance(off, n as u64, size) {
            Some((a, l)) => io::for_read(&mut o.map, &self.ctx, a, l)?,
            None => Vec::new(),
        };
        let data = Arc::clone(&o.data);
        // Held until the bytes are handed over, from the mapping too: no
        // block of this range can be freed or given to another file before.
        let _reading = shared(&data);
        drop(st);
        io::prefetch(&self.ctx, &ahead);
        let Some(reply) = reply else {
            io::read(&self.ctx, &extents, out)?;
            return Ok(Some((n, ReadVia::Buffer)));
        };
        if let Some(view) = io::mapped(&self.ctx, &extents)? {
            reply(view);
            return Ok(Some((n, ReadVia::Mapping)));
        }
        if !io::read_cached(&self.ctx, &extents, out)? {
            return Ok(None);
        }
        reply(out);
        Ok(Some((n, ReadVia::Buffer)))
    }

    /// For a write of `len` bytes at `off` to the open file `ino`: if it
    /// only overwrites allocated blocks, set the times (under the mutex,
    /// rather than after the I/O: a close or fsync that follows the write
    /// commits them) and return the device extents and the data guard to
    /// hold shared while writing them with the mutex dropped.
    fn overwrite_plan(
        &self,
        st: &mut State,
        ino: u64,
        off: u64,
        len: usize,
    ) -> FsResult<Option<(Vec<io::Extent>, DataGuard)>> {
        let o = st.open.get_mut(&ino).expect("open file of a handle");
        if o.mode != OpenMode::Exclusive || o.map.inode.flags & FLAG_INLINE != 0 {
            return Ok(None);
        }
        let Some(extents) = io::for_overwrite(&mut o.map, &self.ctx, off, len as u64)? else {
            return Ok(None);
        };
        let now = now_ns();
        o.map.inode.mtime_ns = now;
        o.map.inode.ctime_ns = now;
        o.map.inode_dirty = true;
        Ok(Some((extents, Arc::clone(&o.data))))
    }

    fn write_locked(
        &self,
        st: &mut State,
        map: &mut FileMap,
        off: u64,
        buf: &[u8],
    ) -> FsResult<usize> {
        if map.inode.flags & FLAG_INLINE != 0 {
            return Err(FsError::Invalid(format!(
                "inode {} keeps inline data",
                map.ino()
            )));
        }
        self.promote_for(st, map, off, off.saturating_add(buf.len() as u64))?;
        let chunk = (WRITE_BATCH * map.block_size) as usize;
        let mut total = 0usize;
        while total < buf.len() {
            let piece = &buf[total..(total + chunk).min(buf.len())];
            let mut ch = Change::new();
            let blocks = map.inode.blocks;
            let size = map.inode.size;
            let n = match data::write(
                map,
                &self.ctx,
                &mut st.alloc,
                &mut ch,
                off + total as u64,
                piece,
            ) {
                Ok(n) => n,
                Err(e) => {
                    st.alloc.invalidate(&ch);
                    map.reload(&self.ctx)?;
                    if matches!(e, FsError::NoSpace(_)) && map.is_small() {
                        // Small-block region full: carry on in a file block.
                        match self.promote(st, map) {
                            Ok(()) => continue,
                            Err(FsError::NoSpace(_)) if total > 0 => return Ok(total),
                            Err(e) => return Err(e),
                        }
                    }
                    if total > 0 && matches!(e, FsError::NoSpace(_)) {
                        return Ok(total);
                    }
                    return Err(e);
                }
            };
            let now = now_ns();
            map.inode.mtime_ns = now;
            map.inode.ctime_ns = now;
            map.inode_dirty = true;
            if map.inode.blocks != blocks || map.inode.size != size || !ch.is_empty() {
                self.commit(st, ch, &mut [map])?;
            }
            total += n;
            if n < piece.len() {
                if map.is_small() {
                    match self.promote(st, map) {
                        Ok(()) => continue,
                        Err(FsError::NoSpace(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                break;
            }
        }
        Ok(total)
    }

    fn fallocate_locked(
        &self,
        st: &mut State,
        map: &mut FileMap,
        off: u64,
        len: u64,
        mode: Falloc,
    ) -> FsResult<()> {
        match mode {
            Falloc::PunchHole => loop {
                let mut ch = Change::new();
                let done =
                    data::punch(map, &self.ctx, &mut st.alloc, &mut ch, off, len, FREE_BATCH);
                let done = match done {
                    Ok(d) => d,
                    Err(e) => {
                        st.alloc.invalidate(&ch);
                        map.reload(&self.ctx)?;
                        return Err(e);
                    }
                };
                map.inode.ctime_ns = now_ns();
                map.inode_dirty = true;
                self.commit(st, ch, &mut [map])?;
                if done {
                    return Ok(());
                }
            },
            Falloc::Allocate { keep_size } | Falloc::AllocateLazy { keep_size } => {
                let lazy = matches!(mode, Falloc::AllocateLazy { .. });
                let end = off + len;
                self.promote_for(st, map, off, end)?;
                let mut pos = off;
                while pos < end {
                    let bs = map.block_size;
                    let step = (WRITE_BATCH * bs - pos % bs).min(end - pos);
                    let mut ch = Change::new();
                    if let Err(e) =
                        data::preallocate(map, &self.ctx, &mut st.alloc, &mut ch, pos, step, lazy)
                    {
                        st.alloc.invalidate(&ch);
                        map.reload(&self.ctx)?;
                        if matches!(e, FsError::NoSpace(_)) && map.is_small() {
                            self.promote(st, map)?;
                            continue;
                        }
                        return Err(e);
                    }
                    pos += step;
                    if !keep_size && pos > map.inode.size {
                        map.inode.size = pos;
                    }
                    map.inode.ctime_ns = now_ns();
                    self.commit(st, ch, &mut [map])?;
                }
                Ok(())
            }
        }
    }

    pub(super) fn setattr_locked(
        &self,
        st: &mut State,
        map: &mut FileMap,
        sa: &SetAttr,
    ) -> FsResult<()> {
        let now = now_ns();
        let i = &mut map.inode;
        if let Some(m) = sa.mode {
            i.mode = (i.mode & libc::S_IFMT) | (m & 0o7777);
        }
        if let Some(u) = sa.uid {
            i.uid = u;
        }
        if let Some(g) = sa.gid {
            i.gid = g;
        }
        if let Some(t) = sa.atime_ns {
            i.atime_ns = t;
        }
        if let Some(t) = sa.mtime_ns {
            i.mtime_ns = t;
        }
        i.ctime_ns = now;
        map.inode_dirty = true;
        match sa.size {
            Some(size) if size != map.inode.size => {
                if is_dir(map.inode.mode) {
                    return Err(FsError::IsDir(map.ino()));
                }
                if map.inode.flags & FLAG_INLINE != 0 {
                    return Err(FsError::Invalid(format!(
                        "inode {} keeps inline data",
                        map.ino()
                    )));
                }
                if size > map.max_bytes() {
                    return Err(FsError::TooBig(format!(
                        "size {size} is past the largest file"
                    )));
                }
                if sa.mtime_ns.is_none() {
                    map.inode.mtime_ns = now;
                }
                self.truncate(st, map, size)
            }
            _ => self.commit(st, Change::new(), &mut [map]),
        }
    }

    /// Set the size; blocks past it are freed (in as many transactions as
    /// the journal needs; each leaves the file consistent). A free that
    /// takes more than one transaction puts the file on the orphan table
    /// for its duration, so a crash cannot strand the rest.
    fn truncate(&self, st: &mut State, map: &mut FileMap, size: u64) -> FsResult<()> {
        let bs = map.block_size;
        if size < map.inode.size && size % bs != 0 {
            data::zero_range(map, &self.ctx, size, bs - size % bs)?;
        }
        let orphan = size < map.inode.size && needs_batches(map);
        if orphan {
            self.orphan_add(st, None, map)?;
        }
        map.inode.size = size;
        map.inode_dirty = true;
        if let Err(e) = self.free_past(st, map, size) {
            // The first batch carries the new size: once it has committed
            // the truncate has happened, and the orphan entry makes the
            // housekeeping finish the frees (a cluster another host keeps
            // past D + T, say). Before that, nothing happened.
            if orphan && map.inode.size == size {
                tracing::warn!(
                    "inode {}: truncated to {size}; freeing the rest failed ({e}), housekeeping finishes it from the orphan table",
                    map.ino()
                );
                return Ok(());
            }
            return Err(e);
        }
        if orphan {
            if let Err(e) = self.orphan_remove(st, None, (map.ino(), map.inode.generation)) {
                // Done; housekeeping finds nothing left to free and drops it.
                tracing::warn!(
                    "inode {}: truncated; its orphan entry stays: {e}",
                    map.ino()
                );
            }
        }
        Ok(())
    }

    /// Free the blocks of `map` past `size`, one batch per transaction.
    pub(super) fn free_past(&self, st: &mut State, map: &mut FileMap, size: u64) -> FsResult<()> {
        let bs = map.block_size;
        loop {
            let mut ch = Change::new();
            let done = match map.free_from(
                &self.ctx,
                &mut st.alloc,
                &mut ch,
                size.div_ceil(bs),
                FREE_BATCH,
            ) {
                Ok(d) => d,
                Err(e) => {
                    st.alloc.invalidate(&ch);
                    map.reload(&self.ctx)?;
                    return Err(e);
                }
            };
            self.commit(st, ch, &mut [map])?;
            if done {
                return Ok(());
            }
        }
    }

    /// Stage one batch of reclaiming an inode with no links (its map holds
    /// its lock EXCLUSIVE) in `ch`: data and pointer blocks as far as the
    /// batch and the transaction allow, and, in the batch that frees the
    /// last of them, the inode's bitmap bit (the body written with nlink 0).
    /// Returns true when the inode is gone with `ch`.
    pub(super) fn stage_reclaim(
        &self,
        st: &mut State,
        map: &mut FileMap,
        ch: &mut Change,
    ) -> FsResult<bool> {
        map.inode.nlink = 0;
        map.inode.flags &= !FLAG_INLINE;
        map.inode.inline.clear();
        map.inode_dirty = true;
        if let Ok(Some(a)) = crate::format::BlockAddr::decode(map.inode.xattr) {
            st.alloc.free(ch, a.kind, a.index)?;
            map.inode.xattr = 0;
            map.inode.blocks = map.inode.blocks.saturating_sub(1);
        }
        let done = map.free_from(&self.ctx, &mut st.alloc, ch, 0, FREE_BATCH)?;
        if done {
            map.inode.size = 0;
            st.alloc.free(ch, ResourceKind::Inode, map.ino())?;
        }
        Ok(done)
    }

    /// Free everything an inode with no links holds, then the inode itself,
    /// in as many transactions as it takes.
    pub(super) fn reclaim(&self, st: &mut State, map: &mut FileMap) -> FsResult<()> {
        loop {
            let mut ch = Change::new();
            let done = match self.stage_reclaim(st, map, &mut ch) {
                Ok(d) => d,
                Err(e) => {
                    st.alloc.invalidate(&ch);
                    map.reload(&self.ctx)?;
                    return Err(e);
                }
            };
            self.commit(st, ch, &mut [map])?;
            if done {
                return Ok(());
            }
        }
    }
}

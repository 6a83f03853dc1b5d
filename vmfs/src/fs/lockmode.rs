//! Opening files under the lock modes virtual disks need beyond POSIX
//! open: SHARED_READ that must really be shared-read (no writer anywhere),
//! MULTI_WRITER (clustered guests on several hosts writing one fully
//! allocated file), and the TRANSFER hand-off of an open file's EXCLUSIVE
//! lock to another host (live migration; `docs/vmdk.md`).

use std::sync::Mutex;

use crate::cluster::TransferOutcome;
use crate::dev::BlockDev;
use crate::format::{Holder, LockMode};

use super::bmap::FileMap;
use super::change::Change;
use super::error::{FsError, FsResult};
use super::inode::file_type;
use super::{exclusive, lock_st, Fs, Open, OpenMeta, OpenMode, State};

/// A file open MULTI_WRITER on this host. The block map cannot change while
/// any host holds the lock in this mode (size changes and allocation need
/// EXCLUSIVE), so it is read once; I/O goes straight to the mapped device
/// blocks without the filesystem's operation mutex. Released on drop.
#[derive(Debug)]
pub struct MultiWriterFile {
    fs: Fs,
    ino: u64,
    size: u64,
    map: Mutex<FileMap>,
    closed: bool,
}

impl Fs {
    /// Open `ino` read-only under SHARED_READ, refusing (EBUSY) when
    /// another host has it open for write (a plain read-only [`Fs::open`]
    /// would then follow that writer without a lock).
    pub fn open_shared_read(&self, ino: u64) -> FsResult<u64> {
        let fh = self.open(ino, false)?;
        let mode = lock_st(&self.inner.st).open.get(&ino).map(|o| o.mode);
        if mode == Some(OpenMode::Unlocked) {
            let _ = self.close(fh);
            return Err(FsError::Busy {
                ino,
                why: "open for write on another host".into(),
            });
        }
        Ok(fh)
    }

    /// Open `ino` MULTI_WRITER: every other holder must hold it in the same
    /// mode. Every block up to the file size must be allocated and zeroed
    /// (eager-zeroed thick), since writes here never change metadata.
    pub fn open_multi_writer(&self, ino: u64) -> FsResult<MultiWriterFile> {
        let st = lock_st(&self.inner.st);
        let inner = &*self.inner;
        inner.ctx.check_ino(ino)?;
        let addr = inner.ctx.lock_addr(ino);
        let host = &inner.ctx.host;
        if st.open.contains_key(&ino) || host.held(addr).is_some() {
            return Err(FsError::Busy {
                ino,
                why: "already open on this host in another way".into(),
            });
        }
        let Some(l) = host.try_lock(addr, ino, LockMode::MultiWriter)? else {
            return Err(FsError::Busy {
                ino,
                why: "open exclusively (or read-only) on another host".into(),
            });
        };
        let checked = (|| {
            let mut map = inner.new_map(ino, Some(l))?;
            if file_type(map.inode.mode) != libc::S_IFREG {
                return Err(FsError::Invalid(format!(
                    "inode {ino} is not a regular file"
                )));
            }
            let bs = map.block_size;
            for n in 0..map.inode.size.div_ceil(bs) {
                match map.get(&inner.ctx, n)? {
                    Some(a) if !a.to_be_zeroed => {}
                    _ => {
                        return Err(FsError::NotPermitted(format!(
                            "inode {ino}: block {n} is not allocated and zeroed; a multi-writer \
                             file must be eager-zeroed thick (vmfs disk inflate)"
                        )))
                    }
                }
            }
            Ok(map)
        })();
        drop(st);
        match checked {
            Ok(map) => Ok(MultiWriterFile {
                fs: self.clone(),
                ino,
                size: map.inode.size,
                map: Mutex::new(map),
                closed: false,
            }),
            Err(e) => {
                let _ = host.unlock(addr);
                Err(e)
            }
        }
    }

    /// Live migration, source side: with no I/O in flight on `ino` (open
    /// for write here), commit its inode, flush, and offer its EXCLUSIVE
    /// lock to `dst` (TRANSFER). Until [`Fs::cancel_transfer`] or
    /// [`Fs::transfer_outcome`] settles it, no change may be made under it.
    pub fn begin_transfer(&self, ino: u64, dst: Holder) -> FsResult<()> {
        let mut st = lock_st(&self.inner.st);
        let inner = &*self.inner;
        let mut o = exclusive_open(&mut st, ino)?;
        // The lock is offered away: no I/O on the file may be in flight.
        let data = std::sync::Arc::clone(&o.data);
        let _drained = exclusive(&data);
        let r = if o.map.inode_dirty {
            inner.commit(&mut st, Change::new(), &mut [&mut o.map])
        } else {
            Ok(())
        };
        let r = r.and_then(|_| Ok(inner.ctx.dev.flush()?)).and_then(|_| {
            Ok(inner
                .ctx
                .host
                .begin_transfer(inner.ctx.lock_addr(ino), dst)?)
        });
        o.map.lock = inner.ctx.host.held(inner.ctx.lock_addr(ino));
        st.open.insert(ino, o);
        r
    }

    /// Live migration, source side: take the lock back. `Ok(true)`: ours
    /// again, I/O may resume; `Ok(false)`: the destination accepted first —
    /// the file is forgotten here (its handles are gone, nothing released).
    pub fn cancel_transfer(&self, ino: u64) -> FsResult<bool> {
        let mut st = lock_st(&self.inner.st);
        let inner = &*self.inner;
        let addr = inner.ctx.lock_addr(ino);
        if inner.ctx.host.cancel_transfer(addr)? {
            if let Some(o) = st.open.get_mut(&ino) {
                o.map.lock = inner.ctx.host.held(addr);
            }
            return Ok(true);
        }
        inner.ctx.host.transfer_outcome(addr)?;
        forget(&mut st, ino);
        Ok(false)
    }

    /// Live migration, source side: has the destination taken the lock?
    /// When it has, the file is forgotten here as in [`Fs::cancel_transfer`].
    pub fn transfer_outcome(&self, ino: u64) -> FsResult<TransferOutcome> {
        let mut st = lock_st(&self.inner.st);
        let addr = self.inner.ctx.lock_addr(ino);
        let out = self.inner.ctx.host.transfer_outcome(addr)?;
        if out == TransferOutcome::Taken {
            forget(&mut st, ino);
        }
        Ok(out)
    }

    /// Live migration, destination side: take `ino`'s lock if it is offered
    /// to this host, and open the file for write under it. `Ok(None)`: not
    /// offered to us (not yet, or the source cancelled).
    pub fn accept_transfer(&self, ino: u64) -> FsResult<Option<u64>> {
        let mut st = lock_st(&self.inner.st);
        let inner = &*self.inner;
        inner.ctx.check_ino(ino)?;
        if st.open.contains_key(&ino) {
            return Err(FsError::Busy {
                ino,
                why: "already open on this host".into(),
            });
        }
        let addr = inner.ctx.lock_addr(ino);
        let host = &inner.ctx.host;
        if !host.accept_transfer(addr, ino)? {
            return Ok(None);
        }
        let map = match inner.new_map(ino, host.held(addr)) {
            Ok(m) => m,
            Err(e) => {
                let _ = host.unlock(addr);
                return Err(e);
            }
        };
        let meta = OpenMeta::first(true);
        st.open.insert(
            ino,
            Open {
                map,
                mode: OpenMode::Exclusive,
                meta,
                data: Default::default(),
            },
        );
        Ok(Some(st.new_handle(ino, true)))
    }

    /// The inode a handle refers to.
    pub fn handle_ino(&self, fh: u64) -> FsResult<u64> {
        lock_st(&self.inner.st)
            .handles
            .get(&fh)
            .map(|h| h.0)
            .ok_or(FsError::BadHandle(fh))
    }
}

fn exclusive_open(st: &mut State, ino: u64) -> FsResult<Open> {
    match st.open.remove(&ino) {
        Some(o) if o.mode == OpenMode::Exclusive => Ok(o),
        Some(o) => {
            st.open.insert(ino, o);
            Err(FsError::Invalid(format!(
                "inode {ino} is not open for write on this host"
            )))
        }
        None => Err(FsError::Invalid(format!("inode {ino} is not open here"))),
    }
}

/// Drop every trace of an open file whose lock another host now holds.
fn forget(st: &mut State, ino: u64) {
    st.open.remove(&ino);
    st.handles.retain(|_, h| h.0 != ino);
}

impl MultiWriterFile {
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// File size (fixed while open).
    pub fn size(&self) -> u64 {
        self.size
    }

    fn check(&self, off: u64, len: usize) -> FsResult<()> {
        if off.checked_add(len as u64).is_none_or(|e| e > self.size) {
            return Err(FsError::Invalid(format!(
                "inode {}: {len} bytes at {off} run past the multi-writer file's size {}",
                self.ino, self.size
            )));
        }
        Ok(())
    }

    /// Read `buf.len()` bytes at `off` (inside the file).
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> FsResult<()> {
        self.check(off, buf.len())?;
        let ctx = &self.fs.inner.ctx;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        super::data::read(&mut map, ctx, off, buf)
    }

    /// Write `data` at `off`: 512-byte aligned (no read-modify-write that
    /// another host's write could interleave with).
    pub fn write_at(&self, off: u64, data: &[u8]) -> FsResult<()> {
        self.check(off, data.len())?;
        if off % 512 != 0 || data.len() % 512 != 0 {
            return Err(FsError::Invalid(format!(
                "inode {}: multi-writer writes must be 512-byte aligned ({} bytes at {off})",
                self.ino,
                data.len()
            )));
        }
        let ctx = &self.fs.inner.ctx;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let bs = map.block_size;
        let mut done = 0usize;
        while done < data.len() {
            let pos = off + done as u64;
            let (n, s) = (pos / bs, pos % bs);
            let l = ((bs - s) as usize).min(data.len() - done);
            let a = map.get(ctx, n)?.ok_or_else(|| FsError::Corrupt {
                ino: self.ino,
                why: format!("block {n} of a multi-writer file became a hole"),
            })?;
            ctx.dev
                .write_at(&data[done..done + l], map.data_addr(ctx, a) + s)?;
            done += l;
        }
        Ok(())
    }

    /// Make the writes durable.
    pub fn sync(&self) -> FsResult<()> {
        Ok(self.fs.inner.ctx.dev.flush()?)
    }

    /// Release the lock (also done on drop, errors logged).
    pub fn close(mut self) -> FsResult<()> {
        self.closed = true;
        let ctx = &self.fs.inner.ctx;
        Ok(ctx.host.unlock(ctx.lock_addr(self.ino))?)
    }
}

impl Drop for MultiWriterFile {
    fn drop(&mut self) {
        if !self.closed {
            let ctx = &self.fs.inner.ctx;
            if let Err(e) = ctx.host.unlock(ctx.lock_addr(self.ino)) {
                tracing::warn!("releasing multi-writer inode {}: {e}", self.ino);
            }
        }
    }
}

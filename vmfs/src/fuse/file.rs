//! Attributes and open files: getattr/setattr, open/create/release,
//! read/write/flush/fsync, fallocate, SEEK_DATA/SEEK_HOLE, statfs.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use fuser::{Errno, OpenAccMode, OpenFlags};

use crate::dev::BlockDev;
use crate::fs::{Attr, Falloc, FsError, ReadVia, SetAttr, StatFs};

use super::killpriv::killed_mode;
use super::{fail, Res, VmfsFuse};

/// fallocate(2) mode bits.
const KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE;
const ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE;

/// Pause between open attempts on a busy file.
const OPEN_RETRY: Duration = Duration::from_millis(10);

/// Does an open with `flags` write?
pub fn writes(flags: OpenFlags) -> bool {
    flags.acc_mode() != OpenAccMode::O_RDONLY
}

impl VmfsFuse {
    /// Attributes of the node the kernel knows as `ino`: ESTALE when the
    /// inode number now holds another file (deleted and reused meanwhile).
    pub(super) fn do_getattr(&self, ino: u64) -> Res<Attr> {
        self.gate_check()?;
        let a = self.fs.getattr(ino).map_err(fail)?;
        if !self.nodes.is_current(&a) {
            return Err(Errno::from_i32(libc::ESTALE));
        }
        Ok(a)
    }

    /// `kill`: also clear the set-ID bits (in the same update).
    pub(super) fn do_setattr(&self, ino: u64, sa: &SetAttr, kill: bool) -> Res<Attr> {
        let a = self.do_getattr(ino)?;
        match killed_mode(a.mode).filter(|_| kill) {
            Some(mode) => {
                let sa = SetAttr {
                    mode: Some(mode),
                    ..sa.clone()
                };
                self.fs.setattr(ino, &sa).map_err(fail)
            }
            None => self.fs.setattr(ino, sa).map_err(fail),
        }
    }

    /// Open for write takes the inode's EXCLUSIVE lock (EBUSY while
    /// another host has the file open for write); read-only shares it.
    pub(super) fn do_open(&self, ino: u64, flags: OpenFlags) -> Res<u64> {
        let a = self.do_getattr(ino)?;
        if a.is_dir() && writes(flags) {
            return Err(Errno::from_i32(libc::EISDIR));
        }
        let fh = self.open_retrying(ino, writes(flags))?;
        // Another host may have removed the file and reused its number
        // between the check above and the open: then this is another
        // file, and the kernel's node is stale.
        if let Err(e) = self.do_getattr(ino) {
            let _ = self.fs.close(fh);
            return Err(e);
        }
        Ok(fh)
    }

    /// [`Fs::open`](crate::fs::Fs::open), retried for a short while when
    /// another host holds the file (it may be releasing it right now).
    fn open_retrying(&self, ino: u64, write: bool) -> Res<u64> {
        let start = Instant::now();
        loop {
            match self.fs.open(ino, write) {
                Err(FsError::Busy { .. }) if start.elapsed() < self.open_busy_wait => {
                    std::thread::sleep(OPEN_RETRY);
                    self.gate_check()?;
                }
                r => return r.map_err(fail),
            }
        }
    }

    /// Create and open. Without O_EXCL a name another host made meanwhile
    /// is opened instead.
    pub(super) fn do_create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        who: (u32, u32),
    ) -> Res<(Attr, u64)> {
        self.gate_check()?;
        self.check_dirs(&[parent])?;
        let write = writes(OpenFlags(flags));
        let a = match self
            .fs
            .create_open(parent, name.as_bytes(), mode & !umask, who, write)
        {
            Ok((a, fh)) => return Ok((self.entry(a), fh)),
            Err(FsError::Exists(_)) if flags & libc::O_EXCL == 0 => {
                let a = self
                    .fs
                    .lookup(parent, name.as_bytes())
                    .map_err(|e| self.dir_error(&[parent], e))?;
                if a.is_dir() && write {
                    return Err(Errno::from_i32(libc::EISDIR));
                }
                // The kernel believes the file is new, so it sends no
                // truncate of its own for O_TRUNC.
                if write && flags & libc::O_TRUNC != 0 && a.size != 0 {
                    let fh = self.open_retrying(a.ino, write)?;
                    let sa = SetAttr {
                        size: Some(0),
                        ..SetAttr::default()
                    };
                    return match self.fs.setattr(a.ino, &sa) {
                        Ok(a) => Ok((self.entry(a), fh)),
                        Err(e) => {
                            let _ = self.fs.close(fh);
                            Err(fail(e))
                        }
                    };
                }
                a
            }
            Err(e) => return Err(self.dir_error(&[parent], e)),
        };
        let fh = self.open_retrying(a.ino, write)?;
        Ok((self.entry(a), fh))
    }

    /// Read into `buf[..n]`; returns `n`.
    pub(super) fn do_read(&self, fh: u64, off: u64, len: u32, buf: &mut Vec<u8>) -> Res<usize> {
        self.gate_check()?;
        self.fs.read_into(fh, off, len as usize, buf).map_err(fail)
    }

    /// [`Self::do_read`] if it can be done without waiting
    /// ([`Fs::read_now`](crate::fs::Fs::read_now)), the bytes handed to
    /// `reply` while the file's data guard is held; `None`: `reply` was
    /// not called, hand the read over.
    pub(super) fn do_read_now(
        &self,
        fh: u64,
        off: u64,
        len: u32,
        buf: &mut Vec<u8>,
        reply: &mut dyn FnMut(&[u8]),
    ) -> Res<Option<ReadVia>> {
        self.gate_check()?;
        let via = self
            .fs
            .read_now(fh, off, len as usize, buf, reply)
            .map_err(fail)?;
        if let Some(via) = via {
            self.read_counts.count(via);
        }
        Ok(via)
    }

    /// A write that only overwrites allocated blocks, if it can be done
    /// without waiting ([`Fs::write_now`](crate::fs::Fs::write_now));
    /// `None`: hand it over.
    pub(super) fn do_write_now(&self, fh: u64, off: u64, data: &[u8]) -> Res<Option<u32>> {
        self.gate_check()?;
        let n = self.fs.write_now(fh, off, data).map_err(fail)?;
        Ok(n.map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
    }

    /// `kill`: the writer lacks CAP_FSETID, clear the set-ID bits first.
    pub(super) fn do_write(
        &self,
        ino: u64,
        fh: u64,
        off: u64,
        data: &[u8],
        kill: bool,
    ) -> Res<u32> {
        self.gate_check()?;
        if kill {
            self.kill_suid(ino)?;
        }
        let n = self.fs.write(fh, off, data).map_err(fail)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Every close(2). Writes reached the device when they returned and
    /// the inode's times are committed at release: nothing is pending.
    pub(super) fn do_flush(&self) -> Res<()> {
        self.gate_check()
    }

    pub(super) fn do_release(&self, fh: u64) -> Res<()> {
        self.gate_check()?;
        self.fs.close(fh).map_err(fail)
    }

    pub(super) fn do_fsync(&self, fh: u64) -> Res<()> {
        self.gate_check()?;
        self.fs.fsync(fh).map_err(fail)
    }

    /// Directory changes are journaled transactions, committed when they
    /// return; flush the device's cache.
    pub(super) fn do_fsyncdir(&self) -> Res<()> {
        self.gate_check()?;
        self.fs
            .host()
            .dev()
            .flush()
            .map_err(|e| fail(FsError::Device(e)))
    }

    /// Mode 0 / KEEP_SIZE allocate (lazily zeroed: reads as zeros, no I/O
    /// now); PUNCH_HOLE|KEEP_SIZE frees the blocks; ZERO_RANGE punches and
    /// allocates again. Other modes (collapse, insert, unshare):
    /// EOPNOTSUPP.
    pub(super) fn do_fallocate(&self, fh: u64, off: u64, len: u64, mode: i32) -> Res<()> {
        self.gate_check()?;
        let keep_size = mode & KEEP_SIZE != 0;
        let run = |m: Falloc| self.fs.fallocate(fh, off, len, m).map_err(fail);
        match mode & !KEEP_SIZE {
            0 => run(Falloc::AllocateLazy { keep_size }),
            PUNCH_HOLE if keep_size => run(Falloc::PunchHole),
            ZERO_RANGE => {
                run(Falloc::PunchHole)?;
                run(Falloc::AllocateLazy { keep_size })
            }
            _ => Err(Errno::from_i32(libc::EOPNOTSUPP)),
        }
    }

    /// SEEK_DATA / SEEK_HOLE (the kernel resolves the other whences).
    pub(super) fn do_lseek(&self, fh: u64, off: i64, whence: i32) -> Res<i64> {
        self.gate_check()?;
        let data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            _ => return Err(Errno::from_i32(libc::EINVAL)),
        };
        let Ok(off) = u64::try_from(off) else {
            return Err(Errno::from_i32(libc::ENXIO));
        };
        match self.fs.seek(fh, off, data).map_err(fail)? {
            Some(o) => i64::try_from(o).map_err(|_| Errno::from_i32(libc::EOVERFLOW)),
            None => Err(Errno::from_i32(libc::ENXIO)),
        }
    }

    pub(super) fn do_statfs(&self) -> Res<StatFs> {
        self.gate_check()?;
        self.fs.statfs().map_err(fail)
    }
}

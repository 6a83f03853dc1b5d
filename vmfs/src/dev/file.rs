//! `FileDev`: an image file or a block device, through io_uring or
//! pread/pwrite. Compare-and-write is emulated with an OFD byte-range lock
//! plus read-compare-write-fdatasync: atomic among the processes of ONE
//! machine only (see `docs/devices.md`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once, OnceLock, RwLock};

use super::engine::{Engine, PreadEngine};
use super::mapping::Mapping;
use super::sys;
use super::uring::UringEngine;
use super::{
    apply_op, check_cas, check_io, BlockDev, CasOutcome, DevCapabilities, DevError, DevOp,
    FenceToken, FencedOp,
};

/// How to open a [`FileDev`].
#[derive(Debug, Clone, Default)]
pub struct FileDevOptions {
    /// Open read-only: every write fails.
    pub read_only: bool,
    /// Create a sparse image file of this size if the path does not exist.
    pub create_size: Option<u64>,
    /// Force the pread/pwrite engine (also: environment `VMFS_NO_URING=1`).
    pub no_uring: bool,
}

/// A block device backed by a file or a block special file.
#[derive(Debug)]
pub struct FileDev {
    name: String,
    path: PathBuf,
    file: File,
    size: u64,
    block_size: u32,
    is_block_device: bool,
    read_only: bool,
    engine: Arc<dyn Engine>,
    /// In-process side of the range locks. OFD locks belong to the open
    /// file description, so requests from threads sharing it merge instead
    /// of excluding each other (a shared request would silently downgrade a
    /// compare-and-write's exclusive lock, and one unlock drops everyone's).
    /// Compare-and-writes hold this for writing; fenced writes for reading.
    range_rw: RwLock<()>,
    /// Fenced writes in flight per slot offset: only the first takes the
    /// shared OFD lock and only the last releases it.
    shared_holders: Mutex<HashMap<u64, (usize, Option<sys::OfdRangeLock>)>>,
    /// The whole device mapped read-only, made at the first
    /// [`BlockDev::cached_view`] (`None`: mapping failed or is turned off).
    mapping: OnceLock<Option<Mapping>>,
}

static URING_WARNING: Once = Once::new();

/// Environment `VMFS_NO_MMAP_READ=1` turns [`BlockDev::cached_view`] off
/// (for measuring what replying from the mapping buys).
fn mmap_read_off() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| std::env::var_os("VMFS_NO_MMAP_READ").is_some_and(|v| v == "1"))
}

/// Environment `VMFS_NO_PREFETCH=1` turns [`BlockDev::prefetch`] hints off
/// (for measuring what they buy).
fn prefetch_off() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| std::env::var_os("VMFS_NO_PREFETCH").is_some_and(|v| v == "1"))
}

fn pick_engine(no_uring: bool) -> Arc<dyn Engine> {
    let forced = no_uring || std::env::var_os("VMFS_NO_URING").is_some_and(|v| v == "1");
    if forced {
        return Arc::new(PreadEngine);
    }
    match UringEngine::probe() {
        Ok(e) => Arc::new(e),
        Err(err) => {
            URING_WARNING.call_once(|| {
                tracing::warn!("io_uring unavailable ({err}); using pread/pwrite");
            });
            Arc::new(PreadEngine)
        }
    }
}

impl FileDev {
    /// Open (or, with `create_size`, create) `path`.
    pub fn open(path: impl AsRef<Path>, opts: FileDevOptions) -> Result<FileDev, DevError> {
        let path = path.as_ref().to_path_buf();
        let name = path.display().to_string();
        let open_err = |source: std::io::Error| DevError::Io {
            device: name.clone(),
            op: DevOp::Open,
            offset: 0,
            len: 0,
            source,
        };
        let exists = path.exists();
        if !exists && opts.create_size.is_none() {
            return Err(open_err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file or device (give a size to create an image)",
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!opts.read_only)
            .create(!exists && !opts.read_only)
            .truncate(false)
            .open(&path)
            .map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        let is_block_device = meta.file_type().is_block_device();
        let fd = file.as_raw_fd();
        let (size, block_size) = if is_block_device {
            (
                sys::block_device_size(fd).map_err(open_err)?,
                sys::block_device_sector_size(fd).map_err(open_err)?,
            )
        } else {
            if !exists {
                if let Some(size) = opts.create_size {
                    file.set_len(size).map_err(open_err)?;
                }
            }
            (file.metadata().map_err(open_err)?.len(), 512)
        };
        let size = size - size % u64::from(block_size);
        Ok(FileDev {
            name,
            path,
            file,
            size,
            block_size,
            is_block_device,
            read_only: opts.read_only,
            engine: pick_engine(opts.no_uring),
            range_rw: RwLock::new(()),
            shared_holders: Mutex::new(HashMap::new()),
            mapping: OnceLock::new(),
        })
    }

    /// The path this device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True for a block special file (which other machines may also reach).
    pub fn is_block_device(&self) -> bool {
        self.is_block_device
    }

    /// Name of the I/O engine in use ("io_uring" or "pread").
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    fn io_err(&self, op: DevOp, offset: u64, len: u64, source: std::io::Error) -> DevError {
        DevError::Io {
            device: self.name.clone(),
            op,
            offset,
            len,
            source,
        }
    }

    fn check_writable(&self, op: DevOp, offset: u64, len: u64) -> Result<(), DevError> {
        if self.read_only {
            return Err(self.io_err(
                op,
                offset,
                len,
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, "opened read-only"),
            ));
        }
        Ok(())
    }

    fn enter_shared(&self, addr: u64) -> std::io::Result<()> {
        let mut map = self
            .shared_holders
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let e = map.entry(addr).or_insert((0, None));
        if e.0 == 0 {
            e.1 = Some(sys::OfdRangeLock::shared(self.file.as_raw_fd(), addr, 512)?);
        }
        e.0 += 1;
        Ok(())
    }

    fn leave_shared(&self, addr: u64) {
        let mut map = self
            .shared_holders
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(&addr) {
            e.0 -= 1;
            if e.0 == 0 {
                // Dropping the guard releases the shared OFD lock.
                map.remove(&addr);
            }
        }
    }

    fn write_zero_buffers(&self, offset: u64, len: u64) -> Result<(), DevError> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done);
            self.engine
                .write_all_at(self.file.as_raw_fd(), &zeros[..n as usize], offset + done)
                .map_err(|e| self.io_err(DevOp::WriteZeroes, offset + done, n, e))?;
            done += n;
        }
        Ok(())
    }
}

impl BlockDev for FileDev {
    fn name(&self) -> &str {
        &self.name
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn logical_block_size(&self) -> u32 {
        self.block_size
    }

    fn capabilities(&self) -> DevCapabilities {
        DevCapabilities {
            // Emulated ATS: correct only among processes of this machine.
            cross_machine_atomic_cas: false,
            // Punching a hole in a file always reads back zeros; BLKDISCARD
            // on a block device need not.
            unmap_zeroes: !self.is_block_device,
            persistent_reservations: false,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DevError> {
        check_io(self, DevOp::Read, offset, buf.len() as u64)?;
        let len = buf.len() as u64;
        self.engine
            .read_exact_at(self.file.as_raw_fd(), buf, offset)
            .map_err(|e| self.io_err(DevOp::Read, offset, len, e))
    }

    fn read_cached(&self, buf: &mut [u8], offset: u64) -> Result<bool, DevError> {
        check_io(self, DevOp::Read, offset, buf.len() as u64)?;
        let len = buf.len() as u64;
        sys::pread_nowait(self.file.as_raw_fd(), buf, offset)
            .map_err(|e| self.io_err(DevOp::Read, offset, len, e))
    }

    fn cached_view(&self, offset: u64, len: u64) -> Result<Option<&[u8]>, DevError> {
        if mmap_read_off() {
            return Ok(None);
        }
        let end = offset.checked_add(len).filter(|&e| e <= self.size);
        if end.is_none() {
            return Err(DevError::OutOfRange {
                device: self.name.clone(),
                op: DevOp::Read,
                offset,
                len,
                size: self.size,
            });
        }
        // Mapped once, up to the size at open: vmfs never shrinks its device.
        let mapping = self.mapping.get_or_init(|| {
            Mapping::new(self.file.as_raw_fd(), self.size)
                .inspect_err(|e| {
                    tracing::info!("{}: no memory mapping, reads are copied: {e}", self.name)
                })
                .ok()
        });
        let Some(m) = mapping else { return Ok(None) };
        m.resident(offset, len)
            .map_err(|e| self.io_err(DevOp::Read, offset, len, e))
    }

    fn prefetch(&self, offset: u64, len: u64) {
        if prefetch_off() {
            return;
        }
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return;
        }
        // A hint: failing to give it changes nothing but the speed.
        if let Err(e) = sys::will_need(self.file.as_raw_fd(), offset, end - offset) {
            tracing::debug!("{}: prefetch {offset}+{len}: {e}", self.name);
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DevError> {
        check_io(self, DevOp::Write, offset, buf.len() as u64)?;
        self.check_writable(DevOp::Write, offset, buf.len() as u64)?;
        self.engine
            .write_all_at(self.file.as_raw_fd(), buf, offset)
            .map_err(|e| self.io_err(DevOp::Write, offset, buf.len() as u64, e))
    }

    fn flush(&self) -> Result<(), DevError> {
        if self.read_only {
            return Ok(());
        }
        self.engine
            .datasync(self.file.as_raw_fd())
            .map_err(|e| self.io_err(DevOp::Flush, 0, 0, e))
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DevError> {
        check_io(self, DevOp::WriteZeroes, offset, len)?;
        self.check_writable(DevOp::WriteZeroes, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let fd = self.file.as_raw_fd();
        let r = if self.is_block_device {
            sys::block_device_range(fd, true, offset, len)
        } else {
            sys::fallocate(
                fd,
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        };
        match r {
            Ok(()) => Ok(()),
            // Not supported by this filesystem/device: write the zeros.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY)
                ) =>
            {
                self.write_zero_buffers(offset, len)
            }
            Err(e) => Err(self.io_err(DevOp::WriteZeroes, offset, len, e)),
        }
    }

    fn unmap(&self, offset: u64, len: u64) -> Result<(), DevError> {
        check_io(self, DevOp::Unmap, offset, len)?;
        self.check_writable(DevOp::Unmap, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let fd = self.file.as_raw_fd();
        let r = if self.is_block_device {
            sys::block_device_range(fd, false, offset, len)
        } else {
            sys::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        };
        match r {
            Ok(()) => Ok(()),
            // Discard is advisory; a file that cannot punch holes gets zeros
            // so that unmapped ranges still read as zeros.
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP)) && !self.is_block_device =>
            {
                self.write_zero_buffers(offset, len)
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(self.io_err(DevOp::Unmap, offset, len, e)),
        }
    }

    fn compare_and_write(
        &self,
        offset: u64,
        expected: &[u8],
        new: &[u8],
    ) -> Result<CasOutcome, DevError> {
        check_cas(self, offset, expected, new)?;
        let len = new.len() as u64;
        self.check_writable(DevOp::CompareAndWrite, offset, len)?;
        let fd = self.file.as_raw_fd();
        let err = |e| self.io_err(DevOp::CompareAndWrite, offset, len, e);
        let _in_process = self.range_rw.write().unwrap_or_else(|e| e.into_inner());
        let _range = sys::OfdRangeLock::exclusive(fd, offset, len).map_err(err)?;
        let mut current = vec![0u8; new.len()];
        self.engine
            .read_exact_at(fd, &mut current, offset)
            .map_err(err)?;
        if current != expected {
            return Ok(CasOutcome::Miscompare(current));
        }
        self.engine.write_all_at(fd, new, offset).map_err(err)?;
        // COMPARE AND WRITE is durable before it reports success.
        self.engine.datasync(fd).map_err(err)?;
        Ok(CasOutcome::Done)
    }

    fn write_fenced(
        &self,
        op: FencedOp<'_>,
        offset: u64,
        fence: &FenceToken,
    ) -> Result<(), DevError> {
        // A shared OFD lock on the heartbeat slot: another host's
        // compare-and-write of the slot (which takes the exclusive lock)
        // waits for this write to finish, and once it has changed the slot
        // our check below refuses. Check and write are thus atomic against
        // being declared dead, across processes of this machine.
        let fd = self.file.as_raw_fd();
        let err = |e| self.io_err(DevOp::Read, fence.slot_addr, 512, e);
        check_io(self, DevOp::Read, fence.slot_addr, 512)?;
        let _in_process = self.range_rw.read().unwrap_or_else(|e| e.into_inner());
        self.enter_shared(fence.slot_addr).map_err(err)?;
        let result = (|| {
            let mut sector = [0u8; 512];
            self.engine
                .read_exact_at(fd, &mut sector, fence.slot_addr)
                .map_err(err)?;
            if !fence.admits(&sector) {
                return Err(fence.refused(&self.name));
            }
            apply_op(self, op, offset)
        })();
        self.leave_shared(fence.slot_addr);
        result
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;

//! io_uring engine: one small ring per thread (rings are not shared, so no
//! lock sits on the I/O path), each operation submitted and reaped before
//! returning. Buffers stay borrowed until their completion is reaped, which
//! is what makes the raw pointers in the submissions sound.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

use super::engine::{Engine, PreadEngine};

const RING_ENTRIES: u32 = 8;

thread_local! {
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
}

/// The io_uring engine.
#[derive(Debug, Default)]
pub struct UringEngine {
    fallback: PreadEngine,
}

impl UringEngine {
    /// Probe whether io_uring works here (it may be disabled by sysctl or a
    /// seccomp filter).
    pub fn probe() -> io::Result<UringEngine> {
        IoUring::new(RING_ENTRIES)?;
        Ok(UringEngine::default())
    }
}

/// Submit one prepared entry on this thread's ring and return its result.
///
/// # Safety
/// Every buffer the entry points at must stay valid and unaliased until this
/// function returns (it waits for the completion).
unsafe fn submit_one(entry: io_uring::squeue::Entry) -> Option<io::Result<u32>> {
    RING.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = IoUring::new(RING_ENTRIES).ok();
        }
        let ring = slot.as_mut()?;
        // SAFETY: the caller guarantees the buffers outlive the operation; we
        // reap its completion below before returning.
        if unsafe { ring.submission().push(&entry) }.is_err() {
            return Some(Err(io::Error::other("io_uring submission queue full")));
        }
        // Wait until the completion is really there: submit_and_wait can
        // return after submitting but before completing (a signal), and the
        // buffer must stay borrowed until the kernel is done with it.
        let cqe = loop {
            if let Some(c) = ring.completion().next() {
                break c;
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The entry is queued or in flight: we cannot return and
                // release the buffer, so keep waiting for it.
                Err(e) => {
                    tracing::error!("io_uring wait failed ({e}); still waiting for the completion");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        };
        let res = cqe.result();
        Some(if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else {
            Ok(res as u32)
        })
    })
}

impl Engine for UringEngine {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn read_exact_at(&self, fd: RawFd, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let len = buf.len().min(u32::MAX as usize) as u32;
            let entry = opcode::Read::new(types::Fd(fd), buf.as_mut_ptr(), len)
                .offset(offset)
                .build();
            // SAFETY: `buf` is exclusively borrowed for the whole call and
            // submit_one waits for the completion.
            match unsafe { submit_one(entry) } {
                None => return self.fallback.read_exact_at(fd, buf, offset),
                Some(Ok(0)) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Some(Ok(n)) => {
                    buf = &mut buf[n as usize..];
                    offset += u64::from(n);
                }
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Some(Err(e)) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_all_at(&self, fd: RawFd, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let len = buf.len().min(u32::MAX as usize) as u32;
            let entry = opcode::Write::new(types::Fd(fd), buf.as_ptr(), len)
                .offset(offset)
                .build();
            // SAFETY: `buf` is borrowed for the whole call and submit_one
            // waits for the completion.
            match unsafe { submit_one(entry) } {
                None => return self.fallback.write_all_at(fd, buf, offset),
                Some(Ok(0)) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Some(Ok(n)) => {
                    buf = &buf[n as usize..];
                    offset += u64::from(n);
                }
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Some(Err(e)) => return Err(e),
            }
        }
        Ok(())
    }

    fn datasync(&self, fd: RawFd) -> io::Result<()> {
        let entry = opcode::Fsync::new(types::Fd(fd))
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        // SAFETY: an fsync entry points at no buffer.
        match unsafe { submit_one(entry) } {
            None => self.fallback.datasync(fd),
            Some(r) => r.map(|_| ()),
        }
    }
}

//! I/O engines behind `FileDev`: io_uring, with pread/pwrite as the fallback
//! chosen at run time when io_uring is unavailable.

use std::io;
use std::os::fd::RawFd;

/// Positional read/write/sync on a file descriptor, full-length or error.
pub trait Engine: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    fn read_exact_at(&self, fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_all_at(&self, fd: RawFd, buf: &[u8], offset: u64) -> io::Result<()>;
    fn datasync(&self, fd: RawFd) -> io::Result<()>;
}

/// pread/pwrite/fdatasync.
#[derive(Debug, Default)]
pub struct PreadEngine;

fn off_t(offset: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset too large"))
}

impl Engine for PreadEngine {
    fn name(&self) -> &'static str {
        "pread"
    }

    fn read_exact_at(&self, fd: RawFd, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            // SAFETY: buf is a live, exclusively borrowed slice of buf.len() bytes.
            let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off_t(offset)?) };
            match n {
                n if n > 0 => {
                    let n = n as usize;
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    fn write_all_at(&self, fd: RawFd, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            // SAFETY: buf is a live slice of buf.len() bytes.
            let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off_t(offset)?) };
            match n {
                n if n > 0 => {
                    let n = n as usize;
                    buf = &buf[n..];
                    offset += n as u64;
                }
                0 => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    fn datasync(&self, fd: RawFd) -> io::Result<()> {
        super::sys::fdatasync(fd)
    }
}

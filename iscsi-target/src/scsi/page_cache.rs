//! Reading only what the page cache already holds: a caller that must not
//! block (an iSCSI connection task, a FUSE session thread) serves cached
//! data itself and hands the rest to a thread that may wait.

use std::io;
use std::os::fd::RawFd;

/// Fill `buf` from `offset` with `preadv2(RWF_NOWAIT)`: only from the page
/// cache, never waiting for the medium. `Ok(true)` when all of `buf` was
/// read; `Ok(false)` when some of it is not cached (EAGAIN or a short
/// read), or the kernel does not offer the flag (EOPNOTSUPP).
pub fn pread_nowait(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    let mut done = 0usize;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let iov = libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        };
        let off = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| io::Error::other("offset too large"))?;
        // SAFETY: `iov` describes `rest`, a live, exclusively borrowed
        // buffer of `iov_len` bytes; the kernel writes at most that much.
        let r = unsafe { libc::preadv2(fd, &iov, 1, off, libc::RWF_NOWAIT) };
        if r > 0 {
            done += r as usize;
            continue;
        }
        if r == 0 {
            // End of file inside the range: not ours to serve from cache.
            return Ok(false);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => return Ok(false),
            _ => return Err(e),
        }
    }
    Ok(true)
}

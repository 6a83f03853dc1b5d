//! Open-file-description (OFD) byte-range locks on the backing file, so that
//! COMPARE AND WRITE through this target is atomic also against other
//! processes on this machine using the same file — vmfs's `FileDev` hosts
//! take the same locks for their emulated ATS (exclusive) and fenced writes
//! (shared); see docs/iscsi.md.
//!
//! OFD locks belong to the open file description: they exclude other
//! processes and other descriptions, not threads sharing ours. Inside the
//! target the per-LUN range lock already serialises overlapping commands,
//! so two of our own OFD locks never cover the same bytes at once.

use std::io;
use std::os::fd::RawFd;

/// A held OFD lock on `[offset, offset+len)`, released on drop.
#[derive(Debug)]
pub struct OfdRangeLock {
    fd: RawFd,
    offset: u64,
    len: u64,
}

fn fcntl_lock(
    fd: RawFd,
    kind: libc::c_short,
    offset: u64,
    len: u64,
    cmd: libc::c_int,
) -> io::Result<()> {
    // SAFETY: flock is a plain C struct for which all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::other(format!("lock offset {offset} too large")))?;
    fl.l_len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::other(format!("lock length {len} too large")))?;
    fl.l_pid = 0; // must be 0 for OFD locks
    loop {
        // SAFETY: F_OFD_SETLK(W) only reads the flock struct, which lives
        // across the call; the descriptor is owned by the caller's Backing.
        let r = unsafe { libc::fcntl(fd, cmd, &fl as *const libc::flock) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl OfdRangeLock {
    /// Blocks until the range is write-locked (excludes every other lock).
    pub fn exclusive(fd: RawFd, offset: u64, len: u64) -> io::Result<OfdRangeLock> {
        fcntl_lock(
            fd,
            libc::F_WRLCK as libc::c_short,
            offset,
            len,
            libc::F_OFD_SETLKW,
        )?;
        Ok(OfdRangeLock { fd, offset, len })
    }

    /// Blocks until the range is read-locked (excludes write locks only).
    pub fn shared(fd: RawFd, offset: u64, len: u64) -> io::Result<OfdRangeLock> {
        fcntl_lock(
            fd,
            libc::F_RDLCK as libc::c_short,
            offset,
            len,
            libc::F_OFD_SETLKW,
        )?;
        Ok(OfdRangeLock { fd, offset, len })
    }
}

impl Drop for OfdRangeLock {
    fn drop(&mut self) {
        // Unlocking a range we hold cannot fail on a valid descriptor, and
        // closing the description releases it anyway.
        let _ = fcntl_lock(
            self.fd,
            libc::F_UNLCK as libc::c_short,
            self.offset,
            self.len,
            libc::F_OFD_SETLK,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn exclusive_lock_blocks_another_description() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let a = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let b = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let held = OfdRangeLock::exclusive(a.as_raw_fd(), 512, 512).unwrap();
        // A non-blocking probe from the other description must fail while
        // held, on an overlapping range only.
        let probe = |off| {
            fcntl_lock(
                b.as_raw_fd(),
                libc::F_RDLCK as libc::c_short,
                off,
                512,
                libc::F_OFD_SETLK,
            )
        };
        assert!(probe(512).is_err());
        probe(1024).unwrap();
        drop(held);
        probe(512).unwrap();
        // Shared locks from two descriptions coexist.
        let _s = OfdRangeLock::shared(a.as_raw_fd(), 512, 512).unwrap();
    }
}

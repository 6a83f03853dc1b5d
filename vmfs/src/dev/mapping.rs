//! A read-only shared memory mapping of a whole image file or block
//! device, for [`BlockDev::cached_view`](super::BlockDev::cached_view):
//! the FUSE session threads answer a READ straight from it, so the kernel
//! copies the image's page cache into `/dev/fuse` once instead of our
//! `pread` copying it into a buffer first.
//!
//! The mapping covers the device's size at open (vmfs never shrinks its
//! device). Its bytes are only ever handed to the kernel (the `writev` of a
//! FUSE reply), never read by our code: if someone truncated the image
//! under a mounted host, the kernel's copy from a page past the new end
//! fails that one reply with EFAULT (the reader gets EIO) instead of this
//! process taking SIGBUS.

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;

/// `len` bytes of a file mapped `PROT_READ`, `MAP_SHARED` at `base`.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
    page: usize,
}

// SAFETY: the mapping is read-only memory owned by this value until drop;
// sharing the pointer between threads hands out only shared slices of it,
// and the kernel keeps it coherent with the page cache.
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` only gives shared, read-only access.
unsafe impl Sync for Mapping {}

/// Pages checked per `mincore` call (a stack buffer of one byte each).
const MINCORE_CHUNK: usize = 512;

impl Mapping {
    /// Map the first `len` bytes of `fd` read-only and shared.
    pub fn new(fd: RawFd, len: u64) -> io::Result<Mapping> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| io::Error::other(format!("cannot map {len} bytes")))?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = usize::try_from(page)
            .ok()
            .filter(|p| p.is_power_of_two())
            .ok_or_else(|| io::Error::other("no page size"))?;
        // SAFETY: a fresh mapping chosen by the kernel (no address hint),
        // read-only, of a descriptor we hold; nothing else is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave 0"))?;
        Ok(Mapping { base, len, page })
    }

    /// The mapped bytes `offset..offset + len` if every page under them is
    /// in the page cache right now (`mincore`), so that the kernel's copy
    /// out of them waits for no disk read; `None` if one is not, or the
    /// range is outside the mapping. A page evicted between this check
    /// and the copy makes that copy wait for the disk, nothing worse: the
    /// bytes are the file's either way.
    pub fn resident(&self, offset: u64, len: u64) -> io::Result<Option<&[u8]>> {
        let (Ok(start), Ok(n)) = (usize::try_from(offset), usize::try_from(len)) else {
            return Ok(None);
        };
        if n == 0 || start.checked_add(n).is_none_or(|end| end > self.len) {
            return Ok(None);
        }
        let first = start & !(self.page - 1);
        let end = (start + n).next_multiple_of(self.page).min(self.len);
        let mut vec = [0u8; MINCORE_CHUNK];
        let mut at = first;
        while at < end {
            let span = (end - at).min(MINCORE_CHUNK * self.page);
            let pages = span.div_ceil(self.page);
            // SAFETY: `at` is page-aligned and `at..at + span` lies inside
            // our mapping; `vec` has room for the `pages` bytes mincore
            // writes (span ≤ MINCORE_CHUNK pages).
            let r = unsafe {
                libc::mincore(
                    self.base.as_ptr().add(at).cast(),
                    span,
                    vec.as_mut_ptr().cast(),
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            if vec[..pages].iter().any(|b| b & 1 == 0) {
                return Ok(None);
            }
            at += span;
        }
        // SAFETY: `start..start + n` is inside the live mapping, which is
        // readable and outlives `&self`. The bytes may change under the
        // borrow (writes to the file by this or another process), as with
        // any shared memory; callers only hand them to the kernel.
        Ok(Some(unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().add(start), n)
        }))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base..base + len` is the mapping made in `new`, and no
        // slice of it outlives `&self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

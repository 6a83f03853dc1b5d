//! `DevWrapper`: a device that wraps another and changes only some of its
//! operations (counting, read-ahead, fencing, fault hooks). A wrapper names
//! its inner device and overrides what it changes; every other operation
//! goes to the inner device unchanged, and the blanket impl below makes it a
//! [`BlockDev`]. Without this, each wrapper repeated the forwarding of all
//! ten methods.
//!
//! Implement it by path (`impl vmfs::dev::DevWrapper for X`) rather than
//! importing the trait: its methods share `BlockDev`'s names, so a module
//! with both traits in scope must call `BlockDev::read_at(&x, ..)` on the
//! concrete wrapper type.

use super::{BlockDev, CasOutcome, DevCapabilities, DevError, FenceToken, FencedOp};

/// A device in front of [`DevWrapper::inner`]. Each method defaults to the
/// inner device's; override the ones the wrapper changes.
pub trait DevWrapper: Send + Sync + std::fmt::Debug {
    /// The device operations go to when not overridden.
    fn inner(&self) -> &dyn BlockDev;

    fn name(&self) -> &str {
        self.inner().name()
    }
    fn size(&self) -> u64 {
        self.inner().size()
    }
    fn logical_block_size(&self) -> u32 {
        self.inner().logical_block_size()
    }
    fn capabilities(&self) -> DevCapabilities {
        self.inner().capabilities()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DevError> {
        self.inner().read_at(buf, offset)
    }
    /// Not forwarded by default: a wrapper that changes reads (faults,
    /// torn reads, counting) would be bypassed by the inner device's cached
    /// read. "Not supported" sends the caller to [`DevWrapper::read_at`];
    /// a wrapper that passes reads through unchanged overrides this to
    /// forward.
    fn read_cached(&self, _buf: &mut [u8], _offset: u64) -> Result<bool, DevError> {
        Ok(false)
    }
    /// Not forwarded by default, for the reason [`DevWrapper::read_cached`]
    /// is not: the caller would read the inner device's memory past this
    /// wrapper. A wrapper that passes reads through unchanged overrides
    /// this to forward.
    fn cached_view(&self, _offset: u64, _len: u64) -> Result<Option<&[u8]>, DevError> {
        Ok(None)
    }
    fn prefetch(&self, offset: u64, len: u64) {
        self.inner().prefetch(offset, len)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DevError> {
        self.inner().write_at(buf, offset)
    }
    fn flush(&self) -> Result<(), DevError> {
        self.inner().flush()
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DevError> {
        self.inner().write_zeroes(offset, len)
    }
    fn unmap(&self, offset: u64, len: u64) -> Result<(), DevError> {
        self.inner().unmap(offset, len)
    }
    fn compare_and_write(
        &self,
        offset: u64,
        expected: &[u8],
        new: &[u8],
    ) -> Result<CasOutcome, DevError> {
        self.inner().compare_and_write(offset, expected, new)
    }
    /// Forwarded whole, so the inner device's atomic check-and-write (its
    /// lock against a slot compare-and-write) is kept. A wrapper that wants
    /// the check done through its own reads and writes calls
    /// [`super::check_then_apply`].
    fn write_fenced(
        &self,
        op: FencedOp<'_>,
        offset: u64,
        fence: &FenceToken,
    ) -> Result<(), DevError> {
        self.inner().write_fenced(op, offset, fence)
    }
}

impl<T: DevWrapper> BlockDev for T {
    fn name(&self) -> &str {
        DevWrapper::name(self)
    }
    fn size(&self) -> u64 {
        DevWrapper::size(self)
    }
    fn logical_block_size(&self) -> u32 {
        DevWrapper::logical_block_size(self)
    }
    fn capabilities(&self) -> DevCapabilities {
        DevWrapper::capabilities(self)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DevError> {
        DevWrapper::read_at(self, buf, offset)
    }
    fn read_cached(&self, buf: &mut [u8], offset: u64) -> Result<bool, DevError> {
        DevWrapper::read_cached(self, buf, offset)
    }
    fn cached_view(&self, offset: u64, len: u64) -> Result<Option<&[u8]>, DevError> {
        DevWrapper::cached_view(self, offset, len)
    }
    fn prefetch(&self, offset: u64, len: u64) {
        DevWrapper::prefetch(self, offset, len)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DevError> {
        DevWrapper::write_at(self, buf, offset)
    }
    fn flush(&self) -> Result<(), DevError> {
        DevWrapper::flush(self)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DevError> {
        DevWrapper::write_zeroes(self, offset, len)
    }
    fn unmap(&self, offset: u64, len: u64) -> Result<(), DevError> {
        DevWrapper::unmap(self, offset, len)
    }
    fn compare_and_write(
        &self,
        offset: u64,
        expected: &[u8],
        new: &[u8],
    ) -> Result<CasOutcome, DevError> {
        DevWrapper::compare_and_write(self, offset, expected, new)
    }
    fn write_fenced(
        &self,
        op: FencedOp<'_>,
        offset: u64,
        fence: &FenceToken,
    ) -> Result<(), DevError> {
        DevWrapper::write_fenced(self, op, offset, fence)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use crate::dev::{BlockDev, CasOutcome, DevError, MemDev, SharedDev};

    /// Overrides one method; the rest must reach the inner device.
    #[derive(Debug)]
    struct CountReads {
        inner: SharedDev,
        reads: AtomicU64,
    }

    impl super::DevWrapper for CountReads {
        fn inner(&self) -> &dyn BlockDev {
            &*self.inner
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DevError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.read_at(buf, offset)
        }
    }

    #[test]
    fn overrides_one_method_and_forwards_the_rest() {
        let mem: SharedDev = Arc::new(MemDev::new(1 << 20, 512));
        let w = CountReads {
            inner: mem.clone(),
            reads: AtomicU64::new(0),
        };
        assert_eq!(w.name(), mem.name());
        assert_eq!(w.size(), 1 << 20);
        assert_eq!(w.logical_block_size(), 512);
        w.write_at(&[3u8; 512], 4096).unwrap();
        let mut b = [0u8; 512];
        w.read_at(&mut b, 4096).unwrap();
        assert_eq!(b, [3u8; 512]);
        assert_eq!(w.reads.load(Ordering::Relaxed), 1);
        let cas = w.compare_and_write(4096, &[3u8; 512], &[4u8; 512]).unwrap();
        assert_eq!(cas, CasOutcome::Done);
        mem.read_at(&mut b, 4096).unwrap();
        assert_eq!(b, [4u8; 512]);
        w.unmap(4096, 512).unwrap();
        w.read_at(&mut b, 4096).unwrap();
        assert_eq!(b, [0u8; 512]);
        // Errors are the inner device's, naming it.
        let e = w.read_at(&mut b, 1 << 20).unwrap_err();
        assert!(e.to_string().contains(mem.name()), "{e}");
    }

    #[test]
    fn cached_reads_and_views_are_not_forwarded_unless_the_wrapper_opts_in() {
        let dir = tempfile::tempdir().unwrap();
        let file: SharedDev = Arc::new(
            crate::dev::FileDev::open(
                dir.path().join("img"),
                crate::dev::FileDevOptions {
                    create_size: Some(1 << 20),
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        file.write_at(&[7u8; 4096], 0).unwrap();
        let w = CountReads {
            inner: file.clone(),
            reads: AtomicU64::new(0),
        };
        // The counting wrapper would be bypassed: both say "not supported".
        assert!(!w.read_cached(&mut [0u8; 4096], 0).unwrap());
        assert_eq!(w.cached_view(0, 4096).unwrap(), None);
        if std::env::var_os("VMFS_NO_MMAP_READ").is_none_or(|v| v != "1") {
            assert!(file.cached_view(0, 4096).unwrap().is_some());
        }
    }
}

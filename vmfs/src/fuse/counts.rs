//! How READs were answered, counted for the session's end-of-life log
//! line: whether the fast path replies from the image's mapping (the
//! tests check that it does, and A/B runs that `VMFS_NO_MMAP_READ=1`
//! turns it off).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::fs::ReadVia;

/// READs answered, by path.
#[derive(Debug, Default)]
pub struct ReadCounts {
    /// On a session thread, straight from the device's mapping.
    mapped: AtomicU64,
    /// On a session thread, copied from the device's cache into a buffer.
    copied: AtomicU64,
    /// Handed to a worker (not cached, file not locked here, mutex busy).
    handed: AtomicU64,
}

impl ReadCounts {
    /// A READ the session thread answered.
    pub fn count(&self, via: ReadVia) {
        let c = match via {
            ReadVia::Mapping => &self.mapped,
            ReadVia::Buffer => &self.copied,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A READ answered by a worker.
    pub fn count_handed(&self) {
        self.handed.fetch_add(1, Ordering::Relaxed);
    }
}

impl std::fmt::Display for ReadCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "READs: {} from the image mapping, {} copied from its cache, {} by workers",
            self.mapped.load(Ordering::Relaxed),
            self.copied.load(Ordering::Relaxed),
            self.handed.load(Ordering::Relaxed)
        )
    }
}

//! A disk held in memory, counting flushes: for tests that must see what
//! reached the backend without a file system in the way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::backend::{check_range, BackendError, BackendResult, BlockBackend};

/// An in-memory disk.
pub struct MemBackend {
    data: RwLock<Vec<u8>>,
    read_only: bool,
    block_size: u32,
    flushes: AtomicU64,
    discards: AtomicU64,
}

impl MemBackend {
    /// A zero-filled disk of `size` bytes (rounded down to a sector).
    pub fn new(size: u64, read_only: bool) -> Self {
        Self::with_contents(vec![0; (size - size % 512) as usize], read_only)
    }

    /// A disk holding `data` (its length is rounded down to a sector).
    pub fn with_contents(mut data: Vec<u8>, read_only: bool) -> Self {
        data.truncate(data.len() - data.len() % 512);
        MemBackend {
            data: RwLock::new(data),
            read_only,
            block_size: 512,
            flushes: AtomicU64::new(0),
            discards: AtomicU64::new(0),
        }
    }

    /// Report `block_size` to the guest instead of 512.
    pub fn with_block_size(mut self, block_size: u32) -> Self {
        self.block_size = block_size;
        self
    }

    /// A copy of the whole disk.
    pub fn contents(&self) -> Vec<u8> {
        self.data.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many flushes reached the backend.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::SeqCst)
    }

    /// How many discards reached the backend.
    pub fn discards(&self) -> u64 {
        self.discards.load(Ordering::SeqCst)
    }

    fn modify(
        &self,
        op: &'static str,
        offset: u64,
        len: u64,
        f: impl FnOnce(&mut [u8]),
    ) -> BackendResult<()> {
        if self.read_only {
            return Err(BackendError::ReadOnly { op, offset, len });
        }
        let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
        check_range(op, offset, len, data.len() as u64)?;
        f(&mut data[offset as usize..(offset + len) as usize]);
        Ok(())
    }
}

impl BlockBackend for MemBackend {
    fn size(&self) -> u64 {
        self.data.read().unwrap_or_else(|p| p.into_inner()).len() as u64
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> BackendResult<()> {
        let data = self.data.read().unwrap_or_else(|p| p.into_inner());
        check_range("read", offset, buf.len() as u64, data.len() as u64)?;
        buf.copy_from_slice(&data[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> BackendResult<()> {
        self.modify("write", offset, buf.len() as u64, |d| {
            d.copy_from_slice(buf)
        })
    }

    fn flush(&self) -> BackendResult<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> BackendResult<()> {
        // Discarded space reads as zeros here, like a punched hole.
        self.modify("discard", offset, len, |d| d.fill(0))?;
        self.discards.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, _may_unmap: bool) -> BackendResult<()> {
        self.modify("write-zeroes", offset, len, |d| d.fill(0))
    }
}

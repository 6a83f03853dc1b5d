//! The device as fsck sees it: reads, and writes that are refused unless
//! repairing (so "nothing is written without --repair" holds in one place).

use std::sync::atomic::{AtomicU64, Ordering};

use vmfs::dev::{CasOutcome, SharedDev};
use vmfs::format::SECTOR;

use crate::FsckError;

/// A device opened by fsck.
#[derive(Debug)]
pub struct Disk {
    pub dev: SharedDev,
    pub repair: bool,
    writes: AtomicU64,
}

impl Disk {
    pub fn new(dev: SharedDev, repair: bool) -> Disk {
        Disk {
            dev,
            repair,
            writes: AtomicU64::new(0),
        }
    }

    /// `len` bytes at `off`; reads past the device end are an error.
    pub fn read(&self, off: u64, len: usize) -> Result<Vec<u8>, FsckError> {
        if off
            .checked_add(len as u64)
            .is_none_or(|end| end > self.dev.size())
        {
            return Err(FsckError::Range {
                device: self.dev.name().to_string(),
                offset: off,
                len: len as u64,
            });
        }
        let mut b = vec![0u8; len];
        self.dev.read_at(&mut b, off)?;
        Ok(b)
    }

    fn allowed(&self, off: u64, len: usize) -> Result<(), FsckError> {
        if !self.repair {
            return Err(FsckError::ReadOnly { offset: off });
        }
        if off
            .checked_add(len as u64)
            .is_none_or(|end| end > self.dev.size())
        {
            return Err(FsckError::Range {
                device: self.dev.name().to_string(),
                offset: off,
                len: len as u64,
            });
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Write a whole block (already sealed by the caller).
    pub fn write(&self, off: u64, data: &[u8]) -> Result<(), FsckError> {
        self.allowed(off, data.len())?;
        self.dev.write_at(data, off)?;
        Ok(())
    }

    /// Replace one sector by compare-and-write from the exact image read:
    /// false if it changed meanwhile (a live host wrote it).
    pub fn cas_sector(&self, off: u64, old: &[u8], new: &[u8]) -> Result<bool, FsckError> {
        self.allowed(off, SECTOR)?;
        Ok(matches!(
            self.dev.compare_and_write(off, old, new)?,
            CasOutcome::Done
        ))
    }

    pub fn zero(&self, off: u64, len: u64) -> Result<(), FsckError> {
        self.allowed(off, len as usize)?;
        self.dev.write_zeroes(off, len)?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), FsckError> {
        if self.repair {
            self.dev.flush()?;
        }
        Ok(())
    }

    /// Writes issued so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

//! Discard (UNMAP / TRIM) and write-zeroes on a chain's top disk.
//!
//! Flat extents: a thin disk gives the range back (punch hole); a thick one
//! keeps its reservation (punch, then lazily re-allocate) unless it is
//! eager-zeroed, where zeros are written so it stays fully zeroed on disk.
//! COWD deltas cannot drop grains (the parent would show through), so
//! discard is a no-op there (it is advisory) and write-zeroes writes zeros.

use super::chain::DiskChain;
use super::descriptor::Provisioning;
use super::error::{FileOp, Result, VmdkError};
use super::io::write_zeros;
use super::layer::ExtentData;

/// Zeros written per piece on extents that cannot punch.
const PIECE: u64 = 1 << 20;

impl DiskChain {
    /// Tell the disk `len` bytes at `offset` are no longer needed. Reads of
    /// the range afterwards return zeros or the old data.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        self.zero_range(offset, len, false)
    }

    /// Make `len` bytes at `offset` read as zeros, cheaply where the
    /// extent allows it.
    pub fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<()> {
        self.zero_range(offset, len, true)
    }

    fn zero_range(&mut self, offset: u64, len: u64, must_zero: bool) -> Result<()> {
        let file = self.top().name.clone();
        if !self.writable {
            return Err(VmdkError::ReadOnly {
                file,
                op: FileOp::Write,
            });
        }
        let cap = self.capacity();
        if offset.checked_add(len).is_none_or(|e| e > cap) {
            return Err(VmdkError::OutOfRange {
                file,
                op: FileOp::Write,
                offset,
                len,
                capacity: cap,
            });
        }
        if len == 0 {
            return Ok(());
        }
        self.note_content_change()?;
        let prov = self.top().descriptor.provisioning();
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let top = self.layers.last().expect("chain has a layer");
            let e = &top.extents[top.extent_at(pos)];
            let rel = pos - e.start;
            let n = (e.len - rel).min(end - pos);
            let cowd = matches!(e.data, ExtentData::Cowd(_));
            match &e.data {
                ExtentData::Flat { name, io, start } => {
                    let at = start + rel;
                    let fail = |op, err| VmdkError::io(name, op, at, n, err);
                    match prov {
                        Provisioning::EagerZeroedThick => {
                            write_zeros(&**io, at, n).map_err(|e| fail(FileOp::Write, e))?
                        }
                        Provisioning::ZeroedThick => {
                            io.punch_hole(at, n)
                                .map_err(|e| fail(FileOp::PunchHole, e))?;
                            io.allocate(at, n).map_err(|e| fail(FileOp::Allocate, e))?;
                        }
                        Provisioning::Thin => io
                            .punch_hole(at, n)
                            .map_err(|e| fail(FileOp::PunchHole, e))?,
                    }
                }
                ExtentData::Zero | ExtentData::Cowd(_) => {}
            }
            if cowd && must_zero {
                let zeros = vec![0u8; PIECE.min(n) as usize];
                let mut done = 0;
                while done < n {
                    let k = PIECE.min(n - done) as usize;
                    self.write_at(pos + done, &zeros[..k])?;
                    done += k as u64;
                }
            }
            pos += n;
        }
        Ok(())
    }
}

//! `MemDev`: a device in memory. For unit tests and the simulator; atomic
//! compare-and-write under one mutex, writes durable at once.

use std::sync::Mutex;

use super::{
    check_cas, check_io, BlockDev, CasOutcome, DevCapabilities, DevError, DevOp, FenceToken,
    FencedOp,
};

/// A block device held in memory.
#[derive(Debug)]
pub struct MemDev {
    name: String,
    block_size: u32,
    data: Mutex<Vec<u8>>,
}

impl MemDev {
    /// A zero-filled device of `size` bytes (rounded down to the block size).
    pub fn new(size: u64, block_size: u32) -> Self {
        let size = size - size % u64::from(block_size);
        let len = usize::try_from(size).expect("MemDev size fits in memory");
        MemDev {
            name: format!("mem:{size}"),
            block_size,
            data: Mutex::new(vec![0; len]),
        }
    }

    /// A device holding `bytes` (length a multiple of `block_size`).
    pub fn from_bytes(bytes: Vec<u8>, block_size: u32) -> Self {
        assert_eq!(
            bytes.len() % block_size as usize,
            0,
            "MemDev size must be whole blocks"
        );
        MemDev {
            name: format!("mem:{}", bytes.len()),
            block_size,
            data: Mutex::new(bytes),
        }
    }

    /// A copy of the whole device contents (for test assertions).
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock leaves the bytes as they were; keep going.
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn range(offset: u64, len: usize) -> std::ops::Range<usize> {
    // check_io already proved offset+len <= size, and size fits in usize.
    let start = offset as usize;
    start..start + len
}

impl BlockDev for MemDev {
    fn name(&self) -> &str {
        &self.name
    }

    fn size(&self) -> u64 {
        self.lock().len() as u64
    }

    fn logical_block_size(&self) -> u32 {
        self.block_size
    }

    fn capabilities(&self) -> DevCapabilities {
        DevCapabilities {
            cross_machine_atomic_cas: true,
            unmap_zeroes: true,
            persistent_reservations: false,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DevError> {
        check_io(self, DevOp::Read, offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.lock()[range(offset, buf.len())]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DevError> {
        check_io(self, DevOp::Write, offset, buf.len() as u64)?;
        self.lock()[range(offset, buf.len())].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> Result<(), DevError> {
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DevError> {
        check_io(self, DevOp::WriteZeroes, offset, len)?;
        self.lock()[range(offset, len as usize)].fill(0);
        Ok(())
    }

    fn unmap(&self, offset: u64, len: u64) -> Result<(), DevError> {
        check_io(self, DevOp::Unmap, offset, len)?;
        self.lock()[range(offset, len as usize)].fill(0);
        Ok(())
    }

    fn compare_and_write(
        &self,
        offset: u64,
        expected: &[u8],
        new: &[u8],
    ) -> Result<CasOutcome, DevError> {
        check_cas(self, offset, expected, new)?;
        let mut data = self.lock();
        let r = range(offset, new.len());
        if data[r.clone()] != *expected {
            return Ok(CasOutcome::Miscompare(data[r].to_vec()));
        }
        data[r].copy_from_slice(new);
        Ok(CasOutcome::Done)
    }

    fn write_fenced(
        &self,
        op: FencedOp<'_>,
        offset: u64,
        fence: &FenceToken,
    ) -> Result<(), DevError> {
        let len = op.len();
        check_io(self, op.dev_op(), offset, len)?;
        check_io(self, DevOp::Read, fence.slot_addr, 512)?;
        // One critical section: the check and the write are atomic with
        // respect to compare_and_write of the slot.
        let mut data = self.lock();
        if !fence.admits(&data[range(fence.slot_addr, 512)]) {
            return Err(fence.refused(&self.name));
        }
        let r = range(offset, len as usize);
        match op {
            FencedOp::Write(b) => data[r].copy_from_slice(b),
            FencedOp::WriteZeroes(_) | FencedOp::Unmap(_) => data[r].fill(0),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_done_and_miscompare() {
        let d = MemDev::new(4096, 512);
        let zero = vec![0u8; 512];
        let one = vec![1u8; 512];
        assert_eq!(
            d.compare_and_write(512, &zero, &one).unwrap(),
            CasOutcome::Done
        );
        assert_eq!(
            d.compare_and_write(512, &zero, &one).unwrap(),
            CasOutcome::Miscompare(one.clone())
        );
        let mut b = vec![0u8; 512];
        d.read_at(&mut b, 512).unwrap();
        assert_eq!(b, one);
    }

    #[test]
    fn misaligned_and_out_of_range_are_errors() {
        let d = MemDev::new(4096, 512);
        let mut b = vec![0u8; 100];
        assert!(matches!(
            d.read_at(&mut b, 0),
            Err(DevError::Misaligned { .. })
        ));
        let mut b = vec![0u8; 512];
        assert!(matches!(
            d.read_at(&mut b, 4096),
            Err(DevError::OutOfRange { .. })
        ));
        assert!(matches!(
            d.read_at(&mut b, u64::MAX - 511),
            Err(DevError::OutOfRange { .. })
        ));
    }
}

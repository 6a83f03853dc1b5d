//! `HostDev`: the device as a joined host sees it. Every operation first
//! checks that the host is not fenced (and has had a beat land within F);
//! every modification is a fenced write, which the device refuses once the
//! host's heartbeat slot has been taken over.

use std::sync::Arc;

use crate::dev::{BlockDev, CasOutcome, DevCapabilities, DevError, FencedOp};

use super::host::Shared;

/// A host's fenced view of the shared device.
#[derive(Debug, Clone)]
pub struct HostDev {
    sh: Arc<Shared>,
    name: String,
}

impl HostDev {
    pub(crate) fn new(sh: Arc<Shared>) -> HostDev {
        let name = format!("{} (slot {})", sh.raw.name(), sh.slot);
        HostDev { sh, name }
    }

    fn gate(&self) -> Result<(), DevError> {
        self.sh.io_allowed().map_err(|e| DevError::Fenced {
            device: self.sh.raw.name().to_string(),
            why: e.to_string(),
        })
    }
}

impl BlockDev for HostDev {
    fn name(&self) -> &str {
        &self.name
    }

    fn size(&self) -> u64 {
        self.sh.raw.size()
    }

    fn logical_block_size(&self) -> u32 {
        self.sh.raw.logical_block_size()
    }

    fn capabilities(&self) -> DevCapabilities {
        self.sh.raw.capabilities()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DevError> {
        self.gate()?;
        self.sh.raw.read_at(buf, offset)
    }

    fn read_cached(&self, buf: &mut [u8], offset: u64) -> Result<bool, DevError> {
        self.gate()?;
        self.sh.raw.read_cached(buf, offset)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        self.sh.raw.prefetch(offset, len)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DevError> {
        self.gate()?;
        self.sh
            .raw
            .write_fenced(FencedOp::Write(buf), offset, &self.sh.token)
    }

    fn flush(&self) -> Result<(), DevError> {
        self.gate()?;
        self.sh.raw.flush()
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DevError> {
        self.gate()?;
        self.sh
            .raw
            .write_fenced(FencedOp::WriteZeroes(len), offset, &self.sh.token)
    }

    fn unmap(&self, offset: u64, len: u64) -> Result<(), DevError> {
        self.gate()?;
        self.sh
            .raw
            .write_fenced(FencedOp::Unmap(len), offset, &self.sh.token)
    }

    fn compare_and_write(
        &self,
        offset: u64,
        expected: &[u8],
        new: &[u8],
    ) -> Result<CasOutcome, DevError> {
        self.gate()?;
        self.sh.raw.compare_and_write(offset, expected, new)
    }

    fn write_fenced(
        &self,
        op: FencedOp<'_>,
        offset: u64,
        _fence: &crate::dev::FenceToken,
    ) -> Result<(), DevError> {
        // Always our own token: a host cannot write under another's.
        self.gate()?;
        self.sh.raw.write_fenced(op, offset, &self.sh.token)
    }
}

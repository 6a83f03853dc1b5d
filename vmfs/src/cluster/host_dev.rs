//! `HostDev`: the device as a joined host sees it. Every operation first
//! checks that the host is not fenced (and has had a beat land within F);
//! every modification is a fenced write, which the device refuses once the
//! host's heartbeat slot has been taken over.

use std::sync::Arc;

use crate::dev::{BlockDev, CasOutcome, DevError, FencedOp};

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

    /// Every modification: gated, and fenced by this host's own token.
    fn fenced(&self, op: FencedOp<'_>, offset: u64) -> Result<(), DevError> {
        self.gate()?;
        self.sh.raw.write_fenced(op, offset, &self.sh.token)
    }
}

impl crate::dev::DevWrapper for HostDev {
    fn inner(&self) -> &dyn BlockDev {
        &*self.sh.raw
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DevError> {
        self.gate()?;
        self.sh.raw.read_at(buf, offset)
    }

    fn read_cached(&self, buf: &mut [u8], offset: u64) -> Result<bool, DevError> {
        self.gate()?;
        self.sh.raw.read_cached(buf, offset)
    }

    fn cached_view(&self, offset: u64, len: u64) -> Result<Option<&[u8]>, DevError> {
        self.gate()?;
        self.sh.raw.cached_view(offset, len)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        self.sh.raw.prefetch(offset, len)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DevError> {
        self.fenced(FencedOp::Write(buf), offset)
    }

    fn flush(&self) -> Result<(), DevError> {
        self.gate()?;
        self.sh.raw.flush()
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DevError> {
        self.fenced(FencedOp::WriteZeroes(len), offset)
    }

    fn unmap(&self, offset: u64, len: u64) -> Result<(), DevError> {
        self.fenced(FencedOp::Unmap(len), offset)
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
        self.fenced(op, offset)
    }
}

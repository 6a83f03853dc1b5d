//! The source's view of a TRANSFER it offered: still pending, settled back
//! to it, or taken by the destination (then the lock is dropped from this
//! host's table without touching the record, which is no longer ours).

use super::host::{lock, Host};
use super::sector_cas::read_sector;
use super::ClusterError;
use crate::format::LockRecord;

/// Where a lock this host offered for TRANSFER stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferOutcome {
    /// Still offered: the destination has not accepted, nobody cancelled.
    Pending,
    /// Held by this host alone with no offer (cancelled, or never offered).
    Kept,
    /// Someone else holds it now: the destination accepted (or this host's
    /// incarnation was declared over and the lock broken).
    Taken,
}

impl Host {
    /// Read the lock record at `addr` and say where a TRANSFER offered by
    /// this host stands; `Taken` forgets the lock here.
    pub fn transfer_outcome(&self, addr: u64) -> Result<TransferOutcome, ClusterError> {
        let img = read_sector(&self.dev(), addr)?;
        let cur = LockRecord::decode(&img, addr)?;
        let me = self.holder();
        if cur.holders == [me] {
            return Ok(if cur.transfer_to.is_some() {
                TransferOutcome::Pending
            } else {
                TransferOutcome::Kept
            });
        }
        lock(&self.sh.held).remove(&addr);
        Ok(TransferOutcome::Taken)
    }
}

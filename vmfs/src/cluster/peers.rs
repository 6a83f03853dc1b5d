//! Judging another host's slot from outside the lock code (the swap
//! reclaimer uses it to touch a holder's locks only once it looks dead).

use super::host::Host;
use super::liveness::Verdict;
use super::ClusterError;
use crate::format::HeartbeatSlot;

impl Host {
    /// Read heartbeat slot `slot` and judge it with this host's observer
    /// (`Dead` only after its beat has been seen unchanged for D).
    pub fn judge_slot(&self, slot: u32) -> Result<(HeartbeatSlot, Verdict), ClusterError> {
        let (s, _, v) = self.sh.judge(slot)?;
        Ok((s, v))
    }
}

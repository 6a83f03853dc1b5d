//! Offline recovery: make a volume that no host is using safe to mount
//! without waiting for anyone. Every slot left LIVE or RECOVERING (a host
//! that crashed, or a recovery that crashed) has its journal replayed and
//! is then marked FREE under a new generation, so every lock naming the old
//! incarnation is stale to the next host that meets it.
//!
//! Online, a joining host would do the same by observing the slot silent
//! for D (`recovery.rs`); offline recovery skips the observation, so the
//! caller must know that no host is running on the volume (fsck on an
//! image, a crash-point sweep). The slot is changed by compare-and-write
//! from the image read before the replay: a host that beats meanwhile makes
//! it fail instead of being declared dead. A crash part way leaves the slot
//! LIVE or RECOVERING as it was; replay is idempotent, so running this
//! again (or online recovery) finishes the job.

use crate::format::{HeartbeatSlot, SlotState, SECTOR};
use crate::volume::Volume;

use super::journal::{replay, JournalLocation, ReplayReport};
use super::sector_cas::{cas_sector, nonce, read_sector, SectorCas};
use super::ClusterError;

/// One slot recovered offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveredSlot {
    pub slot: u32,
    /// The generation the dead incarnation ran under.
    pub hb_gen: u64,
    pub replay: ReplayReport,
}

/// Replay the journal of every slot left LIVE or RECOVERING and free the
/// slot (see the module documentation: no host may be running).
pub fn recover_offline(vol: &Volume) -> Result<Vec<RecoveredSlot>, ClusterError> {
    let dev = vol.dev.as_ref();
    let mut out = Vec::new();
    for slot in 0..vol.header.max_hosts {
        let addr = vol.heartbeat_slot_addr(slot);
        let img = read_sector(dev, addr)?;
        let s = HeartbeatSlot::decode(&img, addr)?;
        if !matches!(s.state, SlotState::Live | SlotState::Recovering) {
            continue;
        }
        let loc = JournalLocation {
            addr: s.journal_addr,
            size: s.journal_len,
            slot,
            volume_uuid: vol.header.uuid,
        };
        let report = replay(dev, loc)?;
        let mut free = s.clone();
        free.state = SlotState::Free;
        free.hb_gen += 1;
        free.recoverer = None;
        free.write_nonce = nonce();
        let new: [u8; SECTOR] = free.encode();
        match cas_sector(dev, addr, &img, &new)? {
            SectorCas::Won => {}
            SectorCas::Lost(_) => {
                return Err(ClusterError::LockState {
                    addr,
                    why: format!(
                        "heartbeat slot {slot} changed during offline recovery: a host is using the volume"
                    ),
                })
            }
        }
        tracing::info!(
            slot,
            hb_gen = s.hb_gen,
            records = report.records,
            "recovered slot offline"
        );
        out.push(RecoveredSlot {
            slot,
            hb_gen: s.hb_gen,
            replay: report,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[path = "offline_tests.rs"]
mod tests;

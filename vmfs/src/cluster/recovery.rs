//! Recovering a dead host's slot: (persistent-reservation fence) → CAS its
//! slot to RECOVERING naming us → replay its journal → CAS the slot FREE
//! with a new generation. After that every lock naming the old generation
//! is stale and is broken by compare-and-write from the exact image read.

use crate::format::{HeartbeatSlot, Holder, SlotState, SECTOR};

use super::host::{HostEvent, Shared};
use super::sector_cas::{cas_sector, nonce, SectorCas};
use super::{ClusterError, HostDev};

/// Recover `slot`, last read as `s` (image `img`): LIVE and silent for D,
/// or RECOVERING by a recoverer that is itself gone. Returns false if the
/// slot changed under us (someone else is handling it, or it beat).
pub(crate) fn recover(
    sh: &std::sync::Arc<Shared>,
    slot: u32,
    s: &HeartbeatSlot,
    img: &[u8; SECTOR],
) -> Result<bool, ClusterError> {
    sh.io_allowed()?;
    if let Some(f) = &sh.fencer {
        f.preempt(Holder {
            slot: slot as u16,
            hb_gen: s.hb_gen,
        })?;
        // Taking over a recovery whose recoverer is dead: its replay writes
        // must not land either.
        if let Some(r) = s.recoverer.filter(|r| u32::from(r.slot) != slot) {
            f.preempt(r)?;
        }
    }
    let mut rec = s.clone();
    rec.state = SlotState::Recovering;
    rec.hb_gen += 1;
    rec.recoverer = Some(sh.me);
    rec.write_nonce = nonce();
    let rec_img = rec.encode();
    let dev = HostDev::new(sh.clone());
    match cas_sector(&dev, s.addr, img, &rec_img)? {
        SectorCas::Won => {}
        SectorCas::Lost(_) => return Ok(false),
    }
    tracing::warn!(slot, hb_gen = s.hb_gen, host = %s.host_name, "host declared dead; replaying its journal");
    let report = super::journal::replay(&dev, sh.journal_location(slot, s))?;
    let mut free = rec.clone();
    free.state = SlotState::Free;
    free.hb_gen += 1;
    free.recoverer = None;
    free.write_nonce = nonce();
    match cas_sector(&dev, s.addr, &rec_img, &free.encode())? {
        SectorCas::Won => {}
        SectorCas::Lost(_) => {
            return Err(ClusterError::LockState {
                addr: s.addr,
                why: "heartbeat slot changed while we were recovering it".into(),
            })
        }
    }
    tracing::warn!(slot, records = report.records, "recovered dead host's slot");
    sh.emit(HostEvent::Recovered {
        slot,
        records: report.records,
    });
    Ok(true)
}

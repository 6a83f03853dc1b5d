//! One beat: compare-and-write our slot with counter + 1, then read the
//! whole heartbeat region once to keep the liveness observer current. So a
//! beat costs one slot write and one region read, however many locks the
//! host holds (locks are never renewed one by one).

use std::sync::MutexGuard;

use super::host::{lock, read_region, HbState, Shared};
use super::sector_cas::{cas_sector, nonce, SectorCas};
use super::ClusterError;
use crate::format::{HeartbeatSlot, SlotState};

pub(crate) fn beat(sh: &Shared) -> Result<(), ClusterError> {
    sh.io_allowed()?;
    {
        let hb = lock(&sh.hb);
        let next = hb.slot.clone();
        write_slot(sh, hb, next)?;
    }
    let min_dead = sh.min_dead();
    let issued = sh.clock.now();
    let slots = read_region(&sh.vol)?;
    let completed = sh.clock.now();
    let mut obs = lock(&sh.observer);
    let mut wanted = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        if let Ok(s) = s {
            obs.observe(i as u32, s, issued, completed, min_dead);
            if i as u32 != sh.slot && s.state == SlotState::Live && s.wanted_lock != 0 {
                wanted.push(s.wanted_lock);
            }
        }
    }
    drop(obs);
    *lock(&sh.wanted_by_others) = wanted;
    Ok(())
}

/// Say in our heartbeat slot that we are waiting for the lock record at
/// `addr`: written at once (one compare-and-write of our slot, counting as
/// a beat) so holders see it at their next region read.
pub(crate) fn set_wanted(sh: &Shared, addr: u64) -> Result<(), ClusterError> {
    sh.io_allowed()?;
    let hb = lock(&sh.hb);
    if hb.slot.wanted_lock == addr {
        return Ok(());
    }
    let mut next = hb.slot.clone();
    next.wanted_lock = addr;
    write_slot(sh, hb, next)
}

/// Compare-and-write our slot from the image we last wrote to `next`, as a
/// beat (counter + 1, fresh nonce). Losing means someone else wrote our
/// slot: we were declared dead, and fence.
fn write_slot(
    sh: &Shared,
    mut hb: MutexGuard<'_, HbState>,
    mut next: HeartbeatSlot,
) -> Result<(), ClusterError> {
    next.counter += 1;
    next.write_nonce = nonce();
    let img = next.encode();
    let issue = sh.clock.now();
    match cas_sector(sh.raw.as_ref(), sh.slot_addr, &hb.image, &img)? {
        SectorCas::Won => {
            hb.image = img;
            hb.slot = next;
            sh.set_last_landed(issue);
            Ok(())
        }
        SectorCas::Lost(_) => {
            drop(hb);
            sh.fence("heartbeat slot was overwritten by another host (declared dead)");
            Err(ClusterError::Fenced("declared dead by another host".into()))
        }
    }
}

/// We no longer wait for `addr` (unless another thread of ours has
/// announced another lock since): cleared in memory, the next beat
/// carries it.
pub(crate) fn clear_wanted(sh: &Shared, addr: u64) {
    let mut hb = lock(&sh.hb);
    if hb.slot.wanted_lock == addr {
        hb.slot.wanted_lock = 0;
    }
}

//! Phase 3: journals. Any journal of a slot that is not live and still
//! holds committed transactions is replayed (repair) or reported.

use vmfs::cluster::journal::{pending, replay};
use vmfs::cluster::JournalLocation;
use vmfs::format::SECTOR;

use crate::{Code, FsckError, Run};

pub fn check(run: &mut Run) -> Result<(), FsckError> {
    let h = run.vol.header.clone();
    for slot in 0..h.max_hosts {
        if run.live_slots.contains(&slot) {
            continue;
        }
        run.progress.step(u64::from(slot), u64::from(h.max_hosts));
        let loc = JournalLocation {
            addr: run.vol.journal_addr(slot),
            size: h.journal_size,
            slot,
            volume_uuid: h.uuid,
        };
        match pending(run.disk.dev.as_ref(), loc) {
            Ok(r) if r.records == 0 => {}
            Ok(r) => {
                let what = format!(
                    "journal of slot {slot}: {} transactions not replayed ({} blocks still current)",
                    r.records, r.blocks_applied
                );
                let fixed = run.disk.repair && {
                    replay(run.disk.dev.as_ref(), loc)?;
                    true
                };
                run.out.report(Code::Jrnl001, what, fixed);
            }
            Err(e) => {
                let what = format!("journal of slot {slot}: {e}");
                let fixed = run.disk.repair && {
                    run.disk.zero(loc.addr, 2 * SECTOR as u64)?;
                    run.disk.flush()?;
                    true
                };
                run.out.report(Code::Jrnl002, what, fixed);
            }
        }
    }
    Ok(())
}

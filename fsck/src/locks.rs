//! Phase 2b (after the journals are replayed and dead slots freed): lock
//! records of every cluster and of every allocated inode. Damaged records,
//! holders that are gone (their slot's generation moved on, or the slot is
//! dead), holders naming slots the volume lacks, wrong resource fields.

use vmfs::format::block::get_u64;
use vmfs::format::cluster::ClusterHeader;
use vmfs::format::header::META_BLOCK;
use vmfs::format::{HeartbeatSlot, Holder, LockMode, LockRecord, ResourceKind, SlotState, SECTOR};
use vmfs::volume::cluster_lock_resource;

use crate::{Code, FsckError, Run};

/// Every lock record to check: (address, resource it protects).
fn lock_records(run: &Run) -> Result<Vec<(u64, u64)>, FsckError> {
    let mut out = Vec::new();
    for kind in ResourceKind::ALL {
        for c in 0..run.vol.header.region(kind).clusters {
            out.push((
                run.vol.cluster_lock_addr(kind, c),
                cluster_lock_resource(kind, c),
            ));
        }
    }
    let kind = ResourceKind::Inode;
    for c in 0..run.vol.header.region(kind).clusters {
        let addr = run.vol.cluster_header_addr(kind, c);
        let b = run.disk.read(addr, META_BLOCK as usize - SECTOR)?;
        let Ok(h) = ClusterHeader::decode(&b, addr) else {
            continue;
        };
        let count = run.vol.header.region(kind).count;
        for i in 0..h.resource_count {
            let r = h.first_resource + u64::from(i);
            if h.is_set(i) && r != 0 && r < count {
                out.push((run.vol.inode_addr(r), r));
            }
        }
    }
    Ok(out)
}

/// A record to rewrite: address, image read, new record, its problems.
type Fix = (u64, Vec<u8>, LockRecord, Vec<(Code, String)>);

pub fn check(run: &mut Run) -> Result<(), FsckError> {
    let n = run.vol.header.max_hosts;
    let region = run
        .disk
        .read(run.vol.header.heartbeat_offset, n as usize * SECTOR)?;
    let slots: Vec<Option<HeartbeatSlot>> = (0..n as usize)
        .map(|i| {
            HeartbeatSlot::decode(
                &region[i * SECTOR..(i + 1) * SECTOR],
                run.vol.heartbeat_slot_addr(i as u32),
            )
            .ok()
        })
        .collect();
    let alive = |h: &Holder| -> bool {
        let Some(Some(s)) = slots.get(usize::from(h.slot)) else {
            return false;
        };
        matches!(s.state, SlotState::Live | SlotState::Recovering)
            && s.hb_gen == h.hb_gen
            && !run.dead_slots.contains(&u32::from(h.slot))
    };
    let records = lock_records(run)?;
    let total = records.len() as u64;
    let mut fixes: Vec<Fix> = Vec::new();
    for (k, (addr, resource)) in records.into_iter().enumerate() {
        if k % 1024 == 0 {
            run.progress.step(k as u64, total);
        }
        let img = run.disk.read(addr, SECTOR)?;
        let rec = match LockRecord::decode(&img, addr) {
            Ok(r) => r,
            Err(e) => {
                let mut new = LockRecord::free(addr, resource);
                new.lock_gen = get_u64(&img, 16).saturating_add(1).max(1);
                let what = format!("lock record at {addr} (resource {resource:#x}): {e}");
                fixes.push((addr, img, new, vec![(Code::Lock001, what)]));
                continue;
            }
        };
        let mut new = rec.clone();
        let mut problems = Vec::new();
        if rec.resource != resource {
            problems.push((
                Code::Lock004,
                format!(
                    "lock record at {addr}: resource {:#x}, it protects {resource:#x}",
                    rec.resource
                ),
            ));
            new.resource = resource;
        }
        // Holders of live slots are kept whatever fsck thinks of them.
        let keep = |h: &Holder| alive(h) || run.live_slots.contains(&u32::from(h.slot));
        for h in &rec.holders {
            if u32::from(h.slot) >= n {
                problems.push((
                    Code::Lock003,
                    format!(
                        "lock record at {addr}: holder slot {} of a {n}-slot volume",
                        h.slot
                    ),
                ));
            } else if !keep(h) {
                problems.push((
                    Code::Lock002,
                    format!(
                        "lock record at {addr} (resource {resource:#x}): held by slot {} generation {}, which is gone",
                        h.slot, h.hb_gen
                    ),
                ));
            }
        }
        new.holders.retain(|h| u32::from(h.slot) < n && keep(h));
        if new.transfer_to.is_some_and(|t| !keep(&t)) {
            new.transfer_to = None;
        }
        if new.holders.is_empty() || (new.mode == LockMode::Exclusive && new.holders.len() != 1) {
            new.mode = LockMode::Free;
            new.holders.clear();
            new.transfer_to = None;
        }
        if !problems.is_empty() {
            new.lock_gen = rec.lock_gen.saturating_add(1);
            fixes.push((addr, img, new, problems));
        }
    }
    for (addr, img, mut new, problems) in fixes {
        let fixed = run.disk.repair && {
            new.write_nonce = rand::random();
            run.disk.cas_sector(addr, &img, &new.encode())?
        };
        for (c, w) in problems {
            run.out.report(c, w, fixed);
        }
    }
    Ok(())
}

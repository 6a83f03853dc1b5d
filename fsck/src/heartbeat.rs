//! Phase 2a: the heartbeat region. Damaged slots, slots that name another
//! journal, LIVE/RECOVERING slots whose host is not beating (judged from two
//! samples of the region 2 × H apart), one identity live in two slots. A
//! live host stops a repair unless `--force`.

use std::time::Duration;

use vmfs::format::block::get_u64;
use vmfs::format::{HeartbeatSlot, SlotState, SECTOR};

use crate::{Code, FsckError, Run};

/// One slot as read, and the problems it has (code, text).
pub struct SlotView {
    pub img: Vec<u8>,
    pub slot: Option<HeartbeatSlot>,
    pub problems: Vec<(Code, String)>,
}

fn read_region(run: &Run) -> Result<Vec<u8>, FsckError> {
    let h = &run.vol.header;
    run.disk
        .read(h.heartbeat_offset, h.max_hosts as usize * SECTOR)
}

fn busy(s: &Option<HeartbeatSlot>) -> bool {
    matches!(s, Some(s) if matches!(s.state, SlotState::Live | SlotState::Recovering))
}

pub fn check(run: &mut Run) -> Result<Vec<SlotView>, FsckError> {
    let n = run.vol.header.max_hosts as usize;
    let first = read_region(run)?;
    let mut views: Vec<SlotView> = (0..n)
        .map(|i| {
            let img = first[i * SECTOR..(i + 1) * SECTOR].to_vec();
            let addr = run.vol.heartbeat_slot_addr(i as u32);
            let (slot, problems) = match HeartbeatSlot::decode(&img, addr) {
                Ok(s) => (Some(s), Vec::new()),
                Err(e) => (None, vec![(Code::Slot001, format!("slot {i}: {e}"))]),
            };
            SlotView {
                img,
                slot,
                problems,
            }
        })
        .collect();
    let watched: Vec<usize> = (0..n).filter(|&i| busy(&views[i].slot)).collect();
    if !watched.is_empty() {
        let h_ms = watched
            .iter()
            .filter_map(|&i| views[i].slot.as_ref().map(|s| s.interval_ms))
            .chain([run.vol.header.timeouts.heartbeat_ms])
            .max()
            .unwrap_or(0);
        let cap = run.opts.sample_cap.unwrap_or(Duration::from_secs(60));
        let wait = (Duration::from_millis(u64::from(h_ms)) * 2).min(cap);
        run.out.notes.push(format!(
            "slots {watched:?} are LIVE or RECOVERING: sampled the heartbeat region twice, {} ms apart",
            wait.as_millis()
        ));
        std::thread::sleep(wait);
    }
    // Second sample of the whole region: any slot that changed is in use.
    let second = if watched.is_empty() {
        first.clone()
    } else {
        read_region(run)?
    };
    for (i, v) in views.iter().enumerate() {
        if second[i * SECTOR..(i + 1) * SECTOR] != v.img[..] {
            run.live_slots.push(i as u32);
        }
    }
    let layout_len = run.vol.header.journal_size;
    for (i, v) in views.iter_mut().enumerate() {
        let Some(s) = &v.slot else { continue };
        let (ja, jl) = (run.vol.journal_addr(i as u32), layout_len);
        if s.journal_addr != ja || s.journal_len != jl {
            v.problems.push((
                Code::Slot002,
                format!(
                    "slot {i}: journal at {} ({} bytes), the layout says {ja} ({jl} bytes)",
                    s.journal_addr, s.journal_len
                ),
            ));
        }
        if busy(&v.slot) && !run.live_slots.contains(&(i as u32)) {
            run.dead_slots.push(i as u32);
            v.problems.push((
                Code::Slot003,
                format!(
                    "slot {i}: {:?} for host '{}' (hb_gen {}) but not beating",
                    s.state, s.host_name, s.hb_gen
                ),
            ));
        }
    }
    for i in 0..n {
        let Some(s) = views[i].slot.clone() else {
            continue;
        };
        if !busy(&views[i].slot) || s.host_uuid == [0; 16] {
            continue;
        }
        let twins: Vec<usize> = (0..n)
            .filter(|&j| {
                j != i
                    && busy(&views[j].slot)
                    && views[j].slot.as_ref().map(|t| t.host_uuid) == Some(s.host_uuid)
            })
            .collect();
        if !twins.is_empty() {
            views[i].problems.push((
                Code::Slot004,
                format!("slot {i}: host identity also live in slots {twins:?}"),
            ));
        }
    }
    for v in &views {
        for (c, w) in &v.problems {
            run.out.report(*c, w.clone(), false);
        }
    }
    if !run.live_slots.is_empty() {
        let live = format!(
            "hosts are live in slots {:?} (their heartbeats moved while fsck watched)",
            run.live_slots
        );
        if run.opts.repair && !run.opts.force {
            return Err(FsckError::Refused(format!(
                "{live}: refusing to repair a volume in use; stop them or use --force"
            )));
        }
        run.out.notes.push(format!(
            "{live}: their slots and locks are left alone and results may be stale"
        ));
    }
    Ok(views)
}

/// Write the repaired slots (after the journals were replayed).
pub fn repair(run: &mut Run, views: &[SlotView]) -> Result<(), FsckError> {
    if !run.disk.repair {
        return Ok(());
    }
    for (i, v) in views.iter().enumerate() {
        if v.problems.is_empty() || run.live_slots.contains(&(i as u32)) {
            continue;
        }
        let addr = run.vol.heartbeat_slot_addr(i as u32);
        let (ja, jl) = (run.vol.journal_addr(i as u32), run.vol.header.journal_size);
        let new = match &v.slot {
            None => {
                let mut s = HeartbeatSlot::free(addr, ja, jl);
                s.hb_gen = get_u64(&v.img, 24).saturating_add(1).max(1);
                s.write_nonce = rand::random();
                s
            }
            Some(old) => {
                let mut s = old.clone();
                s.journal_addr = ja;
                s.journal_len = jl;
                if busy(&v.slot) {
                    s.state = SlotState::Free;
                    s.recoverer = None;
                }
                s.hb_gen = s.hb_gen.saturating_add(1);
                s.write_nonce = rand::random();
                s
            }
        };
        if run.disk.cas_sector(addr, &v.img, &new.encode())? {
            for (c, w) in &v.problems {
                run.out.mark_fixed(*c, w);
            }
        }
    }
    run.disk.flush()
}

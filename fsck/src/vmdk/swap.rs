//! Stale swap files: a VM's `.vswp` is created fully allocated and held
//! EXCLUSIVE by the host running the VM for as long as it runs, so one
//! whose inode lock no live host holds belongs to a VM that is gone and
//! only wastes space. Reclaiming it = deleting it, in crash-safe order:
//! 1. its directory is rebuilt without the name (a crash here leaves an
//!    orphan, which the next fsck links into /lost+found);
//! 2. the inode's bit is cleared (a crash here leaves leaked blocks);
//! 3. the bits of its data and pointer blocks are cleared.

use std::collections::{BTreeMap, HashMap};

use vmfs::format::{HeartbeatSlot, Holder, Inode, LockRecord, ResourceKind, SlotState, SECTOR};
use vmfs::fs::check::Model;

use crate::vmdk::files::Paths;
use crate::{alloc, dirs, Code, FsckError, Run};

/// A stale swap file to delete: its problem text, inode and name.
type Doomed<'a> = (String, &'a Inode, Vec<u8>);

/// Holders whose host incarnation is alive (as phase 2b judges them).
fn alive_fn(run: &Run) -> Result<impl Fn(&Holder) -> bool, FsckError> {
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
    let dead = run.dead_slots.clone();
    Ok(move |h: &Holder| {
        let Some(Some(s)) = slots.get(usize::from(h.slot)) else {
            return false;
        };
        matches!(s.state, SlotState::Live | SlotState::Recovering)
            && s.hb_gen == h.hb_gen
            && !dead.contains(&u32::from(h.slot))
    })
}

pub fn check(run: &mut Run, paths: &Paths, model: &Model) -> Result<(), FsckError> {
    let mut swaps: Vec<(&String, &Inode)> = paths
        .files
        .iter()
        .filter(|(p, i)| p.ends_with(".vswp") && i.mode & libc::S_IFMT == libc::S_IFREG)
        .collect();
    if swaps.is_empty() {
        return Ok(());
    }
    swaps.sort_by(|a, b| a.0.cmp(b.0));
    let alive = alive_fn(run)?;
    let mut stale: Vec<(&String, String, &Inode)> = Vec::new();
    for (path, i) in swaps {
        let addr = run.vol.inode_addr(i.ino);
        let Ok(rec) = LockRecord::decode(&run.disk.read(addr, SECTOR)?, addr) else {
            continue; // a damaged record is LOCK001's
        };
        if rec.holders.iter().any(&alive) {
            continue;
        }
        let why = if rec.holders.is_empty() {
            "its lock is free".to_string()
        } else {
            let s: Vec<u16> = rec.holders.iter().map(|h| h.slot).collect();
            format!("its lock is held by heartbeat slots {s:?}, whose hosts are dead or gone")
        };
        stale.push((
            path,
            format!("/{path}: swap file not held by any live host ({why})"),
            i,
        ));
    }
    if stale.is_empty() {
        return Ok(());
    }
    let can_delete = run.disk.repair && run.live_slots.is_empty();
    if run.disk.repair && !can_delete {
        run.out.notes.push(
            "stale swap files are not deleted while another host is live (it may be starting the VM)"
                .into(),
        );
    }
    // Group by directory: one rebuild per directory.
    let mut by_dir: BTreeMap<u64, Vec<Doomed>> = BTreeMap::new();
    for (path, what, i) in stale {
        match paths.names.get(path) {
            Some((dir, name)) if can_delete && i.nlink == 1 => by_dir
                .entry(*dir)
                .or_default()
                .push((what, i, name.clone())),
            _ => run.out.report(Code::Vswp001, what, false),
        }
    }
    let mut owned: HashMap<u64, Vec<(ResourceKind, u64)>> = HashMap::new();
    if !by_dir.is_empty() {
        let doomed: Vec<u64> = by_dir.values().flatten().map(|(_, i, _)| i.ino).collect();
        for ((code, r), owners) in &model.refs {
            let kind = ResourceKind::from_code(*code);
            if let (Some(kind), [o]) = (kind, owners.as_slice()) {
                if kind != ResourceKind::Inode && doomed.contains(&o.ino) {
                    owned.entry(o.ino).or_default().push((kind, *r));
                }
            }
        }
    }
    for (dir, files) in by_dir {
        let ok = remove_names(run, model, dir, &files)?;
        for (what, i, _) in files {
            let fixed = ok && free_inode(run, i, owned.remove(&i.ino).unwrap_or_default())?;
            run.out.report(Code::Vswp001, what, fixed);
        }
    }
    Ok(())
}

/// Step 1: rebuild directory `dir` without the names of `files`.
fn remove_names(run: &Run, model: &Model, dir: u64, files: &[Doomed]) -> Result<bool, FsckError> {
    let (Some(inode), Some(blocks)) = (model.inodes.get(&dir), model.dir_blocks.get(&dir)) else {
        return Ok(false);
    };
    let s = dirs::salvage(run.disk, &run.vol, blocks)?;
    let entries = s
        .entries
        .into_iter()
        .filter(|e| !files.iter().any(|(_, _, n)| *n == e.name))
        .collect();
    let seed = s.seed.unwrap_or_else(rand::random);
    match dirs::rebuild(run.disk, &run.vol, inode, blocks, seed, entries) {
        Ok(_) => {}
        Err(FsckError::Refused(_)) => return Ok(false),
        Err(e) => return Err(e),
    }
    run.disk.flush()?;
    Ok(true)
}

/// Steps 2 and 3: free the inode, then its blocks.
fn free_inode(run: &Run, i: &Inode, blocks: Vec<(ResourceKind, u64)>) -> Result<bool, FsckError> {
    let mut ok = alloc::set_bit(run.disk, &run.vol, ResourceKind::Inode, i.ino, false)?;
    run.disk.flush()?;
    for (kind, r) in blocks {
        ok &= alloc::set_bit(run.disk, &run.vol, kind, r, false)?;
    }
    run.disk.flush()?;
    Ok(ok)
}

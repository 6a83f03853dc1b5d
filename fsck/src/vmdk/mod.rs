//! Phase 7: VMDK disks and swap files, read through the VMDK library over
//! the unmounted volume ([`files::VolumeFiles`]). Every `*.vmdk` that is a
//! descriptor must parse; its extents must exist and be as large as the
//! descriptor says (flat) or sane (COWD deltas: header, grain directory,
//! grain tables); snapshot parents must exist and carry the `parentCID` the
//! child expects. `.vswp` files no live host holds are stale.

mod cowd;
pub mod files;
mod swap;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use vmfs::format::inode::{DIRECT, FLAG_INLINE};
use vmfs::format::pointer::entries_per_block;
use vmfs::format::ResourceKind;
use vmfs::fs::check::Model;
use vmfs::vmdk::descriptor::{Access, ExtentKind, ExtentLine};
use vmfs::vmdk::layer::{read_descriptor, resolve};
use vmfs::vmdk::store::MAX_DESCRIPTOR_BYTES;
use vmfs::vmdk::{Descriptor, VmdkError};

use crate::{Code, FsckError, Run};
use files::{Paths, VolumeFiles};

/// Most disks followed up one chain (as `DiskChain`).
const MAX_CHAIN: usize = 256;

/// Names ESX gives extent files (never descriptors).
const EXTENT_SUFFIXES: [&str; 6] = [
    "-flat.vmdk",
    "-delta.vmdk",
    "-sesparse.vmdk",
    "-rdm.vmdk",
    "-rdmp.vmdk",
    "-ctk.vmdk",
];

/// ESX names files of other datastores `/vmfs/volumes/DATASTORE/…`: not
/// on this volume, so not checkable here.
fn foreign(name: &str) -> bool {
    name.starts_with("/vmfs/volumes/")
}

/// Store names are paths without the leading `/`.
fn key(name: &str) -> String {
    name.trim_start_matches('/').to_string()
}

fn line_text(l: &ExtentLine) -> String {
    format!("{} {} {}", l.access.word(), l.sectors, l.kind.word())
}

pub(crate) fn check(run: &mut Run, model: &Model) -> Result<(), FsckError> {
    let paths = Arc::new(Paths::of(model, run.vol.header.root_ino));
    let store = VolumeFiles::new(run.vol.clone(), paths.clone());
    let mut candidates: Vec<&String> = paths
        .files
        .iter()
        .filter(|(p, i)| {
            p.ends_with(".vmdk")
                && !EXTENT_SUFFIXES.iter().any(|s| p.ends_with(s))
                && i.size <= MAX_DESCRIPTOR_BYTES
        })
        .map(|(p, _)| p)
        .collect();
    candidates.sort();
    let mut good: BTreeMap<String, Descriptor> = BTreeMap::new();
    let mut bad: Vec<(String, String)> = Vec::new();
    let total = candidates.len() as u64;
    for (k, p) in candidates.into_iter().enumerate() {
        if k % 256 == 0 {
            run.progress.step(k as u64, total);
        }
        match read_descriptor(&store, p) {
            Ok(d) => {
                good.insert(p.clone(), d);
            }
            // A sparse extent (COWD or hosted KDMV) under a descriptor's name.
            Err(VmdkError::Unsupported { .. }) => {}
            Err(e @ VmdkError::Io { .. }) => run.out.notes.push(format!("/{e}")),
            Err(e) => bad.push((p.clone(), e.to_string())),
        }
    }
    let named: HashSet<String> = good
        .iter()
        .flat_map(|(p, d)| {
            d.extents
                .iter()
                .filter_map(move |l| l.file.as_deref().map(|f| key(&resolve(p, f))))
        })
        .collect();
    for (p, why) in bad {
        // A small flat extent named by a good descriptor is not a descriptor.
        if !named.contains(&p) {
            run.out.report(Code::Vmdk001, format!("/{why}"), false);
        }
    }
    let mut extended = BTreeSet::new();
    for (p, d) in &good {
        for line in &d.extents {
            extent(run, &store, p, line, &mut extended)?;
        }
        chain(run, &store, &good, p, d);
    }
    swap::check(run, &paths, model)?;
    let mut advised = BTreeSet::new();
    let unfixable: Vec<Code> = run
        .out
        .problems
        .iter()
        .map(|p| p.code)
        .filter(|c| c.phase() == 7 && !c.repairable())
        .collect();
    for c in unfixable {
        if advised.insert(c) {
            run.out
                .notes
                .push(format!("{c} is not repaired by fsck: {}", c.repair()));
        }
    }
    Ok(())
}

/// One extent line of descriptor `p`.
fn extent(
    run: &mut Run,
    store: &VolumeFiles,
    p: &str,
    line: &ExtentLine,
    extended: &mut BTreeSet<String>,
) -> Result<(), FsckError> {
    let Some(f) = line.file.as_deref() else {
        return Ok(()); // ZERO extent
    };
    if line.access == Access::NoAccess {
        return Ok(());
    }
    if foreign(f) {
        run.out.notes.push(format!(
            "/{p}: extent {f} is on another datastore, not checked"
        ));
        return Ok(());
    }
    let name = key(&resolve(p, f));
    let Some(inode) = store.inode(&name).cloned() else {
        run.out.report(
            Code::Vmdk002,
            format!("/{p}: extent /{name} ({}) does not exist", line_text(line)),
            false,
        );
        return Ok(());
    };
    match line.kind {
        ExtentKind::Flat | ExtentKind::Vmfs => {
            let need = line
                .offset
                .unwrap_or(0)
                .saturating_add(line.sectors)
                .saturating_mul(512);
            if inode.size >= need || !extended.insert(name.clone()) {
                return Ok(());
            }
            let what = format!(
                "/{p}: flat extent /{name} is {} bytes, the descriptor needs {need}",
                inode.size
            );
            let fixed = may_write(run) && extend(run, &inode, need)?;
            run.out.report(Code::Vmdk003, what, fixed);
        }
        ExtentKind::Sparse | ExtentKind::VmfsSparse => {
            let found = cowd::check(store, &name, line.sectors);
            if let Some(why) = found.header {
                run.out.report(Code::Vmdk004, format!("/{why}"), false);
            }
            if let Some((_, first)) = found.entries.first() {
                let what = format!(
                    "/{first}{}",
                    match found.entries.len() {
                        1 => String::new(),
                        n => format!(" (and {} more bad grain-table entries)", n - 1),
                    }
                );
                let fixed = may_write(run) && clear_entries(run, store, &name, &found.entries)?;
                run.out.report(Code::Vmdk005, what, fixed);
            }
        }
        other => run
            .out
            .notes
            .push(format!("/{p}: {} extent /{name} not checked", other.word())),
    }
    Ok(())
}

/// Disk files are repaired only on a quiet volume: with `--force` a live
/// host may have the disk open.
fn may_write(run: &mut Run) -> bool {
    if !run.disk.repair {
        return false;
    }
    if !run.live_slots.is_empty() {
        let note =
            "VMDK files are not repaired while another host is live (it may have the disk open)";
        if !run.out.notes.iter().any(|n| n == note) {
            run.out.notes.push(note.into());
        }
        return false;
    }
    true
}

/// VMDK003: grow the flat file to `need` bytes (the tail is a hole: zeros).
fn extend(run: &Run, inode: &vmfs::format::Inode, need: u64) -> Result<bool, FsckError> {
    let bs = u64::from(run.vol.header.region(ResourceKind::FileBlock).resource_size);
    let e = entries_per_block(
        run.vol
            .header
            .region(ResourceKind::PointerBlock)
            .resource_size,
    );
    let max_blocks = DIRECT as u64 + e + e * e;
    if inode.flags & FLAG_INLINE != 0 || need.div_ceil(bs) > max_blocks {
        return Ok(false);
    }
    let mut i = inode.clone();
    i.size = need;
    run.disk.write(i.addr, &i.encode())?;
    run.disk.flush()?;
    Ok(true)
}

/// VMDK005: zero the bad grain-table entries in place.
fn clear_entries(
    run: &Run,
    store: &VolumeFiles,
    name: &str,
    entries: &[(u64, String)],
) -> Result<bool, FsckError> {
    let mut all = true;
    for (pos, _) in entries {
        let at = match store.device_offset(name, *pos) {
            Ok(Some(a)) => a,
            _ => {
                all = false;
                continue;
            }
        };
        let sector = at / 512 * 512;
        let mut b = run.disk.read(sector, 512)?;
        let o = (at - sector) as usize;
        b[o..o + 4].fill(0);
        run.disk.write(sector, &b)?;
    }
    run.disk.flush()?;
    Ok(all)
}

/// Parent of descriptor `p` (a snapshot): exists, no loop, CIDs match.
fn chain(
    run: &mut Run,
    store: &VolumeFiles,
    good: &BTreeMap<String, Descriptor>,
    p: &str,
    d: &Descriptor,
) {
    let Some(hint) = &d.parent_file_name_hint else {
        return;
    };
    if foreign(hint) {
        run.out.notes.push(format!(
            "/{p}: parent {hint} is on another datastore, not checked"
        ));
        return;
    }
    let parent = key(&resolve(p, hint));
    if store.inode(&parent).is_none() {
        run.out.report(
            Code::Vmdk006,
            format!("/{p}: parent /{parent} (parentFileNameHint) does not exist"),
            false,
        );
        return;
    }
    // Follow the chain up: a loop never reaches a base.
    let mut seen = HashSet::from([p.to_string()]);
    let mut at = parent.clone();
    for _ in 0..MAX_CHAIN {
        if !seen.insert(at.clone()) {
            run.out.report(
                Code::Vmdk006,
                format!("/{p}: parent chain loops back to /{at}"),
                false,
            );
            return;
        }
        match good
            .get(&at)
            .and_then(|d| d.parent_file_name_hint.as_deref())
        {
            Some(h) => at = key(&resolve(&at, h)),
            None => break,
        }
    }
    if let Some(pd) = good.get(&parent) {
        if pd.cid != d.parent_cid {
            run.out.report(
                Code::Vmdk007,
                format!(
                    "/{p}: parentCID {:08x} but its parent /{parent} has CID {:08x} (the parent was written after the snapshot)",
                    d.parent_cid, pd.cid
                ),
                false,
            );
        }
    }
}

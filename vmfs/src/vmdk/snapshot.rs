//! Snapshot operations over a chain: take a snapshot (new COWD delta over
//! the current top), consolidate a delta into its parent, revert the top
//! delta to the state of the snapshot.

use super::chain::{read_layers, DiskChain};
use super::cowd::CowdExtent;
use super::descriptor::ddb::{new_cid, new_long_content_id};
use super::descriptor::{Access, CreateType, Descriptor, ExtentKind, ExtentLine, HeaderEntry};
use super::error::{FileOp, Result, VmdkError};
use super::flat::{refuse_existing, split_name};
use super::layer::{write_descriptor, ExtentData, Layer};
use super::store::ExtentStore;
use std::sync::Arc;

/// Default grain of new deltas: 8 sectors (4 KiB), the guest page size, so
/// aligned 4 KiB writes never copy from the parent.
pub const DEFAULT_GRAIN_SECTORS: u32 = 8;

/// ddb keys a delta inherits from its parent.
const INHERITED_DDB: [&str; 6] = [
    "ddb.adapterType",
    "ddb.geometry.cylinders",
    "ddb.geometry.heads",
    "ddb.geometry.sectors",
    "ddb.uuid",
    "ddb.virtualHWVersion",
];

/// `parentFileNameHint` for `parent` as seen from descriptor `child`.
fn hint_for(child: &str, parent: &str) -> Result<String> {
    if parent.starts_with('/') {
        return Ok(parent.to_string());
    }
    let dir = |n: &str| n.rfind('/').map(|i| n[..i].to_string()).unwrap_or_default();
    if dir(child) != dir(parent) {
        return Err(VmdkError::invalid(
            child,
            format!("parent {parent} must be in the same directory or given as an absolute path"),
        ));
    }
    Ok(parent.rsplit('/').next().unwrap_or(parent).to_string())
}

/// Take a snapshot of disk `parent` (the current top of its chain): create
/// descriptor `name` (`createType="vmfsSparse"`) and its empty COWD extent
/// `NAME-delta.vmdk`. From now on `parent` must not be written; open
/// `name` to use the disk.
pub fn create_snapshot(
    store: &dyn ExtentStore,
    parent: &str,
    name: &str,
    grain_sectors: u32,
) -> Result<Descriptor> {
    let (stem, base) = split_name(name)?;
    let hint = hint_for(name, parent)?;
    let p = Layer::open(store, parent, false)?;
    let delta_name = format!("{stem}-delta.vmdk");
    refuse_existing(store, name)?;
    refuse_existing(store, &delta_name)?;
    let sectors = p.capacity / 512;
    let io = store
        .create(&delta_name)
        .map_err(|e| VmdkError::io(&delta_name, FileOp::Create, 0, 0, e))?;
    let made = CowdExtent::create(
        &delta_name,
        io,
        sectors,
        grain_sectors,
        p.descriptor.geometry(),
    );
    if let Err(e) = made {
        let _ = store.remove(&delta_name);
        return Err(e);
    }
    let cid = new_cid();
    let mut d = Descriptor::new(
        CreateType::VmfsSparse,
        cid,
        vec![ExtentLine {
            access: Access::ReadWrite,
            sectors,
            kind: ExtentKind::VmfsSparse,
            file: Some(format!("{base}-delta.vmdk")),
            offset: None,
        }],
    );
    d.parent_cid = p.descriptor.cid;
    d.parent_file_name_hint = Some(hint);
    d.extra.push(HeaderEntry {
        key: "isNativeSnapshot".to_string(),
        value: "no".to_string(),
        quoted: true,
    });
    for k in INHERITED_DDB {
        if let Some(v) = p.descriptor.ddb_get(k) {
            d.ddb_set(k, v);
        }
    }
    d.ddb_set("ddb.longContentID", new_long_content_id(cid));
    write_descriptor(store, name, &d)?;
    Ok(d)
}

impl DiskChain {
    /// Merge delta `idx` (1 = first snapshot) into its parent `idx - 1`,
    /// then delete the delta's files. A disk that named the delta as
    /// parent is re-pointed at the parent. Returns the chain reopened at
    /// the same top (or at the parent, if the delta was the top).
    ///
    /// Order: data copied into the parent (whose CID changes), the delta's
    /// parentCID updated, its child re-pointed, its files removed. Each
    /// step leaves a chain that reads the same data; only a crash between
    /// the parent's CID change and the delta's update leaves a CID mismatch.
    pub fn consolidate(self, idx: usize) -> Result<DiskChain> {
        let n = self.layers.len();
        if idx == 0 || idx >= n {
            return Err(VmdkError::invalid(
                &self.top().name,
                format!("layer {idx} is not a delta of this {n}-disk chain"),
            ));
        }
        let store = self.store.clone();
        let writable = self.writable;
        let top_name = self.top().name.clone();
        let child_name = self.layers[idx].name.clone();
        let parent_name = self.layers[idx - 1].name.clone();
        let ranges = self.layer_data_ranges(idx)?;

        let mut below = DiskChain::open(store.clone(), &parent_name, true)?;
        const PIECE: u64 = 1 << 20;
        let mut buf = vec![0u8; PIECE as usize];
        for (start, len) in ranges {
            let mut done = 0;
            while done < len {
                let k = PIECE.min(len - done);
                let b = &mut buf[..k as usize];
                read_layers(&self.layers[..=idx], start + done, b)?;
                below.write_at(start + done, b)?;
                done += k;
            }
        }
        below.flush()?;
        let parent_cid = below.top().descriptor.cid;
        drop(below);

        let mut d = self.layers[idx].descriptor.clone();
        d.parent_cid = parent_cid;
        write_descriptor(&*store, &child_name, &d)?;
        if idx + 1 < n {
            let gc = &self.layers[idx + 1];
            let mut d = gc.descriptor.clone();
            d.parent_file_name_hint = Some(hint_for(&gc.name, &parent_name)?);
            d.parent_cid = parent_cid;
            write_descriptor(&*store, &gc.name, &d)?;
        }
        let files = self.layers[idx].file_names();
        drop(self);
        for f in files.iter().rev() {
            store
                .remove(f)
                .map_err(|e| VmdkError::io(f, FileOp::Remove, 0, 0, e))?;
        }
        let new_top = if idx == n - 1 { parent_name } else { top_name };
        DiskChain::open(store, &new_top, writable)
    }

    /// Discard everything written to the top delta since its snapshot was
    /// taken: its grains are forgotten and it reads as its parent again.
    pub fn revert(&mut self) -> Result<()> {
        if !self.writable {
            return Err(VmdkError::ReadOnly {
                file: self.top().name.clone(),
                op: FileOp::Write,
            });
        }
        let store: Arc<dyn ExtentStore> = self.store.clone();
        let top = self.layers.last_mut().expect("chain has a layer");
        if !top.has_parent() {
            return Err(VmdkError::invalid(
                &top.name,
                "a base disk has no snapshot to revert to",
            ));
        }
        for e in &mut top.extents {
            match &mut e.data {
                ExtentData::Cowd(c) => c.reset()?,
                _ => {
                    return Err(VmdkError::unsupported(
                        &top.name,
                        "reverting a delta with flat or zero extents",
                    ))
                }
            }
        }
        top.descriptor.change_content_id();
        write_descriptor(&*store, &top.name, &top.descriptor)?;
        self.content_id_changed = true;
        Ok(())
    }
}

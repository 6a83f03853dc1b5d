//! A disk and its parents: reads fall through unallocated grains to the
//! parent, down to the base (whose holes read as zeros); writes go to the
//! top disk only, with copy-on-write of partial grains.

use super::descriptor::NO_PARENT_CID;
use super::error::{FileOp, Result, VmdkError};
use super::layer::{resolve, write_descriptor, ExtentData, Layer};
use super::store::ExtentStore;
use std::collections::HashSet;
use std::sync::Arc;

/// Most disks in one chain (ESX allows 32 snapshots).
pub const MAX_CHAIN_DEPTH: usize = 256;

/// An open chain of disks, base first, top last.
pub struct DiskChain {
    pub(super) store: Arc<dyn ExtentStore>,
    pub(super) layers: Vec<Layer>,
    pub(super) writable: bool,
    /// The top's CID was changed for this session's writes.
    pub(super) content_id_changed: bool,
}

impl DiskChain {
    /// Open descriptor `top` and follow `parentFileNameHint` to the base.
    /// Each child's `parentCID` must equal its parent's `CID`, and all
    /// disks must have the same capacity. Only `top` is opened writable.
    pub fn open(store: Arc<dyn ExtentStore>, top: &str, writable: bool) -> Result<Self> {
        let mut layers = vec![Layer::open(&*store, top, writable)?];
        let mut seen: HashSet<String> = HashSet::from([top.to_string()]);
        loop {
            let child = layers.last().expect("chain has a layer");
            let Some(hint) = child.descriptor.parent_file_name_hint.clone() else {
                break;
            };
            let parent_name = resolve(&child.name, &hint);
            if !seen.insert(parent_name.clone()) {
                return Err(VmdkError::BadChain {
                    file: top.to_string(),
                    why: format!("loops back to {parent_name}"),
                });
            }
            if layers.len() >= MAX_CHAIN_DEPTH {
                return Err(VmdkError::BadChain {
                    file: top.to_string(),
                    why: format!("is deeper than {MAX_CHAIN_DEPTH} disks"),
                });
            }
            let parent = Layer::open(&*store, &parent_name, false)?;
            if child.descriptor.parent_cid != parent.descriptor.cid {
                return Err(VmdkError::CidMismatch {
                    child: child.name.clone(),
                    parent: parent.name.clone(),
                    expected: child.descriptor.parent_cid,
                    found: parent.descriptor.cid,
                });
            }
            if child.capacity != parent.capacity {
                return Err(VmdkError::CapacityMismatch {
                    file: child.name.clone(),
                    capacity: child.capacity,
                    parent: parent.name.clone(),
                    parent_capacity: parent.capacity,
                });
            }
            layers.push(parent);
        }
        let base = layers.last().expect("chain has a layer");
        if base.descriptor.parent_cid != NO_PARENT_CID {
            tracing::debug!(
                disk = %base.name,
                parent_cid = base.descriptor.parent_cid,
                "base disk has a parentCID but no parentFileNameHint"
            );
        }
        layers.reverse();
        Ok(DiskChain {
            store,
            layers,
            writable,
            content_id_changed: false,
        })
    }

    /// Disk size in bytes.
    pub fn capacity(&self) -> u64 {
        self.top().capacity
    }

    /// The disks, base first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    pub fn top(&self) -> &Layer {
        self.layers.last().expect("chain has a layer")
    }

    pub fn store(&self) -> &Arc<dyn ExtentStore> {
        &self.store
    }

    /// Read `buf.len()` bytes of the disk at `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(FileOp::Read, offset, buf.len())?;
        read_layers(&self.layers, offset, buf)
    }

    /// Write `data` at `offset` into the top disk. The first write of a
    /// session gives the top disk a new CID (its content changed).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(VmdkError::ReadOnly {
                file: self.top().name.clone(),
                op: FileOp::Write,
            });
        }
        self.check_range(FileOp::Write, offset, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        self.note_content_change()?;
        let last = self.layers.len() - 1;
        let (lower, top) = self.layers.split_at_mut(last);
        write_layer(lower, &mut top[0], offset, data)
    }

    /// Give the top disk a new CID once per session, before its content
    /// first changes.
    pub(super) fn note_content_change(&mut self) -> Result<()> {
        if !self.content_id_changed {
            let top = self.layers.last_mut().expect("chain has a layer");
            top.descriptor.change_content_id();
            write_descriptor(&*self.store, &top.name, &top.descriptor)?;
            self.content_id_changed = true;
        }
        Ok(())
    }

    /// Keep the top's CID for this session (disks several hosts write at
    /// once, MULTI_WRITER, cannot have snapshots and must not race to
    /// rewrite their descriptor).
    pub fn keep_content_id(&mut self) {
        self.content_id_changed = true;
    }

    /// Whether the chain was opened writable.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Make everything written durable.
    pub fn flush(&self) -> Result<()> {
        self.top().sync()
    }

    /// Byte ranges `(offset, len)` of the disk that layer `idx` holds data
    /// for (the rest reads through to its parent). Adjacent ranges merged.
    pub fn layer_data_ranges(&self, idx: usize) -> Result<Vec<(u64, u64)>> {
        let layer = self.layers.get(idx).ok_or_else(|| {
            VmdkError::invalid(&self.top().name, format!("no layer {idx} in the chain"))
        })?;
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut push = |start: u64, len: u64| match out.last_mut() {
            Some((s, l)) if *s + *l == start => *l += len,
            _ => out.push((start, len)),
        };
        for e in &layer.extents {
            match &e.data {
                ExtentData::Flat { .. } | ExtentData::Zero => push(e.start, e.len),
                ExtentData::Cowd(c) => {
                    let gb = c.grain_bytes();
                    for (g, _) in c.allocated_grains()? {
                        let rel = g * gb;
                        push(e.start + rel, gb.min(e.len - rel));
                    }
                }
            }
        }
        Ok(out)
    }

    fn check_range(&self, op: FileOp, offset: u64, len: usize) -> Result<()> {
        let cap = self.capacity();
        if offset.checked_add(len as u64).is_none_or(|end| end > cap) {
            return Err(VmdkError::OutOfRange {
                file: self.top().name.clone(),
                op,
                offset,
                len: len as u64,
                capacity: cap,
            });
        }
        Ok(())
    }
}

/// Read from the last layer of `layers`, falling through to the ones
/// before it where it holds no data. The range must be inside the disk.
pub(super) fn read_layers(layers: &[Layer], offset: u64, buf: &mut [u8]) -> Result<()> {
    let Some((layer, lower)) = layers.split_last() else {
        buf.fill(0);
        return Ok(());
    };
    let mut done = 0usize;
    while done < buf.len() {
        let pos = offset + done as u64;
        let e = &layer.extents[layer.extent_at(pos)];
        let rel = pos - e.start;
        let room = (e.len - rel).min((buf.len() - done) as u64) as usize;
        let n = match &e.data {
            ExtentData::Flat { name, io, start } => {
                let at = start + rel;
                io.read_at(&mut buf[done..done + room], at)
                    .map_err(|err| VmdkError::io(name, FileOp::Read, at, room as u64, err))?;
                room
            }
            ExtentData::Zero => {
                buf[done..done + room].fill(0);
                room
            }
            ExtentData::Cowd(c) => {
                let gb = c.grain_bytes();
                let (g, in_g) = (rel / gb, rel % gb);
                let first = room.min((gb - in_g) as usize);
                if c.read_in_grain(g, in_g, &mut buf[done..done + first])? {
                    first
                } else {
                    // Coalesce the following unallocated grains into one
                    // read of the parent.
                    let mut n = first;
                    let mut next = g + 1;
                    while n < room && c.lookup(next)?.is_none() {
                        n = room.min(n + gb as usize);
                        next += 1;
                    }
                    read_layers(lower, pos, &mut buf[done..done + n])?;
                    n
                }
            }
        };
        done += n;
    }
    Ok(())
}

/// Write into `top`; partial first writes of a grain copy the rest of the
/// grain from `lower` (the parents).
fn write_layer(lower: &[Layer], top: &mut Layer, offset: u64, data: &[u8]) -> Result<()> {
    let mut done = 0usize;
    while done < data.len() {
        let pos = offset + done as u64;
        let ei = top.extent_at(pos);
        let e = &mut top.extents[ei];
        let rel = pos - e.start;
        let room = (e.len - rel).min((data.len() - done) as u64) as usize;
        let n = match &mut e.data {
            ExtentData::Flat { name, io, start } => {
                let at = *start + rel;
                io.write_at(&data[done..done + room], at)
                    .map_err(|err| VmdkError::io(name, FileOp::Write, at, room as u64, err))?;
                room
            }
            ExtentData::Zero => {
                return Err(VmdkError::unsupported(
                    &top.name,
                    "writing to a ZERO extent",
                ));
            }
            ExtentData::Cowd(c) => {
                let gb = c.grain_bytes();
                let (g, in_g) = (rel / gb, rel % gb);
                let n = room.min((gb - in_g) as usize);
                let part = &data[done..done + n];
                if !c.write_in_grain(g, in_g, part)? {
                    let mut grain = vec![0u8; gb as usize];
                    let grain_start = e.start + g * gb;
                    let grain_len = gb.min(e.len - g * gb) as usize;
                    if n < grain_len {
                        read_layers(lower, grain_start, &mut grain[..grain_len])?;
                    }
                    grain[in_g as usize..in_g as usize + n].copy_from_slice(part);
                    c.allocate_grain(g, &grain)?;
                }
                n
            }
        };
        done += n;
    }
    Ok(())
}

//! The vmkfstools-style jobs on disks in the volume, shared by the `vmfs
//! disk` command and the benchmarks: create (with eager zeroing), make a
//! flat file eager-zeroed, clone through a snapshot chain skipping holes.

use std::sync::Arc;

use crate::fs::Fs;
use crate::vmdk::layer::{read_descriptor, write_descriptor, ExtentData};
use crate::vmdk::{create_flat_disk, DiskChain, ExtentStore, FlatDiskOptions, Provisioning};

use super::error::{DiskError, DiskResult};
use super::store::{FsStore, ReadLock, WriteLock};

/// Bytes zeroed per filesystem call when making a file eager-zeroed.
const ZERO_STEP: u64 = 64 << 20;
/// Bytes per read/write when cloning.
const COPY_PIECE: u64 = 1 << 20;

fn store(fs: &Fs, read: ReadLock) -> Arc<FsStore> {
    Arc::new(FsStore::new(fs.clone(), WriteLock::Exclusive, read))
}

/// `dir/x.vmdk` → `dir/x-flat.vmdk` (the name `create_flat_disk` uses).
pub fn flat_name(path: &str) -> String {
    format!("{}-flat.vmdk", path.trim_end_matches(".vmdk"))
}

/// Make `len` bytes of volume file `file` (from 0) eager-zeroed thick:
/// holes allocated and zeroed, lazily zeroed blocks zeroed. `progress`
/// gets (done, total) after each step.
pub fn make_eager(
    fs: &Fs,
    file: &str,
    len: u64,
    mut progress: impl FnMut(u64, u64),
) -> DiskResult<()> {
    let ino = store(fs, ReadLock::Shared)
        .lookup(file)
        .map_err(|e| DiskError::Invalid {
            path: file.to_string(),
            what: e.to_string(),
        })?;
    let fh = fs
        .open(ino, true)
        .map_err(|e| DiskError::fs(file, "opening for write", e))?;
    let r = (|| {
        let mut pos = 0;
        while pos < len {
            let n = ZERO_STEP.min(len - pos);
            fs.materialize(fh, pos, n)
                .map_err(|e| DiskError::fs(file, "allocating and zeroing", e))?;
            pos += n;
            progress(pos, len);
        }
        fs.fsync(fh).map_err(|e| DiskError::fs(file, "fsync", e))
    })();
    let c = fs.close(fh).map_err(|e| DiskError::fs(file, "closing", e));
    r.and(c)
}

/// Create flat disk `path` of `size` bytes and type `kind` (missing parent
/// directories are not created). Eager-zeroed disks are created lazily
/// zeroed, then zeroed through the filesystem (cheap device zeroing, one
/// transaction per batch of blocks) rather than by writing zeros.
pub fn create_disk(
    fs: &Fs,
    path: &str,
    size: u64,
    kind: Provisioning,
    progress: impl FnMut(u64, u64),
) -> DiskResult<()> {
    let st = store(fs, ReadLock::Shared);
    let first = match kind {
        Provisioning::EagerZeroedThick => Provisioning::ZeroedThick,
        k => k,
    };
    let opts = FlatDiskOptions {
        provisioning: first,
        ..FlatDiskOptions::default()
    };
    create_flat_disk(&*st, path, size, &opts).map_err(|e| DiskError::vmdk(path, e))?;
    if kind == Provisioning::EagerZeroedThick {
        make_eager(fs, &flat_name(path), size, progress)?;
        set_provisioning(fs, path, kind)?;
    }
    Ok(())
}

/// Record `kind` in descriptor `path`.
pub fn set_provisioning(fs: &Fs, path: &str, kind: Provisioning) -> DiskResult<()> {
    let st = store(fs, ReadLock::Shared);
    let mut d = read_descriptor(&*st, path).map_err(|e| DiskError::vmdk(path, e))?;
    d.set_provisioning(kind);
    write_descriptor(&*st, path, &d).map_err(|e| DiskError::vmdk(path, e))
}

/// Disk byte ranges some layer of `chain` holds data for, sorted, merged:
/// flat extents by SEEK_DATA/SEEK_HOLE on their files, deltas by their
/// allocated grains.
pub fn data_ranges(st: &FsStore, chain: &DiskChain) -> DiskResult<Vec<(u64, u64)>> {
    let mut v: Vec<(u64, u64)> = Vec::new();
    for layer in chain.layers() {
        for e in &layer.extents {
            match &e.data {
                ExtentData::Flat { name, start, .. } => {
                    let file = st.data_ranges(name).map_err(|err| DiskError::Invalid {
                        path: name.clone(),
                        what: format!("finding its data: {err}"),
                    })?;
                    for (fo, fl) in file {
                        let (a, b) = (fo.max(*start), (fo + fl).min(start + e.len));
                        if a < b {
                            v.push((e.start + a - start, b - a));
                        }
                    }
                }
                ExtentData::Cowd(c) => {
                    let gb = c.grain_bytes();
                    let grains = c
                        .allocated_grains()
                        .map_err(|err| DiskError::vmdk(&layer.name, err))?;
                    for (g, _) in grains {
                        let rel = g * gb;
                        v.push((e.start + rel, gb.min(e.len - rel)));
                    }
                }
                ExtentData::Zero => {}
            }
        }
    }
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (o, l) in v {
        match out.last_mut() {
            Some((po, pl)) if *po + *pl >= o => *pl = (*pl).max(o + l - *po),
            _ => out.push((o, l)),
        }
    }
    Ok(out)
}

/// What a clone did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloneReport {
    pub capacity: u64,
    /// Bytes of the source that hold data (read).
    pub data_bytes: u64,
}

/// Clone disk `src` (read through its chain, SHARED_READ) into a new flat
/// disk `dst` of type `kind`. Only ranges holding data are read, and zero
/// pieces are not written, so the time follows the data, not the size.
/// `progress` gets (bytes read, data bytes).
pub fn clone_disk(
    fs: &Fs,
    src: &str,
    dst: &str,
    kind: Provisioning,
    mut progress: impl FnMut(u64, u64),
) -> DiskResult<CloneReport> {
    let st = store(fs, ReadLock::Shared);
    let dyn_store: Arc<dyn ExtentStore> = st.clone();
    let chain =
        DiskChain::open(dyn_store.clone(), src, false).map_err(|e| DiskError::vmdk(src, e))?;
    let capacity = chain.capacity();
    let ranges = data_ranges(&st, &chain)?;
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let first = match kind {
        Provisioning::EagerZeroedThick => Provisioning::ZeroedThick,
        k => k,
    };
    create_disk(fs, dst, capacity, first, |_, _| {})?;
    let flat = flat_name(dst);
    let out = dyn_store
        .open(&flat, true)
        .map_err(|e| DiskError::Invalid {
            path: flat.clone(),
            what: format!("opening for write: {e}"),
        })?;
    let mut buf = vec![0u8; COPY_PIECE as usize];
    let mut copied = 0u64;
    for &(o, l) in &ranges {
        let mut pos = o;
        while pos < o + l {
            let n = COPY_PIECE.min(o + l - pos) as usize;
            chain
                .read_at(pos, &mut buf[..n])
                .map_err(|e| DiskError::vmdk(src, e))?;
            if buf[..n].iter().any(|&b| b != 0) {
                out.write_at(&buf[..n], pos)
                    .map_err(|e| DiskError::Invalid {
                        path: flat.clone(),
                        what: format!("writing {n} bytes at {pos}: {e}"),
                    })?;
            }
            pos += n as u64;
            copied += n as u64;
            progress(copied, total);
        }
    }
    out.sync().map_err(|e| DiskError::Invalid {
        path: flat.clone(),
        what: format!("sync: {e}"),
    })?;
    drop(out);
    if kind == Provisioning::EagerZeroedThick {
        make_eager(fs, &flat, capacity, |_, _| {})?;
        set_provisioning(fs, dst, kind)?;
    }
    Ok(CloneReport {
        capacity,
        data_bytes: total,
    })
}

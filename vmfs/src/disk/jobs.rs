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
    progress: impl FnMut(u64, u64),
) -> DiskResult<CloneReport> {
    let st = store(fs, ReadLock::Shared);
    let dyn_store: Arc<dyn ExtentStore> = st.clone();
    let chain =
        DiskChain::open(dyn_store.clone(), src, false).map_err(|e| DiskError::vmdk(src, e))?;
    let capacity = chain.capacity();
    let ranges = data_ranges(&st, &chain)?;
    copy_into(fs, dst, kind, capacity, &ranges, progress, |pos, buf| {
        chain.read_at(pos, buf).map_err(|e| DiskError::vmdk(src, e))
    })
}

/// Create disk `dst` of `capacity` bytes and type `kind` and copy `ranges`
/// of the source into it through `read`; pieces that read as zeros are not
/// written (a thin copy stays thin). `progress` gets (bytes read, total).
fn copy_into(
    fs: &Fs,
    dst: &str,
    kind: Provisioning,
    capacity: u64,
    ranges: &[(u64, u64)],
    mut progress: impl FnMut(u64, u64),
    mut read: impl FnMut(u64, &mut [u8]) -> DiskResult<()>,
) -> DiskResult<CloneReport> {
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let first = match kind {
        Provisioning::EagerZeroedThick => Provisioning::ZeroedThick,
        k => k,
    };
    create_disk(fs, dst, capacity, first, |_, _| {})?;
    let flat = flat_name(dst);
    let dyn_store: Arc<dyn ExtentStore> = store(fs, ReadLock::Shared);
    let out = dyn_store
        .open(&flat, true)
        .map_err(|e| DiskError::Invalid {
            path: flat.clone(),
            what: format!("opening for write: {e}"),
        })?;
    let mut buf = vec![0u8; COPY_PIECE as usize];
    let mut copied = 0u64;
    for &(o, l) in ranges {
        let mut pos = o;
        while pos < o + l {
            let n = COPY_PIECE.min(o + l - pos) as usize;
            read(pos, &mut buf[..n])?;
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

/// The data ranges of a host file (SEEK_DATA / SEEK_HOLE), up to `len`.
fn host_data_ranges(f: &std::fs::File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        // SAFETY: lseek on a descriptor we own; no memory is passed.
        let data = unsafe { libc::lseek(f.as_raw_fd(), pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // no data after pos
            }
            if e.raw_os_error() == Some(libc::EINVAL) {
                // No SEEK_DATA on this filesystem: all of it is data.
                return Ok(vec![(0, len)]);
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (a, b) = (data as u64, (hole as u64).min(len));
        if a < b {
            out.push((a, b - a));
        }
        pos = b.max(a + 1);
    }
    Ok(out)
}

/// Import a disk from the host into a new disk `dst` on the volume: `src` is
/// either a VMDK descriptor (read through its extents and snapshot chain
/// with the VMDK library) or a raw image (its holes skipped with
/// SEEK_DATA/SEEK_HOLE). Zero pieces are not written. A raw image whose size
/// is not a multiple of 512 is padded with zeros.
pub fn import_disk(
    fs: &Fs,
    src: &std::path::Path,
    dst: &str,
    kind: Provisioning,
    progress: impl FnMut(u64, u64),
) -> DiskResult<CloneReport> {
    use std::os::unix::fs::FileExt;
    let src_name = src.display().to_string();
    let bad = |what: String| DiskError::Invalid {
        path: src_name.clone(),
        what,
    };
    if src.extension().is_some_and(|e| e == "vmdk") {
        let dir = src
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| bad("not a UTF-8 file name".into()))?;
        let host: Arc<dyn ExtentStore> = Arc::new(crate::vmdk::DirStore::new(dir));
        let chain =
            DiskChain::open(host, name, false).map_err(|e| DiskError::vmdk(&src_name, e))?;
        let capacity = chain.capacity();
        return copy_into(
            fs,
            dst,
            kind,
            capacity,
            &[(0, capacity)],
            progress,
            |pos, buf| {
                chain
                    .read_at(pos, buf)
                    .map_err(|e| DiskError::vmdk(&src_name, e))
            },
        );
    }
    let f = std::fs::File::open(src).map_err(|e| bad(format!("opening: {e}")))?;
    let len = f.metadata().map_err(|e| bad(format!("stat: {e}")))?.len();
    if len == 0 {
        return Err(bad("is empty: nothing to import".into()));
    }
    let capacity = len.div_ceil(512) * 512;
    let ranges = host_data_ranges(&f, len).map_err(|e| bad(format!("finding its data: {e}")))?;
    copy_into(fs, dst, kind, capacity, &ranges, progress, |pos, buf| {
        buf.fill(0);
        let want = (len.saturating_sub(pos) as usize).min(buf.len());
        f.read_exact_at(&mut buf[..want], pos)
            .map_err(|e| bad(format!("reading {want} bytes at {pos}: {e}")))
    })
}

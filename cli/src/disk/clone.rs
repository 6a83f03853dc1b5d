//! `vmfs disk clone SRC DST`: a new flat disk with the content of SRC (read
//! through its snapshot chain). Only ranges some layer holds data for are
//! read — holes of flat extents (SEEK_DATA/SEEK_HOLE) and unallocated
//! grains of deltas are skipped — and zero pieces are not written, so the
//! time is proportional to the data, not the size.

use std::sync::Arc;

use vmfs::disk::{FsStore, ReadLock, WriteLock};
use vmfs::vmdk::layer::ExtentData;
use vmfs::vmdk::{DiskChain, ExtentStore, Provisioning};

use super::create::{create, flat_name};
use super::{explain, parse_type, DiskPath};
use crate::session::Session;
use crate::units::human;

#[derive(clap::Args, Debug)]
pub struct CloneArgs {
    #[command(flatten)]
    pub src: DiskPath,
    /// The new disk's descriptor path inside the volume.
    pub dst: String,
    /// Type of the copy.
    #[arg(long = "type", default_value = "thin", value_parser = parse_type)]
    pub kind: Provisioning,
}

/// Disk byte ranges that some layer of `chain` holds data for, sorted and
/// merged.
pub fn data_ranges(st: &FsStore, chain: &DiskChain) -> Result<Vec<(u64, u64)>, String> {
    let mut v: Vec<(u64, u64)> = Vec::new();
    for layer in chain.layers() {
        for e in &layer.extents {
            match &e.data {
                ExtentData::Flat { name, start, .. } => {
                    let file = st
                        .data_ranges(name)
                        .map_err(|err| format!("{name}: {err}"))?;
                    for (fo, fl) in file {
                        let (a, b) = (fo.max(*start), (fo + fl).min(start + e.len));
                        if a < b {
                            v.push((e.start + a - start, b - a));
                        }
                    }
                }
                ExtentData::Cowd(c) => {
                    let gb = c.grain_bytes();
                    for (g, _) in c.allocated_grains().map_err(|err| err.to_string())? {
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

pub fn run(a: &CloneArgs) -> Result<(), String> {
    let s = Session::join(&a.src.device, &a.src.host)?;
    s.run(|s| clone(s, &a.src.path, &a.dst, a.kind).map(|_| ()))
}

/// Clone; returns the bytes copied.
pub fn clone(s: &Session, src: &str, dst: &str, kind: Provisioning) -> Result<u64, String> {
    let st = Arc::new(FsStore::new(
        s.fs.clone(),
        WriteLock::Exclusive,
        ReadLock::Shared,
    ));
    let store: Arc<dyn ExtentStore> = st.clone();
    let chain = DiskChain::open(store.clone(), src, false).map_err(|e| explain(s, src, e))?;
    let cap = chain.capacity();
    let ranges = data_ranges(&st, &chain).map_err(|e| s.err(format!("{src}: {e}")))?;
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    create(s, dst, cap, kind)?;
    let flat = flat_name(dst);
    let out = store.open(&flat, true).map_err(|e| explain(s, &flat, e))?;
    let pb = crate::progress::bytes("cloning", total);
    const PIECE: u64 = 1 << 20;
    let mut buf = vec![0u8; PIECE as usize];
    let mut copied = 0u64;
    let r = (|| {
        for &(o, l) in &ranges {
            let mut pos = o;
            while pos < o + l {
                let n = PIECE.min(o + l - pos) as usize;
                chain
                    .read_at(pos, &mut buf[..n])
                    .map_err(|e| s.err(format!("{src}: {e}")))?;
                if buf[..n].iter().any(|&b| b != 0) {
                    out.write_at(&buf[..n], pos)
                        .map_err(|e| s.err(format!("{flat}: writing at {pos}: {e}")))?;
                }
                pos += n as u64;
                copied += n as u64;
                pb.set_position(copied);
            }
        }
        out.sync().map_err(|e| s.err(format!("{flat}: {e}")))
    })();
    pb.finish_and_clear();
    r?;
    println!(
        "cloned {src} ({}) to {dst} ({}): {} of data copied",
        human(cap),
        kind.name(),
        human(total)
    );
    Ok(total)
}

//! Disk images at crash points, rebuilt from a `FaultDev` write log.
//!
//! The durable image at flush boundary `k` is the formatted image plus every
//! logged write before the `k`-th flush. A crash state adds what may have
//! reached the media after it: a cut point in the window before the next
//! flush, every compare-and-write before the cut (they are durable at
//! once), and none, a random subset, or a torn random subset of the other
//! writes before the cut (torn: a multi-sector write lands only a prefix
//! of its sectors and its last landing sector may keep its old tail) — the
//! same choices `FaultDev::crash` makes.
//!
//! Each crash state runs on a [`CowDev`]: the shared durable image plus
//! private copy-on-write chunks, so hundreds of states cost no full copies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::Rng;
use vmfs::dev::{
    check_io, BlockDev, CasOutcome, DevCapabilities, DevError, DevOp, FenceToken, FencedOp,
    LogEntry,
};

const SECTOR: usize = 512;
const CHUNK: usize = 64 << 10;

/// Apply one logged write to an image in memory (flushes change nothing).
pub fn apply(img: &mut [u8], e: &LogEntry) {
    match e {
        LogEntry::Write { offset, data } | LogEntry::Cas { offset, data } => {
            let o = *offset as usize;
            img[o..o + data.len()].copy_from_slice(data);
        }
        LogEntry::Zeroes { offset, len } | LogEntry::Unmap { offset, len } => {
            let o = *offset as usize;
            img[o..o + *len as usize].fill(0);
        }
        LogEntry::Flush => {}
    }
}

/// What reaches the media of the writes in a crash window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// Only compare-and-writes (durable at once) before the cut.
    Nothing,
    /// Each plain write before the cut with probability 1/2.
    RandomSubset,
    /// A random subset, multi-sector writes cut at a sector, one sector torn.
    Torn,
}

/// The entries of `window` (writes after a flush, before the next one)
/// that land if power fails after `cut` of them, as `landing` says.
pub fn crash_writes(
    window: &[LogEntry],
    cut: usize,
    landing: Landing,
    rng: &mut StdRng,
    image: &dyn BlockDev,
) -> Result<Vec<LogEntry>, DevError> {
    let mut out = Vec::new();
    for e in &window[..cut] {
        match e {
            LogEntry::Cas { .. } => out.push(e.clone()),
            LogEntry::Flush => {}
            _ if landing == Landing::Nothing || !rng.gen_bool(0.5) => {}
            _ if landing == Landing::RandomSubset => out.push(e.clone()),
            _ => out.push(tear(e, rng, image, &out)?),
        }
    }
    Ok(out)
}

/// A prefix of `e`'s sectors, the last one perhaps keeping its old tail
/// (old = the image with the writes chosen so far applied).
fn tear(
    e: &LogEntry,
    rng: &mut StdRng,
    image: &dyn BlockDev,
    before: &[LogEntry],
) -> Result<LogEntry, DevError> {
    let (offset, len) = match e {
        LogEntry::Write { offset, data } => (*offset, data.len()),
        LogEntry::Zeroes { offset, len } | LogEntry::Unmap { offset, len } => {
            (*offset, *len as usize)
        }
        _ => return Ok(e.clone()),
    };
    let sectors = (len / SECTOR).max(1);
    let keep = rng.gen_range(1..=sectors) * SECTOR;
    let mut data = match e {
        LogEntry::Write { data, .. } => data[..keep.min(len)].to_vec(),
        _ => vec![0u8; keep.min(len)],
    };
    if data.len() >= SECTOR && rng.gen_bool(0.5) {
        let last = data.len() - SECTOR;
        let split = rng.gen_range(1..SECTOR);
        let at = offset + last as u64;
        let mut old = vec![0u8; SECTOR];
        image.read_at(&mut old, at)?;
        for b in before {
            overlay_entry(&mut old, at, b);
        }
        data[last + split..].copy_from_slice(&old[split..]);
    }
    Ok(LogEntry::Write { offset, data })
}

/// Apply the part of `e` that falls in `buf` (which sits at `at`).
fn overlay_entry(buf: &mut [u8], at: u64, e: &LogEntry) {
    let (off, len, data) = match e {
        LogEntry::Write { offset, data } | LogEntry::Cas { offset, data } => {
            (*offset, data.len() as u64, Some(data))
        }
        LogEntry::Zeroes { offset, len } | LogEntry::Unmap { offset, len } => (*offset, *len, None),
        LogEntry::Flush => return,
    };
    let s = off.max(at);
    let end = (off + len).min(at + buf.len() as u64);
    if s >= end {
        return;
    }
    let dst = &mut buf[(s - at) as usize..(end - at) as usize];
    match data {
        Some(d) => dst.copy_from_slice(&d[(s - off) as usize..(end - off) as usize]),
        None => dst.fill(0),
    }
}

/// A device over a shared base image with private copy-on-write chunks.
#[derive(Debug)]
pub struct CowDev {
    base: Arc<Vec<u8>>,
    chunks: Mutex<HashMap<usize, Vec<u8>>>,
}

impl CowDev {
    pub fn new(base: Arc<Vec<u8>>) -> CowDev {
        CowDev {
            base,
            chunks: Mutex::new(HashMap::new()),
        }
    }

    fn chunks(&self) -> MutexGuard<'_, HashMap<usize, Vec<u8>>> {
        self.chunks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_locked(&self, ch: &HashMap<usize, Vec<u8>>, buf: &mut [u8], offset: u64) {
        let mut pos = offset as usize;
        let mut done = 0;
        while done < buf.len() {
            let c = pos / CHUNK;
            let o = pos % CHUNK;
            let n = (CHUNK - o).min(buf.len() - done);
            let src = match ch.get(&c) {
                Some(v) => &v[o..o + n],
                None => &self.base[pos..pos + n],
            };
            buf[done..done + n].copy_from_slice(src);
            done += n;
            pos += n;
        }
    }

    fn write_locked(
        &self,
        ch: &mut HashMap<usize, Vec<u8>>,
        offset: u64,
        len: usize,
        data: Option<&[u8]>,
    ) {
        let mut pos = offset as usize;
        let mut done = 0;
        while done < len {
            let c = pos / CHUNK;
            let o = pos % CHUNK;
            let n = (CHUNK - o).min(len - done);
            let base = &self.base;
            let chunk = ch.entry(c).or_insert_with(|| {
                let s = c * CHUNK;
                base[s..(s + CHUNK).min(base.len())].to_vec()
            });
            match data {
                Some(d) => chunk[o..o + n].copy_from_slice(&d[done..done + n]),
                None => chunk[o..o + n].fill(0),
            }
            done += n;
            pos += n;
        }
    }

    /// Land `entries` in order.
    pub fn land(&self, entries: &[LogEntry]) {
        let mut ch = self.chunks();
        for e in entries {
            match e {
                LogEntry::Write { offset, data } | LogEntry::Cas { offset, data } => {
                    self.write_locked(&mut ch, *offset, data.len(), Some(data))
                }
                LogEntry::Zeroes { offset, len } | LogEntry::Unmap { offset, len } => {
                    self.write_locked(&mut ch, *offset, *len as usize, None)
                }
                LogEntry::Flush => {}
            }
        }
    }
}

impl BlockDev for CowDev {
    fn name(&self) -> &str {
        "crash-image"
    }

    fn size(&self) -> u64 {
        self.base.len() as u64
    }

    fn logical_block_size(&self) -> u32 {
        SECTOR as u32
    }

    fn capabilities(&self) -> DevCapabilities {
        DevCapabilities {
            cross_machine_atomic_cas: true,
            unmap_zeroes: true,
            persistent_reservations: false,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DevError> {
        check_io(self, DevOp::Read, offset, buf.len() as u64)?;
        self.read_locked(&self.chunks(), buf, offset);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DevError> {
        check_io(self, DevOp::Write, offset, buf.len() as u64)?;
        self.write_locked(&mut self.chunks(), offset, buf.len(), Some(buf));
        Ok(())
    }

    fn flush(&self) -> Result<(), DevError> {
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DevError> {
        check_io(self, DevOp::WriteZeroes, offset, len)?;
        self.write_locked(&mut self.chunks(), offset, len as usize, None);
        Ok(())
    }

    fn unmap(&self, offset: u64, len: u64) -> Result<(), DevError> {
        check_io(self, DevOp::Unmap, offset, len)?;
        self.write_locked(&mut self.chunks(), offset, len as usize, None);
        Ok(())
    }

    fn compare_and_write(
        &self,
        offset: u64,
        expected: &[u8],
        new: &[u8],
    ) -> Result<CasOutcome, DevError> {
        if expected.len() != new.len() {
            return Err(DevError::CasLength {
                device: self.name().into(),
                expected: expected.len(),
                new: new.len(),
            });
        }
        check_io(self, DevOp::CompareAndWrite, offset, new.len() as u64)?;
        let mut ch = self.chunks();
        let mut cur = vec![0u8; new.len()];
        self.read_locked(&ch, &mut cur, offset);
        if cur != expected {
            return Ok(CasOutcome::Miscompare(cur));
        }
        self.write_locked(&mut ch, offset, new.len(), Some(new));
        Ok(CasOutcome::Done)
    }

    fn write_fenced(
        &self,
        op: FencedOp<'_>,
        offset: u64,
        fence: &FenceToken,
    ) -> Result<(), DevError> {
        let (dop, len, data) = match op {
            FencedOp::Write(b) => (DevOp::Write, b.len() as u64, Some(b)),
            FencedOp::WriteZeroes(l) => (DevOp::WriteZeroes, l, None),
            FencedOp::Unmap(l) => (DevOp::Unmap, l, None),
        };
        check_io(self, dop, offset, len)?;
        check_io(self, DevOp::Read, fence.slot_addr, SECTOR as u64)?;
        let mut ch = self.chunks();
        let mut slot = vec![0u8; SECTOR];
        self.read_locked(&ch, &mut slot, fence.slot_addr);
        if !fence.admits(&slot) {
            return Err(fence.refused(self.name()));
        }
        self.write_locked(&mut ch, offset, len as usize, data);
        Ok(())
    }
}

//! `FaultDev`: wraps any device and misbehaves on purpose, reproducibly
//! (every random choice comes from one seeded generator).
//!
//! - a volatile write cache: writes stay in an ordered overlay (visible to
//!   reads through this `FaultDev`) until `flush`; `crash` decides which of
//!   them reach the inner device — none, a prefix, a random subset, or a torn
//!   random subset (multi-sector writes cut at a sector boundary, one sector
//!   half old, half new);
//! - EIO on chosen ranges, or on everything (device lost);
//! - added latency, and pause/resume (every operation blocks while paused);
//! - lost compare-and-write responses (`Indeterminate`, the write having
//!   landed or not);
//! - an optional log of every write and flush, for crash-point sweeps.
//!
//! Several `FaultDev`s may wrap one shared inner device: each then plays one
//! host with its own write cache, and compare-and-writes that do not overlap
//! the host's own unflushed writes are delegated to the inner device's atomic
//! compare-and-write.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{
    check_cas, check_io, BlockDev, CasOutcome, DevError, DevOp, FenceToken, FencedOp, SharedDev,
};

/// Which unflushed writes survive [`FaultDev::crash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// None of them.
    DropAll,
    /// The first `n` in issue order.
    KeepPrefix(usize),
    /// Each independently with probability 1/2.
    RandomSubset,
    /// A random subset where a multi-sector write may land only a prefix of
    /// its sectors and one landing sector may be torn inside.
    Torn,
}

/// Which operations an injected fault fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultOps {
    pub reads: bool,
    pub writes: bool,
}

impl FaultOps {
    pub const READS: FaultOps = FaultOps {
        reads: true,
        writes: false,
    };
    pub const WRITES: FaultOps = FaultOps {
        reads: false,
        writes: true,
    };
    pub const ALL: FaultOps = FaultOps {
        reads: true,
        writes: true,
    };
}

/// One entry of the write log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    Write {
        offset: u64,
        data: Vec<u8>,
    },
    Zeroes {
        offset: u64,
        len: u64,
    },
    Unmap {
        offset: u64,
        len: u64,
    },
    /// A compare-and-write that landed (durable at once).
    Cas {
        offset: u64,
        data: Vec<u8>,
    },
    Flush,
}

#[derive(Debug, Clone)]
enum Pending {
    Data { offset: u64, data: Vec<u8> },
    Zeroes { offset: u64, len: u64 },
    Unmap { offset: u64, len: u64 },
}

/// A cached write and the fence it must pass when it lands (a write issued
/// through `write_fenced` is checked at landing time, as a device enforcing
/// a persistent reservation would).
#[derive(Debug, Clone)]
struct Cached {
    w: Pending,
    fence: Option<FenceToken>,
}

impl Pending {
    fn range(&self) -> Range<u64> {
        match self {
            Pending::Data { offset, data } => *offset..*offset + data.len() as u64,
            Pending::Zeroes { offset, len } | Pending::Unmap { offset, len } => {
                *offset..*offset + *len
            }
        }
    }

    /// The part of this write inside `r` (None if disjoint).
    fn clip(&self, r: Range<u64>) -> Option<Pending> {
        let own = self.range();
        let start = own.start.max(r.start);
        let end = own.end.min(r.end);
        if start >= end {
            return None;
        }
        Some(match self {
            Pending::Data { offset, data } => Pending::Data {
                offset: start,
                data: data[(start - offset) as usize..(end - offset) as usize].to_vec(),
            },
            Pending::Zeroes { .. } => Pending::Zeroes {
                offset: start,
                len: end - start,
            },
            Pending::Unmap { .. } => Pending::Unmap {
                offset: start,
                len: end - start,
            },
        })
    }
}

#[derive(Debug)]
struct State {
    rng: StdRng,
    cache: bool,
    pending: Vec<Cached>,
    faults: Vec<(Range<u64>, FaultOps)>,
    all_failed: bool,
    latency: Duration,
    cas_indeterminate: f64,
    log: Option<Vec<LogEntry>>,
}

/// A fault-injecting wrapper around any device.
#[derive(Debug)]
pub struct FaultDev {
    inner: SharedDev,
    name: String,
    sector: u64,
    state: Mutex<State>,
    paused: Mutex<bool>,
    resumed: Condvar,
    flushes: AtomicU64,
}

impl FaultDev {
    /// Wrap `inner`; all random choices derive from `seed`.
    pub fn new(inner: SharedDev, seed: u64) -> FaultDev {
        FaultDev {
            name: format!("fault({})", inner.name()),
            sector: u64::from(inner.logical_block_size()),
            inner,
            state: Mutex::new(State {
                rng: StdRng::seed_from_u64(seed),
                cache: true,
                pending: Vec::new(),
                faults: Vec::new(),
                all_failed: false,
                latency: Duration::ZERO,
                cas_indeterminate: 0.0,
                log: None,
            }),
            paused: Mutex::new(false),
            resumed: Condvar::new(),
            flushes: AtomicU64::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Turn the volatile write cache on (default) or off (write-through).
    /// Turning it off flushes nothing: pending writes stay pending.
    pub fn set_write_cache(&self, on: bool) {
        self.state().cache = on;
    }

    /// Writes issued but not yet flushed.
    pub fn unflushed_writes(&self) -> usize {
        self.state().pending.len()
    }

    /// Successful flushes so far (crash sweeps count boundaries with it).
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::SeqCst)
    }

    /// Power loss: decide which unflushed writes reach the inner device,
    /// apply them in issue order, and empty the cache.
    pub fn crash(&self, mode: CrashMode) -> Result<(), DevError> {
        let mut st = self.state();
        let pending = std::mem::take(&mut st.pending);
        let n = pending.len();
        for (i, Cached { w, fence }) in pending.into_iter().enumerate() {
            let lands = match mode {
                CrashMode::DropAll => false,
                CrashMode::KeepPrefix(k) => i < k.min(n),
                CrashMode::RandomSubset | CrashMode::Torn => st.rng.gen_bool(0.5),
            };
            if !lands {
                continue;
            }
            let r = if mode == CrashMode::Torn {
                self.apply_torn(&mut st.rng, w, fence.as_ref())
            } else {
                self.apply(&w, fence.as_ref())
            };
            match r {
                // The device refused a fenced write: it simply never lands.
                Err(DevError::Fenced { .. }) => {}
                other => other?,
            }
        }
        self.inner.flush()
    }

    fn apply(&self, w: &Pending, fence: Option<&FenceToken>) -> Result<(), DevError> {
        let (op, offset) = match w {
            Pending::Data { offset, data } => (FencedOp::Write(data), *offset),
            Pending::Zeroes { offset, len } => (FencedOp::WriteZeroes(*len), *offset),
            Pending::Unmap { offset, len } => (FencedOp::Unmap(*len), *offset),
        };
        match fence {
            Some(f) => self.inner.write_fenced(op, offset, f),
            None => super::apply_op(self.inner.as_ref(), op, offset),
        }
    }

    fn apply_torn(
        &self,
        rng: &mut StdRng,
        w: Pending,
        fence: Option<&FenceToken>,
    ) -> Result<(), DevError> {
        let r = w.range();
        let sectors = (r.end - r.start) / self.sector;
        // Land a prefix of 1..=sectors sectors.
        let keep = rng.gen_range(1..=sectors.max(1));
        let cut = r.start..r.start + keep * self.sector;
        let Some(part) = w.clip(cut) else {
            return Ok(());
        };
        match part {
            Pending::Data { offset, mut data } if rng.gen_bool(0.5) => {
                // Tear the last landing sector: its tail keeps the old bytes.
                let s = self.sector as usize;
                let last = data.len() - s;
                let split = rng.gen_range(1..s);
                let mut old = vec![0u8; s];
                self.inner.read_at(&mut old, offset + last as u64)?;
                data[last + split..].copy_from_slice(&old[split..]);
                self.apply(&Pending::Data { offset, data }, fence)
            }
            other => self.apply(&other, fence),
        }
    }

    /// Fail reads and/or writes touching `range` with EIO.
    pub fn fail_range(&self, range: Range<u64>, ops: FaultOps) {
        self.state().faults.push((range, ops));
    }

    /// Device lost (true): every operation fails with EIO.
    pub fn fail_all(&self, on: bool) {
        self.state().all_failed = on;
    }

    /// Remove every injected EIO.
    pub fn clear_faults(&self) {
        let mut st = self.state();
        st.faults.clear();
        st.all_failed = false;
    }

    /// Delay every operation by `d`.
    pub fn set_latency(&self, d: Duration) {
        self.state().latency = d;
    }

    /// Block every operation until [`FaultDev::resume`].
    pub fn pause(&self) {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Let blocked operations go on.
    pub fn resume(&self) {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.resumed.notify_all();
    }

    /// Make a compare-and-write report `Indeterminate` with probability `p`
    /// (having landed or not, half and half).
    pub fn set_cas_indeterminate(&self, p: f64) {
        self.state().cas_indeterminate = p.clamp(0.0, 1.0);
    }

    /// Start logging every write, compare-and-write and flush.
    pub fn start_recording(&self) {
        self.state().log = Some(Vec::new());
    }

    /// Take the log recorded so far (recording continues).
    pub fn take_log(&self) -> Vec<LogEntry> {
        self.state()
            .log
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Wait out a pause and the configured latency, then check injected EIO.
    fn gate(&self, op: DevOp, offset: u64, len: u64) -> Result<MutexGuard<'_, State>, DevError> {
        {
            let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
            while *paused {
                paused = self.resumed.wait(paused).unwrap_or_else(|e| e.into_inner());
            }
        }
        let latency = self.state().latency;
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        let st = self.state();
        let is_read = op == DevOp::Read;
        let hit = st.all_failed
            || st.faults.iter().any(|(r, ops)| {
                let touches = r.start < offset + len.max(1) && offset < r.end;
                touches && if is_read { ops.reads } else { ops.writes }
            });
        if hit {
            return Err(DevError::Io {
                device: self.name.clone(),
                op,
                offset,
                len,
                source: std::io::Error::from_raw_os_error(libc::EIO),
            });
        }
        Ok(st)
    }

    fn write_op(
        &self,
        st: &mut State,
        w: Pending,
        fence: Option<FenceToken>,
    ) -> Result<(), DevError> {
        if let Some(log) = st.log.as_mut() {
            log.push(match &w {
                Pending::Data { offset, data } => LogEntry::Write {
                    offset: *offset,
                    data: data.clone(),
                },
                Pending::Zeroes { offset, len } => LogEntry::Zeroes {
                    offset: *offset,
                    len: *len,
                },
                Pending::Unmap { offset, len } => LogEntry::Unmap {
                    offset: *offset,
                    len: *len,
                },
            });
        }
        if st.cache {
            st.pending.push(Cached { w, fence });
            Ok(())
        } else {
            self.apply(&w, fence.as_ref())
        }
    }

    /// The bytes this host sees at `offset`: inner device plus its own cache.
    fn visible(&self, st: &State, buf: &mut [u8], offset: u64) -> Result<(), DevError> {
        self.inner.read_at(buf, offset)?;
        let want = offset..offset + buf.len() as u64;
        for c in &st.pending {
            if let Some(part) = c.w.clip(want.clone()) {
                let r = part.range();
                let dst = &mut buf[(r.start - offset) as usize..(r.end - offset) as usize];
                match part {
                    Pending::Data { data, .. } => dst.copy_from_slice(&data),
                    Pending::Zeroes { .. } | Pending::Unmap { .. } => dst.fill(0),
                }
            }
        }
        Ok(())
    }

    /// Drop the parts of cached writes that a landed compare-and-write
    /// superseded, so they cannot land later and undo it.
    fn trim_pending(st: &mut State, r: Range<u64>) {
        let old = std::mem::take(&mut st.pending);
        for c in old {
            let own = c.w.range();
            if own.end <= r.start || r.end <= own.start {
                st.pending.push(c);
                continue;
            }
            for part in [c.w.clip(own.start..r.start), c.w.clip(r.end..own.end)]
                .into_iter()
                .flatten()
            {
                st.pending.push(Cached {
                    w: part,
                    fence: c.fence,
                });
            }
        }
    }
}

/// Size, block size and capabilities are the inner device's; every other
/// operation is overridden (each can fail, wait or be cached).
impl super::DevWrapper for FaultDev {
    fn inner(&self) -> &dyn BlockDev {
        &*self.inner
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DevError> {
        check_io(self, DevOp::Read, offset, buf.len() as u64)?;
        let st = self.gate(DevOp::Read, offset, buf.len() as u64)?;
        self.visible(&st, buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DevError> {
        check_io(self, DevOp::Write, offset, buf.len() as u64)?;
        let mut st = self.gate(DevOp::Write, offset, buf.len() as u64)?;
        self.write_op(
            &mut st,
            Pending::Data {
                offset,
                data: buf.to_vec(),
            },
            None,
        )
    }

    fn flush(&self) -> Result<(), DevError> {
        let mut st = self.gate(DevOp::Flush, 0, 0)?;
        let pending = std::mem::take(&mut st.pending);
        for (i, c) in pending.iter().enumerate() {
            if let Err(e) = self.apply(&c.w, c.fence.as_ref()) {
                // Keep what did not land so a later flush or crash decides.
                st.pending = pending[i..].to_vec();
                return Err(e);
            }
        }
        self.inner.flush()?;
        if let Some(log) = st.log.as_mut() {
            log.push(LogEntry::Flush);
        }
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DevError> {
        check_io(self, DevOp::WriteZeroes, offset, len)?;
        let mut st = self.gate(DevOp::WriteZeroes, offset, len)?;
        self.write_op(&mut st, Pending::Zeroes { offset, len }, None)
    }

    fn unmap(&self, offset: u64, len: u64) -> Result<(), DevError> {
        check_io(self, DevOp::Unmap, offset, len)?;
        let mut st = self.gate(DevOp::Unmap, offset, len)?;
        self.write_op(&mut st, Pending::Unmap { offset, len }, None)
    }

    fn compare_and_write(
        &self,
        offset: u64,
        expected: &[u8],
        new: &[u8],
    ) -> Result<CasOutcome, DevError> {
        check_cas(self, offset, expected, new)?;
        let len = new.len() as u64;
        let mut st = self.gate(DevOp::CompareAndWrite, offset, len)?;
        let range = offset..offset + len;
        let p_lose = st.cas_indeterminate;
        let lose_response = p_lose > 0.0 && st.rng.gen_bool(p_lose);
        let land_anyway = lose_response && st.rng.gen_bool(0.5);
        if lose_response && !land_anyway {
            return Ok(CasOutcome::Indeterminate);
        }
        let overlaps_cache = st.pending.iter().any(|c| c.w.clip(range.clone()).is_some());
        let outcome = if overlaps_cache {
            // Our own unflushed writes cover the range: compare against what
            // this host sees, then write through.
            let mut cur = vec![0u8; new.len()];
            self.visible(&st, &mut cur, offset)?;
            if cur != expected {
                CasOutcome::Miscompare(cur)
            } else {
                self.inner.write_at(new, offset)?;
                self.inner.flush()?;
                CasOutcome::Done
            }
        } else {
            self.inner.compare_and_write(offset, expected, new)?
        };
        if outcome == CasOutcome::Done {
            Self::trim_pending(&mut st, range);
            if let Some(log) = st.log.as_mut() {
                log.push(LogEntry::Cas {
                    offset,
                    data: new.to_vec(),
                });
            }
            if lose_response {
                return Ok(CasOutcome::Indeterminate);
            }
        }
        Ok(outcome)
    }

    fn write_fenced(
        &self,
        op: FencedOp<'_>,
        offset: u64,
        fence: &FenceToken,
    ) -> Result<(), DevError> {
        let (dop, len) = (op.dev_op(), op.len());
        let w = match op {
            FencedOp::Write(b) => Pending::Data {
                offset,
                data: b.to_vec(),
            },
            FencedOp::WriteZeroes(len) => Pending::Zeroes { offset, len },
            FencedOp::Unmap(len) => Pending::Unmap { offset, len },
        };
        check_io(self, dop, offset, len)?;
        let mut st = self.gate(dop, offset, len)?;
        self.write_op(&mut st, w, Some(*fence))
    }
}

#[cfg(test)]
#[path = "fault_tests.rs"]
mod tests;

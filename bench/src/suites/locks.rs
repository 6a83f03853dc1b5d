//! `locks`: uncontended acquire+release rate (against the device's raw
//! compare-and-write rate: one acquire+release is two CAS), heartbeat I/O per
//! beat while holding 10,000 locks, and dead-host takeover time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmfs::cluster::{Host, HostConfig, Timeouts};
use vmfs::dev::{
    BlockDev, CasOutcome, DevError, FenceToken, FencedOp, FileDev, FileDevOptions, SharedDev,
};
use vmfs::format::{LockMode, LockRecord, ResourceKind};
use vmfs::volume::{mkfs, MkfsOptions, Volume};

use crate::harness::{run_case, Better, Case, Row, Subject};
use crate::Config;

/// Counts the operations that reach the device (shared with `scale`).
#[derive(Debug)]
pub(super) struct Counting {
    pub(super) inner: SharedDev,
    pub(super) reads: AtomicU64,
    pub(super) read_bytes: AtomicU64,
    pub(super) writes: AtomicU64,
    pub(super) cas: AtomicU64,
}

impl Counting {
    pub(super) fn new(inner: SharedDev) -> Counting {
        Counting {
            inner,
            reads: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            cas: AtomicU64::new(0),
        }
    }

    /// (reads, bytes read, writes, compare-and-writes) so far.
    pub(super) fn totals(&self) -> [u64; 4] {
        [
            self.reads.load(Ordering::Relaxed),
            self.read_bytes.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
            self.cas.load(Ordering::Relaxed),
        ]
    }
}

impl vmfs::dev::DevWrapper for Counting {
    fn inner(&self) -> &dyn BlockDev {
        &*self.inner
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DevError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.read_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DevError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.write_at(buf, offset)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DevError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.write_zeroes(offset, len)
    }
    fn unmap(&self, offset: u64, len: u64) -> Result<(), DevError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.unmap(offset, len)
    }
    fn compare_and_write(
        &self,
        offset: u64,
        expected: &[u8],
        new: &[u8],
    ) -> Result<CasOutcome, DevError> {
        self.cas.fetch_add(1, Ordering::Relaxed);
        self.inner.compare_and_write(offset, expected, new)
    }
    fn write_fenced(
        &self,
        op: FencedOp<'_>,
        offset: u64,
        fence: &FenceToken,
    ) -> Result<(), DevError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.write_fenced(op, offset, fence)
    }
}

/// An 8 GiB sparse volume with 128 heartbeat slots (shared with `scale`).
pub(super) fn volume(cfg: &Config, t: Timeouts) -> Result<(tempfile::TempDir, SharedDev), String> {
    let dir = tempfile::tempdir_in(&cfg.work_dir).map_err(|e| e.to_string())?;
    let dev: SharedDev = Arc::new(
        FileDev::open(
            dir.path().join("locks.img"),
            FileDevOptions {
                create_size: Some(8 << 30),
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?,
    );
    mkfs(
        &dev,
        &MkfsOptions {
            label: "bench".into(),
            max_hosts: 128,
            journal_size: 1 << 20,
            timeouts: t.to_minimums(),
            ..Default::default()
        },
        false,
    )
    .map_err(|e| e.to_string())?;
    Ok((dir, dev))
}

pub fn run(cfg: &Config) -> Result<Vec<Row>, String> {
    let t = Timeouts::from_minimums(&vmfs::format::TimeoutMinimums::default());
    let (_dir, dev) = volume(cfg, t)?;
    let vol = Volume::open(dev.clone()).map_err(|e| e.to_string())?;
    let host = Host::join(vol.clone(), HostConfig::new("bench")).map_err(|e| e.to_string())?;
    let lock = vol.cluster_lock_addr(ResourceKind::FileBlock, 0);
    let n: u64 = if cfg.quick { 300 } else { 3000 };
    let mut rows = Vec::new();
    let raw_sector = vol.cluster_lock_addr(ResourceKind::FileBlock, 1);
    let case = Case {
        suite: "locks",
        name: "uncontended acquire+release".into(),
        unit: "ops/s",
        better: Better::Higher,
        baseline: "raw CAS pairs".into(),
        subjects: vec![
            Subject {
                name: "vmfs lock+unlock".into(),
                run: Box::new(|| {
                    let start = Instant::now();
                    for _ in 0..n {
                        host.lock(lock, 0, LockMode::Exclusive, Duration::from_secs(5))
                            .map_err(|e| e.to_string())?;
                        host.unlock(lock).map_err(|e| e.to_string())?;
                    }
                    Ok(n as f64 / start.elapsed().as_secs_f64())
                }),
            },
            Subject {
                name: "raw CAS pairs".into(),
                run: Box::new(|| {
                    let mut cur = [0u8; 512];
                    dev.read_at(&mut cur, raw_sector)
                        .map_err(|e| e.to_string())?;
                    let start = Instant::now();
                    for i in 0..2 * n {
                        let mut next = cur;
                        next[100..108].copy_from_slice(&i.to_le_bytes());
                        match dev
                            .compare_and_write(raw_sector, &cur, &next)
                            .map_err(|e| e.to_string())?
                        {
                            CasOutcome::Done => cur = next,
                            other => return Err(format!("raw CAS: {other:?}")),
                        }
                    }
                    Ok(n as f64 / start.elapsed().as_secs_f64())
                }),
            },
        ],
    };
    rows.extend(run_case(case, cfg.repeats));
    host.leave().map_err(|e| e.to_string())?;
    rows.extend(heartbeat_cost(cfg)?);
    rows.extend(takeover(cfg)?);
    Ok(rows)
}

/// Device operations per beat while holding many locks.
fn heartbeat_cost(cfg: &Config) -> Result<Vec<Row>, String> {
    let t = Timeouts::scaled(1.0 / 30.0);
    let (_dir, file) = volume(cfg, t)?;
    let counting = Arc::new(Counting::new(file.clone()));
    let vol = Volume::open(counting.clone()).map_err(|e| e.to_string())?;
    let host = Host::join(vol.clone(), HostConfig::new("bench")).map_err(|e| e.to_string())?;
    let held: u64 = if cfg.quick { 1000 } else { 10_000 };
    // Inode lock records stand in for 10,000 open files.
    for ino in 2..2 + held {
        let a = vol.inode_addr(ino);
        file.write_at(&LockRecord::free(a, ino).encode(), a)
            .map_err(|e| e.to_string())?;
        host.try_lock(a, ino, LockMode::Exclusive)
            .map_err(|e| e.to_string())?
            .ok_or("lock busy")?;
        if ino % 100 == 0 {
            host.beat().map_err(|e| e.to_string())?;
        }
    }
    let beats = 20u64;
    let (r0, b0, w0, c0) = (
        counting.reads.load(Ordering::Relaxed),
        counting.read_bytes.load(Ordering::Relaxed),
        counting.writes.load(Ordering::Relaxed),
        counting.cas.load(Ordering::Relaxed),
    );
    for _ in 0..beats {
        host.beat().map_err(|e| e.to_string())?;
    }
    let per = |now: u64, before: u64| (now - before) as f64 / beats as f64;
    let reads = per(counting.reads.load(Ordering::Relaxed), r0);
    let bytes = per(counting.read_bytes.load(Ordering::Relaxed), b0);
    let writes = per(counting.writes.load(Ordering::Relaxed), w0);
    let cas = per(counting.cas.load(Ordering::Relaxed), c0);
    host.abandon();
    let mk = |name: &str, unit: &'static str, v: f64| {
        run_case(
            Case {
                suite: "locks",
                name: format!("per beat holding {held} locks: {name}"),
                unit,
                better: Better::Lower,
                baseline: "vmfs".into(),
                subjects: vec![Subject {
                    name: "vmfs".into(),
                    run: Box::new(move || Ok(v)),
                }],
            },
            1,
        )
    };
    let mut rows = mk("slot CAS", "ops", cas);
    rows.extend(mk("other writes", "ops", writes));
    rows.extend(mk("reads", "ops", reads));
    rows.extend(mk("bytes read", "bytes", bytes));
    Ok(rows)
}

/// Time from a holder's death to another host holding its lock.
fn takeover(cfg: &Config) -> Result<Vec<Row>, String> {
    let (t, label) = if cfg.quick {
        (
            Timeouts::scaled(1.0 / 30.0),
            "takeover, timeouts scaled 1/30 (D = 833 ms)",
        )
    } else {
        (
            Timeouts::from_minimums(&vmfs::format::TimeoutMinimums::default()),
            "takeover, default timeouts (D = 25 s)",
        )
    };
    let case = Case {
        suite: "locks",
        name: label.into(),
        unit: "s",
        better: Better::Lower,
        baseline: "vmfs".into(),
        subjects: vec![Subject {
            name: "vmfs".into(),
            run: Box::new(move || {
                let (_dir, dev) = volume(cfg, t)?;
                let vol = Volume::open(dev).map_err(|e| e.to_string())?;
                let l = vol.cluster_lock_addr(ResourceKind::FileBlock, 0);
                let a = Host::join(vol.clone(), HostConfig::new("a")).map_err(|e| e.to_string())?;
                let b = Host::join(vol, HostConfig::new("b")).map_err(|e| e.to_string())?;
                a.start();
                b.start();
                a.lock(l, 0, LockMode::Exclusive, Duration::from_secs(5))
                    .map_err(|e| e.to_string())?;
                std::thread::sleep(t.heartbeat * 2);
                let died = Instant::now();
                a.abandon();
                b.lock(l, 0, LockMode::Exclusive, t.dead_after * 4)
                    .map_err(|e| e.to_string())?;
                let took = died.elapsed().as_secs_f64();
                let _ = b.leave();
                Ok(took)
            }),
        }],
    };
    Ok(run_case(case, 1))
}

//! Crash-point sweep of the filesystem.
//!
//! A scripted workload (mkdir, create, write with and without fsync,
//! renames across directories and over existing files, hard links, unlink,
//! truncate, punch, rmdir, xattrs; files unlinked while open; a 66-block
//! file truncated and deleted, which takes several transactions and the
//! orphan table; an 8-block file under 8 pointer blocks, whose free does
//! not fit its unlink's transaction (listed on the orphan table first); small-block files promoted to file blocks by a write and
//! by a preallocation past the small-file limit; files left open) runs on
//! one host over a
//! recording `FaultDev(MemDev)`. From the write log, the image is rebuilt
//! at every flush boundary, and for each boundary also with a random
//! subset of the unflushed writes that follow it landing, with a torn
//! random subset landing, and with none of them but every
//! compare-and-write before the next flush. Each crash image is recovered
//! offline (`cluster::recover_offline`: the dead host's journal replayed,
//! its slot freed — waiting out D per state in real time would cost about
//! a second each), checked with `fs::check::check`, mounted on a fresh
//! host and compared with the model: the namespace is the one before or
//! after the operation in flight (renames all-or-nothing), every promised
//! (fsynced) file has exactly its content, hard links share an inode. The
//! volume is then used (the dead host's locks broken) and checked again.
//!
//! `VMFS_CRASH_SWEEP_VARIANTS=n` runs n random-subset and n torn states per
//! boundary (default 4); `VMFS_CRASH_SWEEP_ROUNDS=n` repeats the script n
//! times (default 2) before the sweep.

#[path = "crash_sweep/image.rs"]
mod image;
#[path = "crash_sweep/verify.rs"]
mod verify;
#[path = "crash_sweep/workload.rs"]
mod workload;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vmfs::dev::{CrashMode, FaultDev, LogEntry, MemDev, SharedDev};
use vmfs::volume::{minimum_size, mkfs, MkfsOptions};

use image::{apply, crash_writes, CowDev, Landing};
use workload::{Model, Recording};

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn options() -> MkfsOptions {
    MkfsOptions {
        label: "crash".into(),
        max_hosts: 4,
        journal_size: 1 << 20,
        inodes: Some(256),
        timeouts: verify::timeouts().to_minimums(),
        ..Default::default()
    }
}

/// Format, run the workload on a recording FaultDev, and crash at the end.
/// Returns the formatted image, the recording and the image left after
/// the crash (nothing unflushed landing).
fn record(rounds: u32) -> (Vec<u8>, Recording, Vec<u8>) {
    let o = options();
    let mem = Arc::new(MemDev::new(minimum_size(&o) + (96 << 20), 512));
    let shared: SharedDev = mem.clone();
    mkfs(&shared, &o, false).expect("mkfs");
    let formatted = mem.snapshot();
    let fault = Arc::new(FaultDev::new(shared, 7));
    fault.start_recording();
    let fs = verify::mount(fault.clone()).expect("mount the recording host");
    let rec = workload::run(fs.clone(), fault.clone(), rounds);
    // Power loss: the host never runs again.
    fault.crash(CrashMode::DropAll).expect("crash");
    (formatted, rec, mem.snapshot())
}

/// The models a crash after log entry `f` (None: before any) may show.
fn candidates(rec: &Recording, f: Option<usize>) -> Vec<Model> {
    let durable = |i: usize| match rec.last_flush(&rec.steps[i]) {
        Some(l) => f.is_some_and(|f| l <= f),
        // No flush: it promises nothing, its effect only weakens the model.
        None => true,
    };
    let Some(lo) = (0..rec.steps.len()).find(|&i| !durable(i)) else {
        return vec![rec
            .steps
            .last()
            .map_or(rec.start.clone(), |s| s.after.clone())];
    };
    let mut before = if lo == 0 {
        rec.start.clone()
    } else {
        rec.steps[lo - 1].after.clone()
    };
    for id in &rec.steps[lo].touched {
        if let Some(d) = before.data.get_mut(id) {
            *d = None;
        }
    }
    vec![before, rec.steps[lo].after.clone()]
}

#[test]
fn crash_at_every_flush_boundary_recovers_consistent_and_keeps_promises() {
    let variants = env("VMFS_CRASH_SWEEP_VARIANTS", 4);
    let rounds = env("VMFS_CRASH_SWEEP_ROUNDS", 2);
    let t0 = Instant::now();
    let (formatted, rec, crashed) = record(rounds);
    let flushes: Vec<usize> = (0..rec.log.len())
        .filter(|&i| rec.log[i] == LogEntry::Flush)
        .collect();
    println!(
        "workload: {} steps, {} log entries, {} flushes, recorded in {:?}",
        rec.steps.len(),
        rec.log.len(),
        flushes.len(),
        t0.elapsed()
    );

    // The rebuild from the log agrees with what the FaultDev left.
    let last = flushes.last().map_or(0, |&f| f + 1);
    let mut at_crash = formatted.clone();
    for (i, e) in rec.log.iter().enumerate() {
        if i < last || matches!(e, LogEntry::Cas { .. }) {
            apply(&mut at_crash, e);
        }
    }
    assert!(at_crash == crashed, "log rebuild differs from the FaultDev");

    let t1 = Instant::now();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut base = Arc::new(formatted);
    let (mut states, mut violations) = (0u64, Vec::new());
    for b in 0..=flushes.len() {
        let f = b.checked_sub(1).map(|i| flushes[i]);
        let from = f.map_or(0, |f| f + 1);
        let to = flushes.get(b).copied().unwrap_or(rec.log.len());
        let window = &rec.log[from..to];
        let cands = candidates(&rec, f);
        let mut plans = vec![(Landing::Nothing, 0)];
        if !window.is_empty() {
            plans.push((Landing::Nothing, window.len()));
            for _ in 0..variants {
                plans.push((Landing::RandomSubset, rng.gen_range(1..=window.len())));
                plans.push((Landing::Torn, rng.gen_range(1..=window.len())));
            }
        }
        for (landing, cut) in plans {
            states += 1;
            let dev = Arc::new(CowDev::new(base.clone()));
            let landed = crash_writes(window, cut, landing, &mut rng, dev.as_ref())
                .expect("read the crash image");
            dev.land(&landed);
            let dev: SharedDev = dev;
            let r = catch_unwind(AssertUnwindSafe(|| verify::recover_and_verify(dev, &cands)));
            let why = match r {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(p) => format!(
                    "panicked: {}",
                    p.downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| p.downcast_ref::<&str>().copied())
                        .unwrap_or("?")
                ),
            };
            let step = rec
                .steps
                .iter()
                .find(|s| s.end > from)
                .map_or("(after the workload)", |s| s.what.as_str());
            violations.push(format!(
                "boundary {b} (log {from}, during `{step}`), {landing:?} cut {cut}/{}: {why}",
                window.len()
            ));
        }
        // A mount's housekeeping thread may still hold the last crash
        // image for a moment: then this copies.
        let img = Arc::make_mut(&mut base);
        for e in window {
            apply(img, e);
        }
    }
    println!(
        "crash states explored: {states} ({} boundaries), violations: {}, sweep took {:?}",
        flushes.len() + 1,
        violations.len(),
        t1.elapsed()
    );
    for v in violations.iter().take(20) {
        println!("VIOLATION {v}");
    }
    assert!(violations.is_empty(), "{} violations", violations.len());
}

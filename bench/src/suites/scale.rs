//! `scale`: the heartbeat with every slot in use. 128 in-process hosts join
//! one volume (127 beat on their own threads at the default H = 3 s, the
//! measured one is beaten by hand) and together hold 10,000 locks (inode
//! lock records, spread evenly). Per beat of the measured host: device
//! operations, latency and CPU time, next to the I/O floor of a beat on the
//! same file (one raw slot compare-and-write plus one read of the region);
//! and the dead-host scan — reading the 128-slot region and judging 127
//! peers — next to the raw region read alone.
//!
//! `locks` measures one host holding 10,000 locks; this suite adds the
//! other 127 hosts (a larger region read and a busy device).

use std::sync::Arc;
use std::time::{Duration, Instant};

use vmfs::cluster::{read_region, Host, HostConfig, Observer, Timeouts, Verdict};
use vmfs::dev::{CasOutcome, SharedDev};
use vmfs::format::{LockMode, LockRecord, TimeoutMinimums, SECTOR};
use vmfs::volume::Volume;

use super::locks::{volume, Counting};
use crate::harness::{run_case, Better, Case, Row, Subject};
use crate::Config;

const HOSTS: u32 = 128;

/// User + system CPU time of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass and reads
    // nothing else; RUSAGE_THREAD is valid on Linux.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A figure measured once, as a row.
fn single(case: &str, subject: &str, unit: &'static str, v: f64) -> Vec<Row> {
    run_case(
        Case {
            suite: "scale",
            name: case.into(),
            unit,
            better: Better::Lower,
            baseline: subject.into(),
            subjects: vec![Subject {
                name: subject.into(),
                run: Box::new(move || Ok(v)),
            }],
        },
        1,
    )
}

/// Join host `name` on its own counting view of `file`.
fn join(file: &SharedDev, name: &str) -> Result<(Host, Arc<Counting>), String> {
    let counting = Arc::new(Counting::new(file.clone()));
    let vol = Volume::open(counting.clone()).map_err(|e| format!("{name}: {e}"))?;
    let mut cfg = HostConfig::new(name);
    cfg.join_timeout = Duration::from_secs(30);
    let h = Host::join(vol, cfg).map_err(|e| format!("join {name}: {e}"))?;
    Ok((h, counting))
}

pub fn run(cfg: &Config) -> Result<Vec<Row>, String> {
    let t = Timeouts::from_minimums(&TimeoutMinimums::default());
    let (_dir, file) = volume(cfg, t)?;
    let locks: u64 = if cfg.quick { 1_000 } else { 10_000 };
    let beats: usize = if cfg.quick { 10 } else { 50 };
    let started = Instant::now();
    let (me, counting) = join(&file, "measured")?;
    let mut peers = Vec::new();
    for i in 1..HOSTS {
        let (h, _) = join(&file, &format!("peer{i}"))?;
        h.start();
        peers.push(h);
    }
    let vol = me.volume().clone();
    // Locks spread over every host; the measured host beats as it goes so
    // its peers keep seeing it alive.
    for k in 0..locks {
        let ino = 2 + k;
        let a = vol.inode_addr(ino);
        file.write_at(&LockRecord::free(a, ino).encode(), a)
            .map_err(|e| e.to_string())?;
        let owner = (k % u64::from(HOSTS)) as usize;
        let h = if owner == 0 { &me } else { &peers[owner - 1] };
        h.try_lock(a, ino, LockMode::Exclusive)
            .map_err(|e| format!("lock {ino}: {e}"))?
            .ok_or_else(|| format!("lock {ino} busy"))?;
        if k % 200 == 0 {
            me.beat().map_err(|e| e.to_string())?;
        }
    }
    eprintln!(
        "bench: scale: {HOSTS} hosts joined, {locks} locks held in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    me.beat().map_err(|e| e.to_string())?;

    // I/O and CPU per beat of the measured host.
    let before = counting.totals();
    let cpu0 = thread_cpu();
    for _ in 0..beats {
        me.beat().map_err(|e| e.to_string())?;
    }
    let cpu = (thread_cpu() - cpu0).as_secs_f64() * 1e6 / beats as f64;
    let after = counting.totals();
    let per = |i: usize| (after[i] - before[i]) as f64 / beats as f64;
    let label = format!("per beat, {HOSTS} hosts joined, {locks} locks held");
    let mut rows = Vec::new();
    rows.extend(single(&format!("{label}: slot CAS"), "vmfs", "ops", per(3)));
    rows.extend(single(
        &format!("{label}: other writes"),
        "vmfs",
        "ops",
        per(2),
    ));
    rows.extend(single(&format!("{label}: reads"), "vmfs", "ops", per(0)));
    rows.extend(single(
        &format!("{label}: bytes read"),
        "vmfs",
        "bytes",
        per(1),
    ));
    rows.extend(single(&format!("{label}: CPU"), "vmfs", "µs", cpu));

    // Beat latency against its I/O floor on the same file.
    let region = u64::from(HOSTS) * SECTOR as u64;
    let hb = vol.header.heartbeat_offset;
    let spare = vol.cluster_lock_addr(vmfs::format::ResourceKind::FileBlock, 1);
    let mut cur = [0u8; SECTOR];
    file.read_at(&mut cur, spare).map_err(|e| e.to_string())?;
    let mut i = 0u64;
    let raw_file = file.clone();
    let floor = "raw slot CAS + region read";
    rows.extend(run_case(
        Case {
            suite: "scale",
            name: format!("beat latency, {HOSTS} hosts joined, {locks} locks held"),
            unit: "ms",
            better: Better::Lower,
            baseline: floor.into(),
            subjects: vec![
                Subject {
                    name: "vmfs beat".into(),
                    run: Box::new(|| {
                        let t = Instant::now();
                        me.beat().map_err(|e| e.to_string())?;
                        Ok(t.elapsed().as_secs_f64() * 1e3)
                    }),
                },
                Subject {
                    name: floor.into(),
                    run: Box::new(move || {
                        i += 1;
                        let mut next = cur;
                        next[100..108].copy_from_slice(&i.to_le_bytes());
                        let mut buf = vec![0u8; region as usize];
                        let t = Instant::now();
                        match raw_file
                            .compare_and_write(spare, &cur, &next)
                            .map_err(|e| e.to_string())?
                        {
                            CasOutcome::Done => cur = next,
                            other => return Err(format!("raw CAS: {other:?}")),
                        }
                        raw_file.read_at(&mut buf, hb).map_err(|e| e.to_string())?;
                        Ok(t.elapsed().as_secs_f64() * 1e3)
                    }),
                },
            ],
        },
        beats,
    ));

    // The dead-host scan: read the region and judge every peer.
    let min_dead = t.dead_after;
    let mut observer = Observer::default();
    let clock = Instant::now();
    let mut live_seen = 0usize;
    let scan_file = file.clone();
    rows.extend(run_case(
        Case {
            suite: "scale",
            name: format!("dead-host scan of {} peers", HOSTS - 1),
            unit: "µs",
            better: Better::Lower,
            baseline: "raw region read".into(),
            subjects: vec![
                Subject {
                    name: "vmfs scan (read + judge)".into(),
                    run: Box::new(|| {
                        let t = Instant::now();
                        let issued = clock.elapsed();
                        let slots = read_region(&vol).map_err(|e| e.to_string())?;
                        let completed = clock.elapsed();
                        let mut live = 0;
                        for (k, s) in slots.iter().enumerate().skip(1) {
                            let s = s.as_ref().map_err(|e| format!("slot {k}: {e}"))?;
                            if observer.observe(k as u32, s, issued, completed, min_dead)
                                == Verdict::Live
                            {
                                live += 1;
                            }
                        }
                        let us = t.elapsed().as_secs_f64() * 1e6;
                        live_seen = live;
                        Ok(us)
                    }),
                },
                Subject {
                    name: "raw region read".into(),
                    run: Box::new(move || {
                        let mut buf = vec![0u8; region as usize];
                        let t = Instant::now();
                        scan_file.read_at(&mut buf, hb).map_err(|e| e.to_string())?;
                        Ok(t.elapsed().as_secs_f64() * 1e6)
                    }),
                },
            ],
        },
        beats,
    ));
    if live_seen != HOSTS as usize - 1 {
        return Err(format!(
            "the scan judged {live_seen} of {} peers live",
            HOSTS - 1
        ));
    }
    // Stop every host at once: each waits out its heartbeat thread's sleep
    // (up to H), which one after another would take minutes.
    std::thread::scope(|s| {
        s.spawn(move || me.abandon());
        for p in peers {
            s.spawn(move || p.abandon());
        }
    });
    Ok(rows)
}

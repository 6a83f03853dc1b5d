//! Deterministic multi-host simulation of the heartbeat and lock protocol.
//!
//! 2–16 hosts in one process, each with its own clock (drifting ±1%) and its
//! own `FaultDev` (volatile write cache, lost compare-and-write responses,
//! device loss) over one shared in-memory disk. A seeded scheduler
//! interleaves beats, lock requests, releases, pauses shorter and longer
//! than D, crashes (unflushed writes dropped or torn) and restarts. After
//! every step it checks:
//! - never two hosts that could issue I/O right now believe they hold one
//!   lock in conflicting modes;
//! - `lock_gen` and `hb_gen` never decrease on disk;
//! - a lock record with a bad CRC is never granted;
//! - at the end, a lone survivor holds every lock within D + a few H.
//!
//! `VMFS_SIM_SEEDS=N` runs N seeds (default 500); `VMFS_SIM_SEED=S` replays one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vmfs::cluster::{Clock, ClusterError, Host, HostConfig, ManualClock, Timeouts};
use vmfs::dev::{BlockDev, CrashMode, FaultDev, MemDev, SharedDev};
use vmfs::format::{HeartbeatSlot, LockMode, LockRecord, ResourceKind};
use vmfs::volume::{mkfs, MkfsOptions, Volume};

const MAX_HOSTS: u32 = 32;
const LOCKS: u32 = 6;

struct SimHost {
    clock: Arc<ManualClock>,
    rate: f64,
    fault: Arc<FaultDev>,
    host: Option<Host>,
    uuid: [u8; 16],
    paused_until: Option<Duration>,
    next_beat: Duration,
    device_lost_until: Option<Duration>,
}

fn template() -> Vec<u8> {
    let mem: SharedDev = Arc::new(MemDev::new(160 << 20, 512));
    mkfs(
        &mem,
        &MkfsOptions {
            label: "sim".into(),
            max_hosts: MAX_HOSTS,
            journal_size: 1 << 20,
            timeouts: Timeouts::scaled(1.0 / 30.0).to_minimums(),
            ..Default::default()
        },
        false,
    )
    .unwrap();
    let mut b = vec![0u8; 160 << 20];
    mem.read_at(&mut b, 0).unwrap();
    b
}

fn conflicts(a: LockMode, b: LockMode) -> bool {
    !matches!(
        (a, b),
        (LockMode::SharedRead, LockMode::SharedRead)
            | (LockMode::MultiWriter, LockMode::MultiWriter)
    )
}

fn join(h: &mut SimHost, disk: &Arc<MemDev>) -> Option<Host> {
    let _ = disk;
    let mut cfg = HostConfig::new("sim");
    // A restarted host process that reuses its identity would (rightly) wait
    // up to D in real time to tell a dead namesake from a live twin; the
    // simulation cannot move time during a call, so each incarnation gets
    // a fresh identity.
    h.uuid = rand::random();
    cfg.host_uuid = h.uuid;
    cfg.join_timeout = Duration::from_millis(50);
    cfg.clock = h.clock.clone();
    let vol = Volume::open(h.fault.clone()).ok()?;
    Host::join(vol, cfg).ok()
}

/// Run one seed; Err describes the first invariant violation.
fn run(seed: u64, image: &[u8]) -> Result<String, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let t = Timeouts::scaled(1.0 / 30.0);
    let disk = Arc::new(MemDev::from_bytes(image.to_vec(), 512));
    let vol0 = Volume::open(disk.clone()).unwrap();
    let locks: Vec<u64> = (0..LOCKS)
        .map(|c| vol0.cluster_lock_addr(ResourceKind::Inode, c))
        .collect();
    // One lock record is corrupt: it must never be granted.
    let corrupt = vol0.cluster_lock_addr(ResourceKind::Inode, LOCKS);
    disk.write_at(&[0xa5u8; 512], corrupt).unwrap();

    let n = rng.gen_range(2..=16usize);
    let mut hosts: Vec<SimHost> = (0..n)
        .map(|i| {
            let fault = Arc::new(FaultDev::new(
                disk.clone(),
                seed.wrapping_mul(1000) + i as u64,
            ));
            fault.set_cas_indeterminate(0.03);
            SimHost {
                clock: Arc::new(ManualClock::new(Duration::from_secs(
                    rng.gen_range(0..100_000),
                ))),
                rate: rng.gen_range(0.99..1.01),
                fault,
                host: None,
                uuid: rng.gen(),
                paused_until: None,
                next_beat: Duration::ZERO,
                device_lost_until: None,
            }
        })
        .collect();
    for h in hosts.iter_mut() {
        h.host = join(h, &disk);
        h.next_beat = h.clock.now();
    }
    let dt = t.heartbeat / 4;
    let mut now = Duration::ZERO;
    let mut max_lock_gen: HashMap<u64, u64> = HashMap::new();
    let mut max_hb_gen: HashMap<u32, u64> = HashMap::new();
    let steps = 400;
    let mut stats = (0u64, 0u64, 0u64); // grants, breaks, fences
    for step in 0..steps {
        now += dt;
        for h in hosts.iter_mut() {
            h.clock
                .advance(Duration::from_secs_f64(dt.as_secs_f64() * h.rate));
        }
        let order: Vec<usize> = {
            let mut o: Vec<usize> = (0..n).collect();
            for i in (1..o.len()).rev() {
                o.swap(i, rng.gen_range(0..=i));
            }
            o
        };
        for &i in &order {
            let h = &mut hosts[i];
            if let Some(until) = h.paused_until {
                if now < until {
                    continue;
                }
                h.paused_until = None;
            }
            if let Some(until) = h.device_lost_until {
                if now >= until {
                    h.fault.clear_faults();
                    h.device_lost_until = None;
                }
            }
            let Some(host) = h.host.clone() else {
                // Crashed: restart sometimes.
                if rng.gen_bool(0.05) {
                    h.host = join(h, &disk);
                    h.next_beat = h.clock.now();
                }
                continue;
            };
            if host.is_fenced() {
                // The embedder drops the fenced incarnation and rejoins.
                host.abandon();
                let _ = h.fault.crash(CrashMode::DropAll);
                h.host = None;
                stats.2 += 1;
                continue;
            }
            if h.clock.now() >= h.next_beat {
                let _ = host.beat();
                h.next_beat = h.clock.now() + t.heartbeat;
            }
            let r: f64 = rng.gen();
            if r < 0.30 {
                let l = locks[rng.gen_range(0..locks.len())];
                let mode = [
                    LockMode::Exclusive,
                    LockMode::SharedRead,
                    LockMode::MultiWriter,
                ][rng.gen_range(0..3)];
                if let Ok(Some(_)) = host.try_lock(l, 0, mode) {
                    stats.0 += 1;
                }
            } else if r < 0.45 {
                let held = host.held_locks();
                if !held.is_empty() {
                    let _ = host.unlock(held[rng.gen_range(0..held.len())].addr);
                }
            } else if r < 0.46 {
                // Must fail with Corrupt (never granted, never treated as free).
                match host.try_lock(corrupt, 0, LockMode::Exclusive) {
                    Err(ClusterError::Corrupt(_))
                    | Err(ClusterError::Fenced(_))
                    | Err(ClusterError::Device(_)) => {}
                    other => {
                        return Err(format!(
                            "step {step}: corrupt lock record: host {i} got {other:?}"
                        ));
                    }
                }
            } else if r < 0.465 {
                // Pause: shorter or longer than D.
                let d =
                    Duration::from_secs_f64(t.dead_after.as_secs_f64() * rng.gen_range(0.2..2.5));
                h.paused_until = Some(now + d);
            } else if r < 0.47 {
                // Crash: unflushed writes dropped, a prefix, a random subset, or torn.
                host.abandon();
                let mode = [CrashMode::DropAll, CrashMode::RandomSubset, CrashMode::Torn]
                    [rng.gen_range(0..3)];
                let _ = h.fault.crash(mode);
                h.host = None;
            } else if r < 0.472 {
                // Device loss for a while.
                h.fault.fail_all(true);
                h.device_lost_until = Some(
                    now + Duration::from_secs_f64(
                        t.dead_after.as_secs_f64() * rng.gen_range(0.1..2.0),
                    ),
                );
            } else if r < 0.475 {
                let _ = host.clone().leave();
                h.host = None;
            }
            check(
                &hosts,
                &locks,
                &disk,
                &vol0,
                &mut max_lock_gen,
                &mut max_hb_gen,
            )
            .map_err(|e| format!("step {step} after host {i}: {e}"))?;
        }
    }
    // Lone survivor: everybody else dies; one host must get every lock
    // within D + a few H.
    let survivor = (0..n).find(|&i| {
        hosts[i].paused_until.is_none()
            && hosts[i].device_lost_until.is_none()
            && hosts[i]
                .host
                .as_ref()
                .is_some_and(|h| h.check_fence().is_ok())
    });
    let s = survivor.unwrap_or(0);
    for (i, h) in hosts.iter_mut().enumerate() {
        if i != s {
            if let Some(host) = h.host.take() {
                host.abandon();
            }
        }
    }
    if survivor.is_none() {
        let h = &mut hosts[0];
        if let Some(old) = h.host.take() {
            old.abandon();
        }
        h.fault.clear_faults();
        let _ = h.fault.crash(CrashMode::DropAll);
        h.host = join(h, &disk);
        h.next_beat = h.clock.now();
        if h.host.is_none() {
            return Err("no host could rejoin at the end".into());
        }
    }
    let h = &mut hosts[s];
    h.fault.clear_faults();
    h.fault.set_cas_indeterminate(0.0);
    h.paused_until = None;
    let host = h.host.clone().expect("survivor");
    let start = h.clock.now();
    let limit = t.dead_after + t.heartbeat * 6;
    let mut got = 0;
    while h.clock.now().saturating_sub(start) <= limit {
        h.clock.advance(dt);
        if h.clock.now() >= h.next_beat {
            host.beat().map_err(|e| format!("survivor beat: {e}"))?;
            h.next_beat = h.clock.now() + t.heartbeat;
        }
        got = 0;
        for &l in &locks {
            if let Ok(Some(_)) = host.try_lock(l, 0, LockMode::Exclusive) {
                got += 1;
            }
        }
        if got == locks.len() {
            break;
        }
    }
    if got != locks.len() {
        return Err(format!(
            "lone survivor held {got} of {} locks after {:?} (limit D + 6H = {limit:?})",
            locks.len(),
            h.clock.now().saturating_sub(start)
        ));
    }
    stats.1 = 0;
    Ok(format!(
        "hosts {n}, grants {}, fenced incarnations {}",
        stats.0, stats.2
    ))
}

fn check(
    hosts: &[SimHost],
    locks: &[u64],
    disk: &MemDev,
    vol: &Volume,
    max_lock_gen: &mut HashMap<u64, u64>,
    max_hb_gen: &mut HashMap<u32, u64>,
) -> Result<(), String> {
    // Who could act on a lock right now, and in which mode?
    for &l in locks {
        let mut acting: Vec<(usize, LockMode)> = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            if h.paused_until.is_some() {
                continue;
            }
            let Some(host) = &h.host else { continue };
            if host.check_fence().is_err() {
                continue;
            }
            if let Some(held) = host.held(l) {
                acting.push((i, held.mode));
            }
        }
        for a in 0..acting.len() {
            for b in a + 1..acting.len() {
                if conflicts(acting[a].1, acting[b].1) {
                    return Err(format!(
                        "lock {l}: host {} ({:?}) and host {} ({:?}) both hold it",
                        acting[a].0, acting[a].1, acting[b].0, acting[b].1
                    ));
                }
            }
        }
        let mut b = [0u8; 512];
        disk.read_at(&mut b, l).unwrap();
        let rec = LockRecord::decode(&b, l).map_err(|e| format!("lock {l} damaged: {e}"))?;
        let m = max_lock_gen.entry(l).or_insert(0);
        if rec.lock_gen < *m {
            return Err(format!(
                "lock {l}: lock_gen went back from {m} to {}",
                rec.lock_gen
            ));
        }
        *m = rec.lock_gen;
    }
    for slot in 0..MAX_HOSTS {
        let a = vol.heartbeat_slot_addr(slot);
        let mut b = [0u8; 512];
        disk.read_at(&mut b, a).unwrap();
        let s = HeartbeatSlot::decode(&b, a).map_err(|e| format!("slot {slot} damaged: {e}"))?;
        let m = max_hb_gen.entry(slot).or_insert(0);
        if s.hb_gen < *m {
            return Err(format!(
                "slot {slot}: hb_gen went back from {m} to {}",
                s.hb_gen
            ));
        }
        *m = s.hb_gen;
    }
    Ok(())
}

#[test]
fn lock_protocol_simulation() {
    let image = template();
    let seeds: Vec<u64> = match std::env::var("VMFS_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("VMFS_SIM_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("VMFS_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(500);
            (0..n).collect()
        }
    };
    let start = std::time::Instant::now();
    let mut failures = Vec::new();
    for &seed in &seeds {
        match run(seed, &image) {
            Ok(summary) => {
                if seeds.len() == 1 {
                    println!("seed {seed}: {summary}");
                }
            }
            Err(e) => {
                println!(
                    "seed {seed} FAILED: {e}\n  replay: VMFS_SIM_SEED={seed} cargo test -p vmfs --release --test lock_simulation -- --nocapture"
                );
                failures.push(seed);
            }
        }
    }
    println!(
        "{} seeds in {:.1?}, {} failed",
        seeds.len(),
        start.elapsed(),
        failures.len()
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

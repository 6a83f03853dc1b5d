//! `vmfs hosts`: every heartbeat slot in use, with a live/silent verdict
//! from two reads of the region (read-only, no slot needed).

use std::time::{Duration, Instant};

use vmfs::cluster::read_region;
use vmfs::format::header::uuid_string;
use vmfs::format::SlotState;
use vmfs::volume::Volume;

use crate::device::open_device;

#[derive(clap::Args, Debug)]
pub struct HostsArgs {
    /// Image file, block device, or iscsi://HOST[:PORT]/IQN/LUN holding the volume.
    pub device: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Also list FREE slots.
    #[arg(long)]
    pub all: bool,
    /// Seconds between the two samples (default: twice the longest
    /// advertised heartbeat interval, at most 10).
    #[arg(long)]
    pub wait: Option<f64>,
}

fn state_name(s: SlotState) -> &'static str {
    match s {
        SlotState::Free => "free",
        SlotState::Live => "live",
        SlotState::Recovering => "recovering",
        SlotState::CleanExit => "clean-exit",
    }
}

pub fn run(a: &HostsArgs) -> Result<(), String> {
    let dev = open_device(&a.device, None, true)?;
    let vol = Volume::open(dev).map_err(|e| e.to_string())?;
    let first = read_region(&vol).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let max_interval = first
        .iter()
        .flatten()
        .filter(|s| s.state == SlotState::Live)
        .map(|s| s.interval_ms)
        .max();
    let wait = match (a.wait, max_interval) {
        (Some(w), _) if w.is_finite() && w >= 0.0 => Duration::from_secs_f64(w.min(600.0)),
        (Some(w), _) => return Err(format!("--wait {w}: give a number of seconds")),
        (None, Some(ms)) => Duration::from_millis(u64::from(ms) * 2).min(Duration::from_secs(10)),
        (None, None) => Duration::ZERO,
    };
    std::thread::sleep(wait);
    let second = read_region(&vol).map_err(|e| e.to_string())?;
    let watched = t0.elapsed();
    let mut rows = Vec::new();
    for (i, (x, y)) in first.iter().zip(&second).enumerate() {
        let (x, y) = match (x, y) {
            (Ok(x), Ok(y)) => (x, y),
            (_, Err(e)) | (Err(e), _) => {
                rows.push(
                    serde_json::json!({"slot": i, "state": "damaged", "error": e.to_string()}),
                );
                continue;
            }
        };
        if y.state == SlotState::Free && !a.all {
            continue;
        }
        let verdict = match y.state {
            SlotState::Live if x.hb_gen != y.hb_gen || x.counter != y.counter => "alive",
            SlotState::Live if wait.is_zero() => "not sampled",
            SlotState::Live if watched >= Duration::from_millis(u64::from(y.dead_after_ms)) => {
                "dead (silent longer than its dead-after)"
            }
            SlotState::Live => "silent (not beating while watched)",
            SlotState::Recovering => "being recovered",
            SlotState::CleanExit => "left cleanly",
            SlotState::Free => "free",
        };
        rows.push(serde_json::json!({
            "slot": i,
            "state": state_name(y.state),
            "verdict": verdict,
            "host_name": y.host_name,
            "host_uuid": uuid_string(&y.host_uuid),
            "hb_gen": y.hb_gen,
            "counter": y.counter,
            "heartbeat_ms": y.interval_ms,
            "dead_after_ms": y.dead_after_ms,
            "recoverer_slot": y.recoverer.map(|r| r.slot),
        }));
    }
    if a.json {
        let j = serde_json::json!({"volume": vol.header.label, "watched_ms": watched.as_millis() as u64, "slots": rows});
        println!(
            "{}",
            serde_json::to_string_pretty(&j).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!(
        "volume '{}': {} slots, watched for {:.1?}",
        vol.header.label, vol.header.max_hosts, watched
    );
    println!(
        "{:>5} {:<11} {:<20} {:>8} {:>10}  {:<36}  verdict",
        "slot", "state", "host", "hb_gen", "counter", "uuid"
    );
    for r in &rows {
        if r["state"] == "damaged" {
            println!(
                "{:>5} DAMAGED: {}",
                r["slot"],
                r["error"].as_str().unwrap_or("")
            );
            continue;
        }
        println!(
            "{:>5} {:<11} {:<20} {:>8} {:>10}  {:<36}  {}",
            r["slot"],
            r["state"].as_str().unwrap_or(""),
            r["host_name"].as_str().unwrap_or(""),
            r["hb_gen"],
            r["counter"],
            r["host_uuid"].as_str().unwrap_or(""),
            r["verdict"].as_str().unwrap_or("")
        );
    }
    if rows.is_empty() {
        println!("  (no host has joined this volume)");
    }
    Ok(())
}

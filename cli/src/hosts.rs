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

/// Two reads of the heartbeat region `wait` apart (default: twice the
/// longest advertised heartbeat interval, at most 10 s): one row per slot in
/// use (every slot with `all`), with a verdict, and how long it watched.
pub fn sample(
    vol: &Volume,
    wait: Option<f64>,
    all: bool,
) -> Result<(Vec<serde_json::Value>, Duration), String> {
    let first = read_region(vol).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let max_interval = first
        .iter()
        .flatten()
        .filter(|s| s.state == SlotState::Live)
        .map(|s| s.interval_ms)
        .max();
    let wait = match (wait, max_interval) {
        (Some(w), _) if w.is_finite() && w >= 0.0 => Duration::from_secs_f64(w.min(600.0)),
        (Some(w), _) => return Err(format!("--wait {w}: give a number of seconds")),
        (None, Some(ms)) => Duration::from_millis(u64::from(ms) * 2).min(Duration::from_secs(10)),
        (None, None) => Duration::ZERO,
    };
    std::thread::sleep(wait);
    let second = read_region(vol).map_err(|e| e.to_string())?;
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
        if y.state == SlotState::Free && !all {
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
    Ok((rows, watched))
}

pub fn run(a: &HostsArgs) -> Result<(), String> {
    let dev = open_device(&a.device, None, true)?;
    let vol = Volume::open(dev).map_err(|e| e.to_string())?;
    let (rows, watched) = sample(&vol, a.wait, a.all)?;
    let slots = read_region(&vol).map_err(|e| e.to_string())?;
    let swap = swap_view(&vol, &slots);
    if a.json {
        let j = serde_json::json!({"volume": vol.header.label, "watched_ms": watched.as_millis() as u64, "slots": rows,
            "swap_files": swap.files, "swap_reclaimed": swap.reclaims});
        println!(
            "{}",
            serde_json::to_string_pretty(&j).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    print_table(&vol, &rows, watched);
    print_swap(&swap);
    Ok(())
}

/// The human-readable table of [`sample`]'s rows.
pub fn print_table(vol: &Volume, rows: &[serde_json::Value], watched: Duration) {
    println!(
        "volume '{}': {} slots, watched for {:.1?}",
        vol.header.label, vol.header.max_hosts, watched
    );
    println!(
        "{:>5} {:<11} {:<20} {:>8} {:>10}  {:<36}  verdict",
        "slot", "state", "host", "hb_gen", "counter", "uuid"
    );
    for r in rows {
        if r["state"] == "damaged" {
            println!(
                "{:>5} DAMAGED: {}",
                r["slot"].to_string(),
                r["error"].as_str().unwrap_or("")
            );
            continue;
        }
        println!(
            "{:>5} {:<11} {:<20} {:>8} {:>10}  {:<36}  {}",
            r["slot"].to_string(),
            r["state"].as_str().unwrap_or(""),
            r["host_name"].as_str().unwrap_or(""),
            r["hb_gen"].to_string(),
            r["counter"].to_string(),
            r["host_uuid"].as_str().unwrap_or(""),
            r["verdict"].as_str().unwrap_or("")
        );
    }
    if rows.is_empty() {
        println!("  (no host has joined this volume)");
    }
}

/// What the swap registry (`/.vmfs-swap`) says, read straight from the
/// device: each registered swap file with its holder, and recent reclaims.
struct SwapView {
    files: Vec<serde_json::Value>,
    reclaims: Vec<String>,
}

fn swap_view(
    vol: &Volume,
    slots: &[Result<vmfs::format::HeartbeatSlot, vmfs::format::FormatError>],
) -> SwapView {
    use vmfs::disk::swap::{parse_name, RECLAIM_LOG, REGISTRY_DIR};
    use vmfs::fs::offline::{list_dir, read_file, resolve_path};
    let mut view = SwapView {
        files: Vec::new(),
        reclaims: Vec::new(),
    };
    let Ok(dir) = resolve_path(vol, REGISTRY_DIR) else {
        return view;
    };
    let Ok(entries) = list_dir(vol, dir) else {
        return view;
    };
    for (name, ino) in entries {
        let name = String::from_utf8_lossy(&name).into_owned();
        if name == RECLAIM_LOG {
            if let Ok(text) = read_file(vol, ino, 1 << 20) {
                let text = String::from_utf8_lossy(&text).into_owned();
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(10);
                view.reclaims = lines[from..].iter().map(|l| l.to_string()).collect();
            }
            continue;
        }
        let Some(h) = parse_name(&name) else { continue };
        let target = read_file(vol, ino, 4096)
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .unwrap_or_default();
        let live = matches!(
            slots.get(usize::from(h.slot)),
            Some(Ok(s)) if s.hb_gen == h.hb_gen && s.state != SlotState::Free
        );
        view.files.push(serde_json::json!({
            "slot": h.slot,
            "hb_gen": h.hb_gen,
            "path": target,
            "status": if live { "holder's incarnation current: held, or dead and not yet recovered" } else { "holder gone: awaiting reclaim" },
        }));
    }
    view
}

fn print_swap(v: &SwapView) {
    if !v.files.is_empty() {
        println!("swap files (registry /.vmfs-swap):");
        for f in &v.files {
            println!(
                "  slot {:>3} gen {:>6}  {}  ({})",
                f["slot"],
                f["hb_gen"],
                f["path"].as_str().unwrap_or(""),
                f["status"].as_str().unwrap_or("")
            );
        }
    }
    if !v.reclaims.is_empty() {
        println!("swap files reclaimed from dead hosts (most recent last):");
        for l in &v.reclaims {
            println!("  {l}");
        }
    }
}

//! `vmfs status`: one look at a datastore — the hosts on it and whether they
//! are alive, the locks held and the files they protect (open disks and
//! swap files), capacity and thin-provisioning savings, and the services a
//! `vmfs up` on this data directory runs. Read-only, no slot needed.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use vmfs::volume::{Volume, ROOT_INO};

use crate::device::open_device;
use crate::units::human;
use crate::up::config::DEFAULT_DIR;
use crate::up::state::UpState;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Image file or block device (default: the image of the `vmfs up` in DIR).
    pub device: Option<String>,
    /// Data directory of `vmfs up`, for its services.
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Seconds to watch heartbeats (default: twice the longest interval, at most 10).
    #[arg(long)]
    pub wait: Option<f64>,
}

/// Paths of every inode the walk reached, from the directory entries.
fn paths(model: &vmfs::fs::check::Model) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    out.insert(ROOT_INO, "/".to_string());
    let mut queue = vec![ROOT_INO];
    while let Some(dir) = queue.pop() {
        let base = out.get(&dir).cloned().unwrap_or_default();
        for e in model.entries.get(&dir).into_iter().flatten() {
            if e.name == b"." || e.name == b".." || out.contains_key(&e.ino) {
                continue;
            }
            let p = format!(
                "{}{}{}",
                base,
                if base.ends_with('/') { "" } else { "/" },
                String::from_utf8_lossy(&e.name)
            );
            out.insert(e.ino, p);
            if model.entries.contains_key(&e.ino) {
                queue.push(e.ino);
            }
        }
    }
    out
}

fn is_disk_file(path: &str) -> bool {
    path.ends_with(".vmdk") || path.ends_with(".vswp")
}

pub fn run(a: &StatusArgs) -> Result<(), String> {
    let up = UpState::read(&a.dir).unwrap_or(None);
    let device = match (&a.device, &up) {
        (Some(d), _) => d.clone(),
        (None, Some(s)) => s.image.display().to_string(),
        (None, None) => {
            let img = a.dir.join("datastore.img");
            if !img.exists() {
                return Err(format!(
                    "no DEVICE given and no datastore in {} (run `vmfs up` first, or name the image)",
                    a.dir.display()
                ));
            }
            img.display().to_string()
        }
    };
    let dev = open_device(&device, None, true)?;
    let vol = Volume::open(dev).map_err(|e| format!("{device}: {e}"))?;
    let h = &vol.header;
    let space = vol.space().map_err(|e| format!("{device}: {e}"))?;
    let (hosts, watched) = crate::hosts::sample(&vol, a.wait, false)?;
    let locks = crate::locks::collect_all(&vol)?;
    let (report, model) =
        vmfs::fs::check::walk(&vol).map_err(|e| format!("{device}: reading the file tree: {e}"))?;
    let names = paths(&model);

    let fb = &space.file_blocks;
    let block = u64::from(fb.resource_size);
    let used = (fb.total - fb.free) * block;
    let mut provisioned = 0u64;
    let mut allocated = 0u64;
    let mut files = 0u64;
    for i in model.inodes.values() {
        if i.mode & libc::S_IFMT == libc::S_IFREG {
            let at = vmfs::fs::Attr::of(i, &vol);
            provisioned += at.size;
            allocated += at.allocated;
            files += 1;
        }
    }
    let backing = std::fs::metadata(&device)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| serde_json::json!({"size": m.len(), "allocated": m.blocks() * 512}));

    let slot_names: BTreeMap<u64, String> = hosts
        .iter()
        .filter_map(|r| Some((r["slot"].as_u64()?, r["host_name"].as_str()?.to_string())))
        .collect();
    let mut open_files = Vec::new();
    let mut by_mode: BTreeMap<String, u64> = BTreeMap::new();
    for l in &locks {
        *by_mode
            .entry(l["mode"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        let Some(ino) = l["ino"].as_u64() else {
            continue;
        };
        let path = names
            .get(&ino)
            .cloned()
            .unwrap_or_else(|| format!("(inode {ino})"));
        let holders: Vec<String> = l["holders"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                let slot = x["slot"].as_u64().unwrap_or(u64::MAX);
                match slot_names.get(&slot) {
                    Some(n) => format!("{n} (slot {slot})"),
                    None => format!("slot {slot}"),
                }
            })
            .collect();
        open_files.push(serde_json::json!({
            "path": path,
            "ino": ino,
            "mode": l["mode"],
            "holders": holders,
            "disk": is_disk_file(&path),
        }));
    }
    let services = match &up {
        Some(s) => serde_json::json!({
            "pid": s.pid,
            "running": s.process_alive(),
            "services": s.services,
        }),
        None => serde_json::Value::Null,
    };
    let j = serde_json::json!({
        "volume": {
            "label": h.label,
            "uuid": h.uuid_string(),
            "device": device,
            "capacity": h.volume_size,
            "block_size": block,
            "used": used,
            "free": space.free_bytes(),
            "inodes_total": space.inodes.total,
            "inodes_free": space.inodes.free,
            "consistent": report.findings.is_empty(),
        },
        "thin": {
            "files": files,
            "provisioned": provisioned,
            "allocated": allocated,
            "savings": provisioned.saturating_sub(allocated),
            "backing": backing,
        },
        "hosts": hosts,
        "watched_ms": watched.as_millis() as u64,
        "locks": by_mode,
        "open_files": open_files,
        "up": services,
    });
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&j).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!("volume '{}' {} on {device}", h.label, h.uuid_string());
    println!(
        "  capacity {}, used {}, free {} ({} blocks)",
        human(h.volume_size),
        human(used),
        human(space.free_bytes()),
        human(block)
    );
    println!(
        "  thin: {files} files provisioned {}, allocated {}, saving {}",
        human(provisioned),
        human(allocated),
        human(provisioned.saturating_sub(allocated))
    );
    if let Some(b) = &j["thin"]["backing"].as_object() {
        println!(
            "  backing image: {} apparent, {} on the host's disk",
            human(b["size"].as_u64().unwrap_or(0)),
            human(b["allocated"].as_u64().unwrap_or(0))
        );
    }
    if !report.findings.is_empty() {
        println!(
            "  WARNING: {} inconsistencies seen while walking (hosts may be mid-update; run vmfs-fsck on a quiet volume)",
            report.findings.len()
        );
    }
    crate::hosts::print_table(&vol, &hosts, watched);
    let summary: Vec<String> = by_mode.iter().map(|(m, n)| format!("{n} {m}")).collect();
    println!(
        "locks: {}",
        if summary.is_empty() {
            "none".to_string()
        } else {
            summary.join(", ")
        }
    );
    for f in &open_files {
        println!(
            "  {:<40} {:<13} {}{}",
            f["path"].as_str().unwrap_or(""),
            f["mode"].as_str().unwrap_or(""),
            f["holders"]
                .as_array()
                .map(|v| v
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
            if f["disk"] == true { "  [disk]" } else { "" }
        );
    }
    match &up {
        None => println!("services: no `vmfs up` state in {}", a.dir.display()),
        Some(s) if !s.process_alive() => println!(
            "services: `vmfs up` (pid {}) is not running (stale {})",
            s.pid,
            a.dir.join(crate::up::state::STATE_FILE).display()
        ),
        Some(s) => {
            println!("services (vmfs up, pid {}):", s.pid);
            for x in &s.services {
                println!(
                    "  {:<5} {:<8} {}  {}",
                    x.name, x.state, x.endpoint, x.detail
                );
            }
        }
    }
    Ok(())
}

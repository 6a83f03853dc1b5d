//! `vmfs locks`: every lock record that is not FREE — resource-cluster locks
//! and the locks of allocated inodes — with mode, holders and generation
//! (like `vmkfstools -D`). Read-only, no slot needed.

use vmfs::format::cluster::ClusterHeader;
use vmfs::format::header::META_BLOCK;
use vmfs::format::{LockMode, LockRecord, ResourceKind, SECTOR};
use vmfs::volume::Volume;

use crate::device::open_device;

#[derive(clap::Args, Debug)]
pub struct LocksArgs {
    /// Image file, block device, or iscsi://HOST[:PORT]/IQN/LUN holding the volume.
    pub device: String,
    /// Show only the lock of this file or directory (path inside the volume).
    pub path: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

fn mode(m: LockMode) -> &'static str {
    match m {
        LockMode::Free => "free",
        LockMode::Exclusive => "exclusive",
        LockMode::SharedRead => "shared-read",
        LockMode::MultiWriter => "multi-writer",
    }
}

fn row(what: String, addr: u64, rec: Result<LockRecord, String>) -> Option<serde_json::Value> {
    match rec {
        Ok(r) if r.mode == LockMode::Free => None,
        Ok(r) => Some(serde_json::json!({
            "lock": what,
            "offset": addr,
            "mode": mode(r.mode),
            "lock_gen": r.lock_gen,
            "holders": r.holders.iter().map(|h| serde_json::json!({"slot": h.slot, "hb_gen": h.hb_gen})).collect::<Vec<_>>(),
            "transfer_to": r.transfer_to.map(|h| serde_json::json!({"slot": h.slot, "hb_gen": h.hb_gen})),
        })),
        Err(e) => {
            Some(serde_json::json!({"lock": what, "offset": addr, "mode": "DAMAGED", "error": e}))
        }
    }
}

pub fn run(a: &LocksArgs) -> Result<(), String> {
    let dev = open_device(&a.device, None, true)?;
    let vol = Volume::open(dev.clone()).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    if let Some(path) = &a.path {
        let ino =
            vmfs::fs::offline::resolve_path(&vol, path).map_err(|e| format!("{path}: {e}"))?;
        let la = vol.inode_addr(ino);
        let mut b = [0u8; SECTOR];
        dev.read_at(&mut b, la).map_err(|e| e.to_string())?;
        let rec = LockRecord::decode(&b, la).map_err(|e| e.to_string());
        let r = match rec {
            Ok(r) if r.mode == LockMode::Free => serde_json::json!({
                "lock": format!("inode {ino}"), "path": path, "offset": la, "mode": "free", "lock_gen": r.lock_gen, "holders": [], "transfer_to": null,
            }),
            other => {
                let mut v = row(format!("inode {ino}"), la, other).expect("not free");
                v["path"] = serde_json::json!(path);
                v
            }
        };
        rows.push(r);
        return print(&vol, rows, a.json);
    }
    rows.extend(collect_all(&vol)?);
    print(&vol, rows, a.json)
}

fn print(vol: &Volume, rows: Vec<serde_json::Value>, json: bool) -> Result<(), String> {
    if json {
        let j = serde_json::json!({"volume": vol.header.label, "locks": rows});
        println!(
            "{}",
            serde_json::to_string_pretty(&j).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    if rows.is_empty() {
        println!("volume '{}': no locks held", vol.header.label);
        return Ok(());
    }
    if rows.len() == 1 && rows[0]["mode"] == "free" {
        println!(
            "{} ({}): free, generation {}",
            rows[0]["path"].as_str().unwrap_or(""),
            rows[0]["lock"].as_str().unwrap_or(""),
            rows[0]["lock_gen"]
        );
        return Ok(());
    }
    println!(
        "{:<28} {:>14} {:<13} {:>8}  holders (slot/hb_gen)",
        "lock", "offset", "mode", "gen"
    );
    for r in rows {
        let holders: Vec<String> = r["holders"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|h| format!("{}/{}", h["slot"], h["hb_gen"]))
                    .collect()
            })
            .unwrap_or_default();
        let xfer = match &r["transfer_to"] {
            serde_json::Value::Null => String::new(),
            t => format!(" TRANSFER to {}/{}", t["slot"], t["hb_gen"]),
        };
        println!(
            "{:<28} {:>14} {:<13} {:>8}  {}{}{}",
            r["lock"].as_str().unwrap_or(""),
            r["offset"].to_string(),
            r["mode"].as_str().unwrap_or(""),
            r["lock_gen"].to_string(),
            holders.join(" "),
            xfer,
            r["error"]
                .as_str()
                .map(|e| format!(" {e}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Every lock record on the volume that is not FREE, one row each.
pub fn collect_all(vol: &Volume) -> Result<Vec<serde_json::Value>, String> {
    let mut rows = Vec::new();
    for kind in ResourceKind::ALL {
        let reg = *vol.header.region(kind);
        for c in 0..reg.clusters {
            let la = vol.cluster_lock_addr(kind, c);
            let mut unit = vec![0u8; META_BLOCK as usize];
            vol.dev.read_at(&mut unit, la).map_err(|e| e.to_string())?;
            let rec = LockRecord::decode(&unit[..SECTOR], la).map_err(|e| e.to_string());
            rows.extend(row(format!("{} cluster {c}", kind.name()), la, rec));
            if kind != ResourceKind::Inode {
                continue;
            }
            // Inode locks: only allocated inodes have meaningful records.
            let Ok(ch) = ClusterHeader::decode(&unit[SECTOR..], la + SECTOR as u64) else {
                continue;
            };
            for i in 0..ch.resource_count {
                let ino = ch.first_resource + u64::from(i);
                // Inode 0 is reserved (its bit is set, it has no record).
                if !ch.is_set(i) || ino == 0 {
                    continue;
                }
                let ia = vol.inode_addr(ino);
                let mut b = [0u8; SECTOR];
                vol.dev.read_at(&mut b, ia).map_err(|e| e.to_string())?;
                let rec = LockRecord::decode(&b, ia).map_err(|e| e.to_string());
                rows.extend(row(format!("inode {ino}"), ia, rec).map(|mut v| {
                    v["ino"] = ino.into();
                    v
                }));
            }
        }
    }
    Ok(rows)
}

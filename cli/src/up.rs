//! `vmfs up`: run the datastore on an embedded default — a sparse image
//! under `./vmfs-data/` (formatted when new), joined as a host with a
//! persistent identity, heartbeating until Ctrl-C / SIGTERM, then a clean
//! exit (locks released, slot CLEAN_EXIT). What it serves grows as the
//! parts land; it says plainly what is not served yet.

use std::path::PathBuf;

use vmfs::cluster::{Host, HostConfig, HostEvent};
use vmfs::volume::{mkfs, MkfsOptions, Volume};

use crate::device::open_device;
use crate::process::{block_signals, machine_name, wait_signal};
use crate::units::{human, parse_size};

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Data directory (image, host identity).
    #[arg(long, default_value = "vmfs-data")]
    pub dir: PathBuf,
    /// Size of the image created on first run.
    #[arg(long, default_value = "64G", value_parser = parse_size)]
    pub size: u64,
    /// Label of the volume created on first run (also the NFS export name).
    #[arg(long, default_value = "datastore1")]
    pub label: String,
    /// Host name recorded in the heartbeat slot (default: the machine's).
    #[arg(long)]
    pub host_name: Option<String>,
}

fn host_uuid(dir: &std::path::Path) -> Result<[u8; 16], String> {
    let path = dir.join("host-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
        if hex.len() == 32 {
            let mut id = [0u8; 16];
            for (i, b) in id.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                    .map_err(|_| format!("{}: not a host id", path.display()))?;
            }
            return Ok(id);
        }
        return Err(format!(
            "{}: not a host id (32 hex digits expected)",
            path.display()
        ));
    }
    let id: [u8; 16] = rand::random();
    std::fs::write(&path, vmfs::format::header::uuid_string(&id) + "\n")
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(id)
}

pub fn run(a: &UpArgs) -> Result<(), String> {
    let set = block_signals();
    std::fs::create_dir_all(&a.dir).map_err(|e| format!("{}: {e}", a.dir.display()))?;
    let img = a.dir.join("datastore.img");
    let img_s = img
        .to_str()
        .ok_or("data directory path is not UTF-8")?
        .to_string();
    let fresh = !img.exists();
    let dev = open_device(&img_s, fresh.then_some(a.size), false)?;
    if fresh {
        let opts = MkfsOptions {
            label: a.label.clone(),
            ..Default::default()
        };
        let h = mkfs(&dev, &opts, false).map_err(|e| {
            let _ = std::fs::remove_file(&img);
            e.to_string()
        })?;
        println!(
            "created {} ({}), volume '{}' {}",
            img.display(),
            human(h.volume_size),
            h.label,
            h.uuid_string()
        );
    }
    let vol = Volume::open(dev).map_err(|e| e.to_string())?;
    let mut cfg = HostConfig::new(&a.host_name.clone().unwrap_or_else(machine_name));
    cfg.host_uuid = host_uuid(&a.dir)?;
    println!(
        "joining volume '{}' (waits up to D if this host's previous run died)…",
        vol.header.label
    );
    let host = Host::join(vol, cfg).map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::channel();
    host.subscribe(tx);
    host.start();
    let space = host.volume().space().map_err(|e| e.to_string())?;
    println!(
        "vmfs up: volume '{}' on {}",
        host.volume().header.label,
        img.display()
    );
    println!(
        "  host slot {} (hb_gen {}), heartbeat every {:?}",
        host.slot(),
        host.holder().hb_gen,
        host.timeouts().heartbeat
    );
    println!(
        "  capacity {}, free {}",
        human(host.volume().header.volume_size),
        human(space.free_bytes())
    );
    println!("  inspect:  vmfs info {img_s}   vmfs hosts {img_s}   vmfs locks {img_s}");
    println!("  mount the filesystem (another host of the volume): vmfs mount {img_s} DIR");
    println!("  not served yet by this build: iSCSI export, NFS export (see README)");
    println!("  Ctrl-C to leave cleanly");
    // Fencing is reported from another thread; watch for it while waiting.
    std::thread::spawn(move || {
        if let Ok(HostEvent::Fenced(why)) = rx.recv() {
            eprintln!("vmfs up: this host was fenced: {why}; exiting");
            std::process::exit(3);
        }
    });
    let sig = wait_signal(&set);
    println!("vmfs up: signal {sig}: leaving the volume cleanly");
    host.leave().map_err(|e| e.to_string())?;
    println!("vmfs up: left cleanly (slot marked CLEAN_EXIT)");
    Ok(())
}

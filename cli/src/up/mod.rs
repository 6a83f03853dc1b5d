//! `vmfs up`: run the datastore on an embedded default — a sparse image
//! under `./vmfs-data/` (formatted when new), joined as a host with a
//! persistent identity, its filesystem mounted through FUSE, the LUN
//! exported over iSCSI and the filesystem over NFS — until Ctrl-C /
//! SIGTERM, then a clean exit (services stopped, locks released, slot
//! CLEAN_EXIT). Everything is configurable (`docs/config.md`).

pub mod config;
mod services;
pub mod state;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use vmfs::cluster::{Host, HostConfig};
use vmfs::volume::{mkfs, MkfsOptions, Volume};

use crate::device::open_device;
use crate::process::{block_signals, machine_name, watch_host_events, watch_stops, Stop};
use crate::session::Session;
use crate::units::{human, parse_size};
use config::{FileConfig, Overrides, UpConfig};
use state::{ServiceState, UpState};

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// TOML configuration (default: DIR/vmfs.toml when it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory (image, host identity, mount point, state file)
    /// [key datastore.dir; default vmfs-data].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Image file (relative to DIR) or block device [datastore.image; default datastore.img].
    #[arg(long)]
    pub image: Option<String>,
    /// Size of the image created on first run [datastore.size; default 64G].
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Label of the volume created on first run; also the NFS export name
    /// [datastore.label; default datastore1].
    #[arg(long)]
    pub label: Option<String>,
    /// Host name recorded in the heartbeat slot [datastore.host_name; default: the machine's].
    #[arg(long)]
    pub host_name: Option<String>,
    /// Do not mount the filesystem through FUSE [fuse.enabled = false].
    #[arg(long)]
    pub no_fuse: bool,
    /// FUSE mount point (relative to DIR) [fuse.mountpoint; default mnt].
    #[arg(long)]
    pub mountpoint: Option<PathBuf>,
    /// Do not export the LUN over iSCSI [iscsi.enabled = false].
    #[arg(long)]
    pub no_iscsi: bool,
    /// iSCSI portal, repeatable [iscsi.listen; default 127.0.0.1:3260].
    #[arg(long)]
    pub iscsi_listen: Vec<SocketAddr>,
    /// Target IQN [iscsi.target; default iqn.2026-11.org.vmfs:LABEL].
    #[arg(long)]
    pub iscsi_target: Option<String>,
    /// Do not export the filesystem over NFS [nfs.enabled = false].
    #[arg(long)]
    pub no_nfs: bool,
    /// NFS (and MOUNT) address [nfs.listen; default 127.0.0.1:2049].
    #[arg(long)]
    pub nfs_listen: Option<SocketAddr>,
}

fn load_config(a: &UpArgs) -> Result<UpConfig, String> {
    let o = Overrides {
        dir: a.dir.clone(),
        image: a.image.clone(),
        size: a.size,
        label: a.label.clone(),
        host_name: a.host_name.clone(),
        no_fuse: a.no_fuse,
        mountpoint: a.mountpoint.clone(),
        no_iscsi: a.no_iscsi,
        iscsi_listen: a.iscsi_listen.clone(),
        iscsi_target: a.iscsi_target.clone(),
        no_nfs: a.no_nfs,
        nfs_listen: a.nfs_listen,
    };
    let file = match &a.config {
        Some(p) => FileConfig::load(p)?,
        None => {
            let dir = a
                .dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_DIR));
            let p = dir.join("vmfs.toml");
            if p.exists() {
                println!("using {}", p.display());
                FileConfig::load(&p)?
            } else {
                FileConfig::default()
            }
        }
    };
    UpConfig::resolve(&file, &o)
}

pub fn host_uuid(dir: &Path) -> Result<[u8; 16], String> {
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

/// Open the image, formatting it when new.
fn prepare_volume(c: &UpConfig) -> Result<Volume, String> {
    let img = &c.image;
    let img_s = img
        .to_str()
        .ok_or("the image path is not UTF-8")?
        .to_string();
    let fresh = !img.exists();
    let dev = open_device(&img_s, fresh.then_some(c.size), false)?;
    if fresh {
        let opts = MkfsOptions {
            label: c.label.clone(),
            file_block_size: c.block_size,
            max_hosts: c.max_hosts,
            ..Default::default()
        };
        let h = mkfs(&dev, &opts, false).map_err(|e| {
            let _ = std::fs::remove_file(img);
            format!("formatting {}: {e}", img.display())
        })?;
        println!(
            "created {} ({} sparse), volume '{}' {}",
            img.display(),
            human(h.volume_size),
            h.label,
            h.uuid_string()
        );
    }
    Volume::open(dev).map_err(|e| format!("{}: {e}", img.display()))
}

pub fn run(a: &UpArgs) -> Result<(), String> {
    let set = block_signals();
    let c = load_config(a)?;
    std::fs::create_dir_all(&c.dir).map_err(|e| format!("{}: {e}", c.dir.display()))?;
    if let Some(old) = UpState::read(&c.dir)? {
        if old.process_alive() {
            return Err(format!(
                "another `vmfs up` (pid {}) is serving {}; stop it first (Ctrl-C or kill {})",
                old.pid,
                c.dir.display(),
                old.pid
            ));
        }
    }
    let vol = prepare_volume(&c)?;
    let img_s = c.image.display().to_string();
    let label = vol.header.label.clone();
    let mut hc = HostConfig::new(&c.host_name.clone().unwrap_or_else(machine_name));
    hc.host_uuid = host_uuid(&c.dir)?;
    println!("joining volume '{label}' (waits up to D if this host's previous run died)…");
    let (host_tx, host_rx) = mpsc::channel();
    let session = Session::start(&img_s, vol, hc, Some(host_tx))?;
    let (host, fs) = (&session.host, &session.fs);
    // Swap files of hosts that die are reclaimed by every live host.
    let reclaimer = session.reclaim_swap("vmfs up");
    let (stop_tx, stop_rx) = mpsc::channel::<Stop>();
    let mut st = UpState {
        pid: std::process::id(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        image: std::fs::canonicalize(&c.image).unwrap_or_else(|_| c.image.clone()),
        label: label.clone(),
        host_slot: host.slot(),
        hb_gen: host.holder().hb_gen,
        services: Vec::new(),
    };

    // FUSE.
    let (destroy_tx, destroy_rx) = mpsc::channel();
    let fuse = match &c.fuse {
        None => {
            st.services
                .push(svc("fuse", "disabled", "", "disabled by configuration"));
            None
        }
        Some(f) => match services::start_fuse(fs, f, &img_s, destroy_tx) {
            Ok(m) => {
                let mp = m.mountpoint().display().to_string();
                st.services
                    .push(svc("fuse", "running", &mp, &format!("ls {mp}")));
                Some(m)
            }
            Err(why) => {
                st.services.push(svc(
                    "fuse",
                    "failed",
                    &f.mountpoint.display().to_string(),
                    &why,
                ));
                None
            }
        },
    };

    // iSCSI.
    let iscsi = match &c.iscsi {
        None => {
            st.services
                .push(svc("iscsi", "disabled", "", "disabled by configuration"));
            None
        }
        Some(i) => match services::start_iscsi(&c.image, i) {
            Ok(x) => {
                let portal = x.bound[0];
                st.services.push(svc(
                    "iscsi",
                    "running",
                    &services::fmt_addrs(&x.bound),
                    &format!(
                        "iscsi-ls -s iscsi://{portal}   (LUN 0: iscsi://{portal}/{}/0)",
                        x.target
                    ),
                ));
                Some(x)
            }
            Err(why) => {
                st.services.push(svc(
                    "iscsi",
                    "failed",
                    &services::fmt_addrs(&i.listen),
                    &why,
                ));
                None
            }
        },
    };

    // NFS. The gateway is a host of its own; if it is fenced (it lost the
    // disk, as this host surely did too) everything stops.
    let (nfs_events_tx, nfs_events_rx) = mpsc::channel();
    let tx = stop_tx.clone();
    watch_host_events(
        nfs_events_rx,
        Some("vmfs up: NFS gateway ".into()),
        move |why| {
            let _ = tx.send(Stop::Fenced(format!("the NFS gateway host: {why}")));
        },
    );
    let host_name = c.host_name.clone().unwrap_or_else(machine_name);
    let nfs = match &c.nfs {
        None => {
            st.services
                .push(svc("nfs", "disabled", "", "disabled by configuration"));
            None
        }
        Some(n) => match services::start_nfs(&c.image, &c.dir, &host_name, n, nfs_events_tx) {
            Ok(x) => {
                let url = format!(
                    "nfs://{}{}?nfsport={}&mountport={}",
                    x.addr.ip(),
                    x.export,
                    x.addr.port(),
                    x.addr.port()
                );
                st.services.push(svc(
                    "nfs",
                    "running",
                    &x.addr.to_string(),
                    &format!("nfs-ls '{url}'   (export {})", x.export),
                ));
                Some(x)
            }
            Err(why) => {
                st.services
                    .push(svc("nfs", "failed", &n.listen.to_string(), &why));
                None
            }
        },
    };

    st.write(&c.dir)?;
    print_banner(&st, host, &img_s);

    watch_stops(
        &stop_tx,
        set,
        host_rx,
        "vmfs up: ",
        fuse.is_some().then_some(destroy_rx),
    );
    let stop = stop_rx
        .recv()
        .map_err(|_| "vmfs up: lost every stop source".to_string())?;
    match &stop {
        Stop::Signal(sig) => println!("vmfs up: signal {sig}: shutting down cleanly"),
        Stop::Unmounted => {
            println!("vmfs up: the FUSE mount was unmounted from outside; shutting down")
        }
        Stop::Fenced(why) => {
            eprintln!("vmfs up: this host was fenced: {why}; stopping every service");
            if let Some(m) = &fuse {
                m.gate().fence();
            }
        }
    }
    let mut errors = Vec::new();
    if let Some(m) = &fuse {
        m.gate().stop();
    }
    if let Some(x) = iscsi {
        x.stop();
        println!("vmfs up: iSCSI export stopped");
    }
    if let Stop::Fenced(_) = stop {
        if let Some(x) = nfs {
            x.abandon();
        }
        if let Some(m) = fuse {
            let _ = services::stop_fuse(m);
        }
        session.host.abandon();
        UpState::remove(&c.dir);
        std::process::exit(3);
    }
    if let Some(x) = nfs {
        match x.stop() {
            Ok(()) => println!("vmfs up: NFS export stopped, gateway host left cleanly"),
            Err(e) => errors.push(e),
        }
    }
    drop(reclaimer);
    if session.leave(&mut errors) {
        println!("vmfs up: left the volume cleanly (slot marked CLEAN_EXIT)");
    }
    if let Some(m) = fuse {
        match services::stop_fuse(m) {
            Ok(s) => println!("vmfs up: {s}"),
            Err(e) => errors.push(e),
        }
    }
    UpState::remove(&c.dir);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

fn svc(name: &str, state: &str, endpoint: &str, detail: &str) -> ServiceState {
    ServiceState {
        name: name.into(),
        state: state.into(),
        endpoint: endpoint.into(),
        detail: detail.into(),
    }
}

fn print_banner(st: &UpState, host: &Host, img: &str) {
    println!("vmfs up: volume '{}' on {img}", st.label);
    println!(
        "  host slot {} (hb_gen {}), heartbeat every {:?}",
        st.host_slot,
        st.hb_gen,
        host.timeouts().heartbeat
    );
    if let Ok(space) = host.volume().space() {
        println!(
            "  capacity {}, free {}",
            human(host.volume().header.volume_size),
            human(space.free_bytes())
        );
    }
    for s in &st.services {
        match s.state.as_str() {
            "running" => println!("  {:<5} {}   try: {}", s.name, s.endpoint, s.detail),
            "disabled" => println!("  {:<5} disabled", s.name),
            _ => println!("  {:<5} NOT RUNNING ({}): {}", s.name, s.endpoint, s.detail),
        }
    }
    println!(
        "  status:  vmfs status --dir {}",
        Path::new(img)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| ".".into())
    );
    println!("  inspect: vmfs info {img}   vmfs hosts {img}   vmfs locks {img}");
    println!("  Ctrl-C to stop every service and leave cleanly");
}

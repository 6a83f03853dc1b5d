//! `nfs-gw`: serve exports over NFSv3 + MOUNT v3 on one TCP port.
//!
//! ```text
//! nfs-gw DEVICE [--listen 127.0.0.1:2049] [--host-id-file F] [--host-name N]
//!        [--idle-close-ms MS] [--allow CIDR]... [--no-root-squash] [--read-only] [--no-rpcbind]
//! nfs-gw --export-name NAME --dir PATH [same export flags]
//! nfs-gw --config gateway.toml
//! ```
//!
//! With a DEVICE (vmfs image or block device) the gateway joins the volume
//! as a host (identity kept in `--host-id-file`, default
//! `DEVICE.nfs-gw-host-id`) and exports it as `/LABEL`. On SIGINT/SIGTERM
//! it stops serving, fsyncs and closes the files it opened and leaves every
//! volume cleanly (locks released, slot CLEAN_EXIT). A fenced host exits
//! with status 3.
//!
//! Prints `nfs-gw listening on ADDR` on stdout once bound (with port 0 the
//! kernel picks the port; the line tells which), then one `exporting PATH`
//! line per export.

use clap::Parser;
use nfs_gw::config::{Config, ExportConfig};
use nfs_gw::vmfs_backend::{load_host_id, VmfsHost};
use nfs_gw::{Export, Gateway, LocalDirBackend, VmfsBackend};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::time::Duration;
use vmfs::cluster::HostEvent;

/// Prints a line on stdout, ignoring a closed stdout (a supervisor that
/// only read the banner must not bring the gateway down).
macro_rules! say {
    ($($t:tt)*) => {{
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($t)*);
        let _ = out.flush();
    }};
}

#[derive(Parser, Debug)]
#[command(
    name = "nfs-gw",
    about = "NFSv3 gateway (NFS and MOUNT on one TCP port) for vmfs datastores"
)]
struct Args {
    /// vmfs device (image file or block device) to join and export as /LABEL.
    #[arg(conflicts_with_all = ["config", "dir"])]
    device: Option<String>,
    /// Address to listen on (loopback by default).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Export name of a --dir export: clients mount `/NAME`.
    #[arg(long, requires = "dir", conflicts_with = "config")]
    export_name: Option<String>,
    /// Directory to export (local-directory backend).
    #[arg(long, requires = "export_name")]
    dir: Option<PathBuf>,
    /// File keeping the gateway's host identity on the volume.
    #[arg(long, requires = "device")]
    host_id_file: Option<PathBuf>,
    /// Host name recorded in the heartbeat slot (default: nfs-gw@MACHINE).
    #[arg(long)]
    host_name: Option<String>,
    /// Close a file opened for NFS after this long unused, in ms.
    #[arg(long, requires = "device")]
    idle_close_ms: Option<u64>,
    /// Allowed client network (CIDR); repeatable. Default: loopback only.
    #[arg(long = "allow")]
    allow: Vec<String>,
    /// Do not map uid 0 to nobody.
    #[arg(long)]
    no_root_squash: bool,
    /// Export read-only.
    #[arg(long)]
    read_only: bool,
    /// Do not register with a local rpcbind.
    #[arg(long)]
    no_rpcbind: bool,
    /// TOML configuration with several exports.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// What runs, and what must be left at the end.
struct Running {
    exports: Vec<Export>,
    backends: Vec<Arc<VmfsBackend>>,
    hosts: Vec<VmfsHost>,
}

fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| format!("nfs-gw@{}", s.trim()))
        .unwrap_or_else(|_| "nfs-gw".into())
}

fn export_configs(args: &Args) -> Result<(Option<SocketAddr>, bool, Vec<ExportConfig>), String> {
    if let Some(path) = &args.config {
        let c = Config::load(path).map_err(|e| e.to_string())?;
        return Ok((Some(c.listen), c.rpcbind, c.exports));
    }
    let mut e = ExportConfig {
        name: String::new(),
        dir: None,
        device: None,
        host_id_file: args.host_id_file.clone(),
        idle_close_ms: args.idle_close_ms,
        clients: (!args.allow.is_empty()).then(|| args.allow.clone()),
        root_squash: !args.no_root_squash,
        read_only: args.read_only,
    };
    match (&args.device, &args.export_name, &args.dir) {
        (Some(dev), _, _) => e.device = Some(dev.clone()),
        (None, Some(name), Some(dir)) => {
            e.name = name.clone();
            e.dir = Some(dir.clone());
        }
        _ => return Err("give DEVICE, or --export-name NAME --dir PATH, or --config FILE".into()),
    }
    Ok((None, true, vec![e]))
}

fn build(
    args: &Args,
    list: &[ExportConfig],
    events: &mpsc::Sender<(String, HostEvent)>,
    run: &mut Running,
) -> Result<(), String> {
    let host_name = args.host_name.clone().unwrap_or_else(machine_name);
    for e in list {
        let opts = e.options().map_err(|x| x.to_string())?;
        if let Some(dir) = &e.dir {
            let backend =
                LocalDirBackend::new(dir).map_err(|x| format!("export {}: {x}", e.name))?;
            run.exports
                .push(Export::new(&e.name, Arc::new(backend), opts));
            continue;
        }
        let Some(device) = &e.device else {
            return Err(format!("export {}: no dir or device", e.name));
        };
        let id_path = e.host_id_path().expect("a device export");
        let id = load_host_id(&id_path).map_err(|x| x.to_string())?;
        let (tx, rx) = mpsc::channel();
        let h = VmfsHost::join(device, &host_name, id, Some(tx)).map_err(|x| x.to_string())?;
        let label = h.label();
        let fwd = events.clone();
        let l = label.clone();
        std::thread::spawn(move || {
            while let Ok(ev) = rx.recv() {
                if fwd.send((l.clone(), ev)).is_err() {
                    return;
                }
            }
        });
        let fs = h.fs.clone();
        run.hosts.push(h);
        if !e.name.is_empty() && e.name.trim_matches('/') != label {
            return Err(format!(
                "export {}: the volume on {device} is labelled '{label}'; a device export is named by its label",
                e.name
            ));
        }
        if label.is_empty() {
            return Err(format!(
                "{device}: the volume has no label (the export path is / + label)"
            ));
        }
        let idle = e
            .idle_close_ms
            .map(Duration::from_millis)
            .unwrap_or(nfs_gw::vmfs_backend::DEFAULT_IDLE_CLOSE);
        let backend = Arc::new(VmfsBackend::new(fs, idle).map_err(|x| format!("{label}: {x}"))?);
        run.backends.push(backend.clone());
        run.exports.push(Export::new(&label, backend, opts));
    }
    let mut seen = std::collections::HashSet::new();
    for e in &run.exports {
        if !seen.insert(e.path.clone()) {
            return Err(format!("two exports are named {}", e.path));
        }
    }
    Ok(())
}

/// Closes the gateway's files and leaves every volume; returns false on
/// any error (reported).
fn leave(run: Running) -> bool {
    let mut ok = true;
    for b in &run.backends {
        if let Err(e) = b.close_all() {
            eprintln!("nfs-gw: {}: {e}", b.label());
            ok = false;
        }
    }
    drop(run.exports);
    drop(run.backends);
    for h in run.hosts {
        let label = h.label();
        match h.leave() {
            Ok(()) => say!("nfs-gw: left volume '{label}' cleanly (slot CLEAN_EXIT)"),
            Err(e) => {
                eprintln!("nfs-gw: {e}");
                ok = false;
            }
        }
    }
    ok
}

enum Stop {
    Signal(libc::c_int),
    Fenced(String, String),
}

fn main() -> ExitCode {
    let sigs = block_signals();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NFS_GW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let (cfg_listen, cfg_rpcbind, list) = match export_configs(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("nfs-gw: {e}");
            return ExitCode::from(2);
        }
    };
    let listen = args
        .listen
        .or(cfg_listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 2049)));
    let (ev_tx, ev_rx) = mpsc::channel();
    let mut run = Running {
        exports: Vec::new(),
        backends: Vec::new(),
        hosts: Vec::new(),
    };
    if let Err(e) = build(&args, &list, &ev_tx, &mut run) {
        eprintln!("nfs-gw: {e}");
        leave(run);
        return ExitCode::from(2);
    }
    let paths: Vec<String> = run.exports.iter().map(|e| e.path.clone()).collect();
    let exports = std::mem::take(&mut run.exports);
    let gw = match Gateway::start(listen, exports, cfg_rpcbind && !args.no_rpcbind) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("nfs-gw: bind {listen}: {e}");
            leave(run);
            return ExitCode::FAILURE;
        }
    };
    say!("nfs-gw listening on {}", gw.local_addr());
    for p in &paths {
        say!("exporting {p}");
    }
    let (stop_tx, stop_rx) = mpsc::channel();
    let tx = stop_tx.clone();
    std::thread::spawn(move || {
        let _ = tx.send(Stop::Signal(wait_signal(&sigs)));
    });
    std::thread::spawn(move || {
        while let Ok((label, ev)) = ev_rx.recv() {
            match ev {
                HostEvent::Fenced(why) => {
                    let _ = stop_tx.send(Stop::Fenced(label, why));
                    return;
                }
                HostEvent::Recovered { slot, records } => {
                    say!("nfs-gw: '{label}': recovered dead host slot {slot} ({records} journal records replayed)");
                }
            }
        }
    });
    match stop_rx.recv() {
        Ok(Stop::Fenced(label, why)) => {
            eprintln!("nfs-gw: this host was fenced on '{label}': {why}; exiting");
            std::process::exit(3);
        }
        Ok(Stop::Signal(sig)) => say!("nfs-gw: signal {sig}: stopping cleanly"),
        Err(_) => eprintln!("nfs-gw: lost every stop source; stopping"),
    }
    let mut ok = true;
    if let Err(e) = gw.stop() {
        eprintln!("nfs-gw: {e}");
        ok = false;
    }
    ok &= leave(run);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Blocks SIGINT/SIGTERM in every thread (called before any is spawned)
/// and returns the set for [`wait_signal`].
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a sigset_t we own; standard signal numbers.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

fn wait_signal(set: &libc::sigset_t) -> libc::c_int {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` was initialised by block_signals; `sig` is a valid out pointer.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

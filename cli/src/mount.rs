//! `vmfs mount DEVICE MOUNTPOINT`: join the volume as a host and serve its
//! filesystem through FUSE until SIGINT/SIGTERM (or an outside `umount`),
//! then leave cleanly: handles closed, locks released, slot CLEAN_EXIT,
//! mount removed. A fenced host fails every request with EIO, unmounts and
//! exits with status 3.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use vmfs::cluster::{HostConfig, Timeouts};
use vmfs::fuse::{FuseOptions, Unmounted};
use vmfs::volume::Volume;

use crate::device::open_device_full;
use crate::process::{block_signals, machine_name, watch_stops, Stop};
use crate::session::Session;

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// Image file, block device, or iscsi://HOST[:PORT]/IQN/LUN holding the volume.
    pub device: String,
    /// Directory to mount the filesystem on.
    pub mountpoint: PathBuf,
    /// Host name recorded in the heartbeat slot (default: the machine's).
    #[arg(long)]
    pub host_name: Option<String>,
    /// Heartbeat interval H in ms (default and minimum: the volume's).
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// I/O timeout T in ms (default and minimum: the volume's).
    #[arg(long)]
    pub io_timeout_ms: Option<u64>,
    /// Self-fence deadline F in ms (default and minimum: the volume's).
    #[arg(long)]
    pub self_fence_ms: Option<u64>,
    /// Dead-after D in ms (default and minimum: the volume's).
    #[arg(long)]
    pub dead_after_ms: Option<u64>,
    /// How long the kernel may cache names and attributes, in ms (other
    /// hosts' changes show up after at most this long).
    #[arg(long, default_value_t = 1000)]
    pub attr_timeout_ms: u64,
    /// Threads reading the kernel's requests; they answer cached reads
    /// and overwrites themselves and hand the rest to the workers.
    #[arg(long, default_value_t = 2)]
    pub session_threads: usize,
    /// Most worker threads for requests that may wait (metadata
    /// operations run one at a time).
    #[arg(long, default_value_t = 8)]
    pub threads: usize,
    /// Open files with FUSE direct I/O: no kernel page cache for them,
    /// every read and write goes to vmfs as issued (reads answered from
    /// the image's cache with one copy). Also `VMFS_DIRECT_IO=1`. See
    /// docs/fuse.md for what changes.
    #[arg(long)]
    pub direct_io: bool,
}

/// The volume's timeouts with the given fields raised (join refuses any
/// below the volume's minimums, and unsafe combinations).
fn timeouts(a: &MountArgs, vol: &Volume) -> Option<Timeouts> {
    let fields = [
        a.heartbeat_ms,
        a.io_timeout_ms,
        a.self_fence_ms,
        a.dead_after_ms,
    ];
    if fields.iter().all(Option::is_none) {
        return None;
    }
    let mut t = Timeouts::from_minimums(&vol.header.timeouts);
    let set = |d: &mut Duration, v: Option<u64>| {
        if let Some(ms) = v {
            *d = Duration::from_millis(ms);
        }
    };
    set(&mut t.heartbeat, a.heartbeat_ms);
    set(&mut t.io_timeout, a.io_timeout_ms);
    set(&mut t.self_fence, a.self_fence_ms);
    set(&mut t.dead_after, a.dead_after_ms);
    Some(t)
}

pub fn run(a: &MountArgs) -> Result<(), String> {
    let set = block_signals();
    if !a.mountpoint.is_dir() {
        return Err(format!("{}: not a directory", a.mountpoint.display()));
    }
    // Each FUSE request thread does its device I/O synchronously, one at a
    // time: on an image file pread/pwrite beats io_uring, whose buffered
    // writes go through a kernel worker (measured: 4k random writes on the
    // mount ~2.4x; docs/benchmarks.md). Block devices and iSCSI keep theirs.
    let image_file = std::fs::metadata(&a.device).is_ok_and(|m| m.is_file());
    let opened = open_device_full(&a.device, None, false, image_file)?;
    let vol = Volume::open(opened.dev.clone()).map_err(|e| format!("{}: {e}", a.device))?;
    let mut cfg = HostConfig::new(&a.host_name.clone().unwrap_or_else(machine_name));
    cfg.timeouts = timeouts(a, &vol);
    // Network commands give up after the lock protocol's T; dead hosts are
    // fenced by persistent reservation on LUNs that have them.
    opened.set_io_timeout(
        cfg.timeouts
            .unwrap_or_else(|| Timeouts::from_minimums(&vol.header.timeouts))
            .io_timeout,
    );
    cfg.fencer = opened.fencer();
    let label = vol.header.label.clone();
    let (host_tx, host_rx) = mpsc::channel();
    let session = Session::start(&a.device, vol, cfg, Some(host_tx))?;
    let opts = FuseOptions {
        ttl: Duration::from_millis(a.attr_timeout_ms),
        session_threads: a.session_threads,
        threads: a.threads,
        fsname: a.device.clone(),
        allow_other: true,
        direct_io: a.direct_io || std::env::var_os("VMFS_DIRECT_IO").is_some_and(|v| v == "1"),
        ..FuseOptions::default()
    };
    // Swap files of hosts that die are reclaimed by whoever is mounted.
    let reclaimer = session.reclaim_swap("vmfs mount");
    let (destroy_tx, destroy_rx) = mpsc::channel();
    let mounted =
        match vmfs::fuse::mount(session.fs.clone(), &a.mountpoint, &opts, Some(destroy_tx)) {
            Ok(m) => m,
            Err(e) => {
                drop(reclaimer);
                session.leave(&mut Vec::new());
                return Err(e.to_string());
            }
        };
    let host = &session.host;
    let t = host.timeouts();
    println!(
        "vmfs mount: volume '{label}' mounted at {} (host slot {}, H {:?}, D {:?})",
        a.mountpoint.display(),
        host.slot(),
        t.heartbeat,
        t.dead_after
    );
    let (stop_tx, stop_rx) = mpsc::channel();
    watch_stops(&stop_tx, set, host_rx, "vmfs mount: ", Some(destroy_rx));
    let stop = stop_rx
        .recv()
        .map_err(|_| "vmfs mount: lost every stop source".to_string())?;
    match stop {
        Stop::Fenced(why) => {
            mounted.gate().fence();
            eprintln!("vmfs mount: this host was fenced: {why}; every request now fails with EIO");
            let mp = a.mountpoint.display();
            match mounted.unmount() {
                Ok(Unmounted::Clean) => eprintln!("vmfs mount: {mp} unmounted"),
                Ok(Unmounted::Detached) => {
                    eprintln!("vmfs mount: {mp} detached (files were open)")
                }
                Err(e) => eprintln!("vmfs mount: {e}"),
            }
            session.host.abandon();
            std::process::exit(3);
        }
        Stop::Signal(sig) => {
            println!("vmfs mount: signal {sig}: unmounting cleanly");
        }
        Stop::Unmounted => println!("vmfs mount: unmounted from outside; leaving cleanly"),
    }
    mounted.gate().stop();
    drop(reclaimer);
    let mut errors = Vec::new();
    if session.leave(&mut errors) {
        println!("vmfs mount: left the volume cleanly (slot marked CLEAN_EXIT)");
    }
    match mounted.unmount() {
        Ok(Unmounted::Clean) => println!("vmfs mount: {} unmounted", a.mountpoint.display()),
        Ok(Unmounted::Detached) => println!(
            "vmfs mount: {} detached (files were open; they now fail with EIO)",
            a.mountpoint.display()
        ),
        Err(e) => errors.push(e.to_string()),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

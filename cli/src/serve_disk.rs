//! `vmfs serve-disk DEVICE PATH.vmdk --socket SOCK`: join the volume as a
//! host, open the disk under its lock (EXCLUSIVE, or SHARED_READ with
//! `--read-only`, or MULTI_WRITER for clustered guests) and serve it to a
//! VMM over vhost-user-blk until SIGINT/SIGTERM; then flush, close the disk
//! (its lock released) and leave the volume cleanly. A fenced host stops
//! serving at once and exits 3.

use crate::process::watch_host_events;
use std::path::PathBuf;
use std::sync::Arc;

use vmfs::disk::{DiskLock, DiskOptions, VirtualDisk};
use vmfs_vhost_blk::{serve, shutdown_on_signals, BackendError, BackendResult, BlockBackend};
use vmfs_vhost_blk::{ServeOptions, ShutdownHandle};

use crate::session::{HostArgs, Session};

#[derive(clap::Args, Debug)]
pub struct ServeDiskArgs {
    /// Image file or block device holding the volume.
    pub device: String,
    /// The disk's descriptor, a path inside the volume (e.g. vm1/vm1.vmdk).
    pub path: String,
    /// vhost-user socket the VMM connects to.
    #[arg(long)]
    pub socket: PathBuf,
    /// Serve read-only (the disk is opened SHARED_READ).
    #[arg(long, conflicts_with = "multi_writer")]
    pub read_only: bool,
    /// Open under MULTI_WRITER (clustered guests; eager-zeroed thick disks only).
    #[arg(long)]
    pub multi_writer: bool,
    /// Virtqueues (each served by its own thread).
    #[arg(long, default_value_t = 2)]
    pub queues: u16,
    /// Worker threads of the disk.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    #[command(flatten)]
    pub host: HostArgs,
}

/// A [`VirtualDisk`] as the daemon's block backend.
struct VmdkBackend {
    disk: VirtualDisk,
}

fn io_err(
    op: &'static str,
    offset: u64,
    len: u64,
) -> impl Fn(vmfs::disk::DiskError) -> BackendError {
    move |e| BackendError::Io {
        op,
        offset,
        len,
        source: std::io::Error::other(e.to_string()),
    }
}

impl BlockBackend for VmdkBackend {
    fn size(&self) -> u64 {
        self.disk.capacity()
    }
    fn read_only(&self) -> bool {
        self.disk.read_only()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> BackendResult<()> {
        let len = buf.len() as u64;
        let data = self
            .disk
            .read(offset, buf.len())
            .wait()
            .map_err(io_err("read", offset, len))?;
        buf.copy_from_slice(&data);
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> BackendResult<()> {
        self.disk.write(offset, buf.to_vec()).wait().map_err(io_err(
            "write",
            offset,
            buf.len() as u64,
        ))
    }
    fn flush(&self) -> BackendResult<()> {
        self.disk.flush().wait().map_err(io_err("flush", 0, 0))
    }
    fn discard(&self, offset: u64, len: u64) -> BackendResult<()> {
        self.disk
            .discard(offset, len)
            .wait()
            .map_err(io_err("discard", offset, len))
    }
    fn write_zeroes(&self, offset: u64, len: u64, _may_unmap: bool) -> BackendResult<()> {
        self.disk
            .write_zeroes(offset, len)
            .wait()
            .map_err(io_err("write-zeroes", offset, len))
    }
}

/// The GET_ID answer: the disk's file name, at most 20 bytes.
fn serial(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut s = String::new();
    for c in name.chars() {
        if s.len() + c.len_utf8() > 20 {
            break;
        }
        s.push(c);
    }
    s
}

pub fn run(a: &ServeDiskArgs) -> Result<(), String> {
    // Before any thread starts, so every thread has the signals blocked.
    let shutdown = ShutdownHandle::new();
    shutdown_on_signals(shutdown.clone()).map_err(|e| format!("signal handling: {e}"))?;
    let s = Session::join(&a.device, &a.host)?;
    let lock = if a.read_only {
        DiskLock::SharedRead
    } else if a.multi_writer {
        DiskLock::MultiWriter
    } else {
        DiskLock::Exclusive
    };
    let disk = match VirtualDisk::open(
        &s.fs,
        &a.path,
        &DiskOptions {
            lock,
            workers: a.workers.max(1),
        },
    ) {
        Ok(d) => d,
        Err(e) => {
            let msg = s.err(format!("opening {}: {e}", a.path));
            let _ = s.close();
            return Err(msg);
        }
    };
    // A fenced host must stop serving at once: its writes can no longer land.
    let (tx, rx) = std::sync::mpsc::channel();
    s.host.subscribe(tx);
    let fence_stop = shutdown.clone();
    watch_host_events(rx, None, move |why| {
        eprintln!("vmfs serve-disk: this host was fenced: {why}; stopping");
        fence_stop.shutdown();
    });
    println!(
        "vmfs serve-disk: {} ({} bytes, {:?}) on {} — {} queue(s); Ctrl-C to stop",
        a.path,
        disk.capacity(),
        lock,
        a.socket.display(),
        a.queues
    );
    let backend = Arc::new(VmdkBackend { disk: disk.clone() });
    let served = serve(
        backend,
        &a.socket,
        ServeOptions {
            num_queues: a.queues,
            read_only: a.read_only,
            serial: serial(&a.path),
            shutdown,
            ..ServeOptions::default()
        },
    );
    if s.host.is_fenced() {
        s.host.clone().abandon();
        std::process::exit(3);
    }
    let mut errs = Vec::new();
    if let Err(e) = served {
        errs.push(format!("serving {}: {e}", a.socket.display()));
    }
    if let Err(e) = disk.close() {
        errs.push(s.err(format!("closing {}: {e}", a.path)));
    }
    if let Err(e) = s.close() {
        errs.push(e);
    }
    if errs.is_empty() {
        println!("vmfs serve-disk: stopped; disk closed, left the volume cleanly");
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

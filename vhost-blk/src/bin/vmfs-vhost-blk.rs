//! `vmfs-vhost-blk --file PATH --socket SOCK`: serve a plain file (or block
//! device) as a vhost-user-blk disk. `vmfs serve-disk` does the same for a
//! VMDK on a vmfs volume; this one is for raw images and for testing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use vmfs_vhost_blk::{serve, shutdown_on_signals, FileBackend, ServeOptions, ShutdownHandle};

#[derive(Parser, Debug)]
#[command(about = "Serve a file as a vhost-user-blk disk")]
struct Args {
    /// The disk image (size a multiple of 512).
    #[arg(long)]
    file: PathBuf,
    /// The vhost-user unix socket to listen on.
    #[arg(long)]
    socket: PathBuf,
    /// Refuse writes (VIRTIO_BLK_F_RO).
    #[arg(long)]
    read_only: bool,
    /// Number of virtqueues, each served by its own thread.
    #[arg(long, default_value_t = 1)]
    queues: u16,
    /// Largest virtqueue size the driver may use.
    #[arg(long, default_value_t = 256)]
    queue_size: u16,
    /// The GET_ID serial (at most 20 bytes).
    #[arg(long, default_value = "vmfs")]
    serial: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let shutdown = ShutdownHandle::new();
    if let Err(e) = shutdown_on_signals(shutdown.clone()) {
        eprintln!("vmfs-vhost-blk: {e}");
        return ExitCode::FAILURE;
    }
    let backend = match FileBackend::open(&args.file, args.read_only) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("vmfs-vhost-blk: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = ServeOptions {
        num_queues: args.queues,
        queue_size: args.queue_size,
        read_only: args.read_only,
        serial: args.serial,
        shutdown,
    };
    match serve(Arc::new(backend), &args.socket, opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmfs-vhost-blk: {e}");
            ExitCode::FAILURE
        }
    }
}

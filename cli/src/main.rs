//! `vmfs`: the datastore's command-line tool.

mod device;
mod disk;
mod hosts;
mod info;
mod locks;
mod mkfs;
mod mount;
mod process;
mod progress;
mod serve_disk;
mod session;
mod status;
mod swap;
mod units;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "vmfs",
    version,
    about = "Clustered datastore filesystem: format, inspect and serve a shared volume"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the datastore on a default local image (./vmfs-data), until Ctrl-C.
    Up(up::UpArgs),
    /// Format a device or image file as a vmfs volume.
    Mkfs(mkfs::MkfsArgs),
    /// Show a volume's header, capacity, free space and layout (read-only, no locks).
    Info(info::InfoArgs),
    /// List the hosts on a volume (heartbeat slots) with a live/silent verdict.
    Hosts(hosts::HostsArgs),
    /// List every held lock: mode, holders, generation (read-only).
    Locks(locks::LocksArgs),
    /// Join the volume as a host and mount its filesystem with FUSE, until Ctrl-C.
    Mount(mount::MountArgs),
    /// Serve a disk to a VMM over vhost-user-blk (QEMU, cloud-hypervisor, crosvm, firecracker).
    ServeDisk(serve_disk::ServeDiskArgs),
    /// Hosts and liveness, locks and open disks, capacity and thin savings, running services.
    Status(status::StatusArgs),
    /// Virtual disks (VMDK) in the volume: create, info, extend, inflate,
    /// clone, delete, snapshots.
    #[command(subcommand)]
    Disk(disk::DiskCommand),
    /// VM swap files: create (fully allocated, held while the VM runs), delete.
    #[command(subcommand)]
    Swap(swap::SwapCommand),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VMFS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Up(a) => up::run(a),
        Command::Mkfs(a) => mkfs::run(a),
        Command::Info(a) => info::run(a),
        Command::Hosts(a) => hosts::run(a),
        Command::Locks(a) => locks::run(a),
        Command::Mount(a) => mount::run(a),
        Command::Status(a) => status::run(a),
        Command::ServeDisk(a) => serve_disk::run(a),
        Command::Disk(c) => disk::run(c),
        Command::Swap(c) => swap::run(c),
    };
    if let Err(e) = result {
        eprintln!("vmfs: {e}");
        std::process::exit(1);
    }
}

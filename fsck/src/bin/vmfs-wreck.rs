//! `vmfs-wreck DEVICE --code CODE`: create the problem CODE on a volume
//! that has files (prints the paths it may change, one "touched PATH" a
//! line). `vmfs-wreck --list`: the codes it can create, one a line.

use std::sync::Arc;

use clap::Parser;
use vmfs::dev::{FileDev, FileDevOptions};
use vmfs_fsck::{wreck, Code, Disk};

#[derive(Parser, Debug)]
#[command(
    name = "vmfs-wreck",
    version,
    about = "Corrupt a vmfs volume on purpose, by fsck problem code"
)]
struct Args {
    /// Image file or block device holding the volume.
    #[arg(required_unless_present = "list")]
    device: Option<String>,
    /// Problem code to create (see --list).
    #[arg(long, required_unless_present = "list")]
    code: Option<String>,
    /// List the codes, one a line.
    #[arg(long)]
    list: bool,
}

fn main() {
    let a = Args::parse();
    if a.list {
        for c in wreck::codes() {
            println!("{c}");
        }
        return;
    }
    let (Some(device), Some(code)) = (a.device, a.code) else {
        eprintln!("vmfs-wreck: DEVICE and --code are needed");
        std::process::exit(2);
    };
    let Some(code) = Code::parse(&code) else {
        eprintln!("vmfs-wreck: unknown code {code} (see --list)");
        std::process::exit(2);
    };
    let dev = match FileDev::open(&device, FileDevOptions::default()) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            eprintln!("vmfs-wreck: {e}");
            std::process::exit(1);
        }
    };
    match wreck::wreck(&Disk::new(dev, true), code) {
        Ok(touched) => {
            for t in touched {
                println!("touched {t}");
            }
        }
        Err(e) => {
            eprintln!("vmfs-wreck: {device}: {code}: {e}");
            std::process::exit(1);
        }
    }
}

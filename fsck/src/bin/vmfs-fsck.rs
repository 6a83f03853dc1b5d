//! `vmfs-fsck DEVICE [--repair] [--force] [--json]`: check a vmfs volume
//! (read-only unless --repair). Exit codes as e2fsck: 0 clean, 1 errors
//! fixed, 4 errors left uncorrected, 8 operational error.

use std::io::IsTerminal;
use std::sync::Arc;

use clap::Parser;
use vmfs::dev::{FileDev, FileDevOptions};
use vmfs_fsck::{fsck, Options, Outcome, Progress};

#[derive(Parser, Debug)]
#[command(name = "vmfs-fsck", version, about = "Check and repair a vmfs volume")]
struct Args {
    /// Image file or block device holding the volume.
    device: String,
    /// Repair what is found (otherwise nothing is written).
    #[arg(long)]
    repair: bool,
    /// Repair even while other hosts are live on the volume.
    #[arg(long)]
    force: bool,
    /// Machine-readable output on stdout.
    #[arg(long)]
    json: bool,
}

struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn phase(&self, n: u8, name: &str) {
        self.0.set_message(format!("phase {n}: {name}"));
        self.0.set_position(0);
    }
    fn step(&self, done: u64, total: u64) {
        self.0.set_length(total.max(1));
        self.0.set_position(done);
    }
    fn done(&self) {
        self.0.finish_and_clear();
    }
}

fn print(device: &str, o: &Outcome, repair: bool) {
    for p in &o.problems {
        let state = if p.fixed {
            "fixed"
        } else if repair {
            "NOT FIXED"
        } else {
            "found"
        };
        println!("{}\t{state}\t{}", p.code, p.what);
    }
    for p in &o.remaining {
        println!("{}\tREMAINS\t{}", p.code, p.what);
    }
    for n in &o.notes {
        println!("note: {n}");
    }
    if let Some(e) = &o.error {
        if e.starts_with(device) {
            eprintln!("vmfs-fsck: {e}");
        } else {
            eprintln!("vmfs-fsck: {device}: {e}");
        }
    }
    println!(
        "{device}: {} problems ({} fixed), {} inodes, {} directories, {} data blocks, {} writes; exit {}",
        o.problems.len(),
        o.problems.iter().filter(|p| p.fixed).count(),
        o.inodes,
        o.directories,
        o.data_blocks,
        o.writes,
        o.exit
    );
}

fn main() {
    let a = Args::parse();
    let dev = match FileDev::open(
        &a.device,
        FileDevOptions {
            read_only: !a.repair,
            ..Default::default()
        },
    ) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            eprintln!("vmfs-fsck: {e}");
            std::process::exit(8);
        }
    };
    let opts = Options {
        repair: a.repair,
        force: a.force,
        sample_cap: None,
    };
    let out = if std::io::stdout().is_terminal() && !a.json {
        let bar = indicatif::ProgressBar::new(1);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:40} [{bar:30}] {pos}/{len}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        fsck(dev, &opts, &Bar(bar))
    } else {
        fsck(dev, &opts, &vmfs_fsck::report::Quiet)
    };
    if a.json {
        let codes: Vec<&str> = out.codes().iter().map(|c| c.as_str()).collect();
        let mut j = serde_json::to_value(&out).unwrap_or_default();
        j["device"] = serde_json::json!(a.device);
        j["codes"] = serde_json::json!(codes);
        j["mode"] = serde_json::json!(if a.repair { "repair" } else { "check" });
        println!("{j}");
    } else {
        print(&a.device, &out, a.repair);
    }
    std::process::exit(out.exit);
}

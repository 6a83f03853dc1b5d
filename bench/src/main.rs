//! `cargo run -p bench --release -- [SUITE…] [--quick]`: runs vmfs and its
//! anchors alternately on the same storage and prints medians, spread and
//! ratios as a markdown table; JSON lands under `target/bench/`.

mod fio;
mod ganesha;
mod harness;
mod mounts;
mod placement;
mod stats;
mod suites;
mod tools;

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Side-by-side benchmarks of vmfs against its anchors")]
struct Args {
    /// Suites to run (default: all). `--list` shows them.
    suites: Vec<String>,
    /// Run every suite briefly (CI uses this so the harness never rots).
    #[arg(long)]
    quick: bool,
    /// Repeats per subject (default 3, 1 with --quick).
    #[arg(long)]
    repeats: Option<usize>,
    /// Directory for backing files (default target/bench/work, on the project's disk).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// List the suites and exit.
    #[arg(long)]
    list: bool,
}

/// Settings every suite reads.
pub struct Config {
    pub quick: bool,
    pub repeats: usize,
    pub work_dir: PathBuf,
}

impl Config {
    /// Size of the backing file for data workloads.
    pub fn file_size(&self) -> u64 {
        if self.quick {
            128 << 20
        } else {
            2 << 30
        }
    }

    /// Seconds per timed fio run.
    pub fn runtime_secs(&self) -> u32 {
        if self.quick {
            1
        } else {
            10
        }
    }
}

fn main() {
    let args = Args::parse();
    let known = suites::all();
    if args.list {
        for s in &known {
            println!("{:8} {}", s.name, s.about);
        }
        return;
    }
    for s in &args.suites {
        if !known.iter().any(|k| k.name == s) {
            let names: Vec<_> = known.iter().map(|k| k.name).collect();
            eprintln!(
                "bench: unknown suite `{s}`; known suites: {}",
                names.join(", ")
            );
            std::process::exit(2);
        }
    }
    let out_dir = PathBuf::from("target/bench");
    let work_dir = args.dir.clone().unwrap_or_else(|| out_dir.join("work"));
    if let Err(e) = std::fs::create_dir_all(&work_dir) {
        eprintln!("bench: cannot create {}: {e}", work_dir.display());
        std::process::exit(1);
    }
    let cfg = Config {
        quick: args.quick,
        repeats: args
            .repeats
            .unwrap_or(if args.quick { 1 } else { 3 })
            .max(1),
        work_dir,
    };
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for s in known
        .iter()
        .filter(|k| args.suites.is_empty() || args.suites.iter().any(|n| n == k.name))
    {
        eprintln!("bench: suite {} …", s.name);
        match (s.run)(&cfg) {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("bench: suite {} could not run: {e}", s.name);
                failed.push(format!("{}: {e}", s.name));
            }
        }
    }
    println!("{}", harness::markdown(&rows));
    for f in &failed {
        println!("- suite not run: {f}");
    }
    let json = serde_json::json!({
        "quick": cfg.quick,
        "repeats": cfg.repeats,
        "rows": rows,
        "suites_not_run": failed,
    });
    let path = out_dir.join(if cfg.quick {
        "latest-quick.json"
    } else {
        "latest.json"
    });
    match serde_json::to_vec_pretty(&json).map(|b| std::fs::write(&path, b)) {
        Ok(Ok(())) => eprintln!("bench: JSON written to {}", path.display()),
        Ok(Err(e)) => eprintln!("bench: writing {}: {e}", path.display()),
        Err(e) => eprintln!("bench: encoding JSON: {e}"),
    }
    if !failed.is_empty() {
        std::process::exit(1);
    }
}

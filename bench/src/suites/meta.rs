//! `meta`: metadata rates on a `vmfs mount` against the native directory
//! (the baseline) and bindfs, same disk, run alternately: creating empty
//! files (open O_CREAT + close), stat of each, unlink of each, in one
//! directory. Each sample makes its own fresh directory; only the measured
//! step is timed. Then small files: creating 4 KiB files (create, write,
//! close) and the space each one holds (`st_blocks` × 512: one 64 KiB small
//! block on vmfs, where a file block of 1 MiB was used before small files).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::harness::{run_case, Better, Case, Row, Subject};
use crate::suites::fuse::{Places, NATIVE};
use crate::Config;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Create,
    Stat,
    Unlink,
    /// Create, write 4 KiB, close.
    Write4k,
}

/// Bytes of each small file in the small-file cases.
const SMALL: usize = 4096;

fn write_small(files: &[PathBuf]) -> Result<(), String> {
    let data = vec![0x5au8; SMALL];
    for f in files {
        std::fs::write(f, &data).map_err(|e| format!("write {}: {e}", f.display()))?;
    }
    Ok(())
}

/// One sample of the space case: bytes held per 4 KiB file (`st_blocks`).
fn space_sample(root: &Path, round: &mut u32, n: usize) -> Result<f64, String> {
    use std::os::unix::fs::MetadataExt;
    *round += 1;
    let dir = root.join(format!("space-{round}"));
    std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let files = names(&dir, n);
    write_small(&files)?;
    let mut bytes = 0u64;
    for f in &files {
        let m = std::fs::metadata(f).map_err(|e| format!("stat {}: {e}", f.display()))?;
        if m.len() != SMALL as u64 {
            return Err(format!("{}: {} bytes, wrote {SMALL}", f.display(), m.len()));
        }
        bytes += m.blocks() * 512;
    }
    std::fs::remove_dir_all(&dir).map_err(|e| format!("rm -r {}: {e}", dir.display()))?;
    Ok(bytes as f64 / n as f64)
}

fn names(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n).map(|i| dir.join(format!("f{i:06}"))).collect()
}

fn create(files: &[PathBuf]) -> Result<(), String> {
    for f in files {
        std::fs::File::create(f).map_err(|e| format!("create {}: {e}", f.display()))?;
    }
    Ok(())
}

/// One sample: `step`'s rate in operations per second over `n` files.
fn sample(root: &Path, round: &mut u32, n: usize, step: Step) -> Result<f64, String> {
    *round += 1;
    let dir = root.join(format!("meta-{round}"));
    std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let files = names(&dir, n);
    let t0 = Instant::now();
    if step != Step::Create && step != Step::Write4k {
        create(&files)?;
    }
    let t = match step {
        Step::Create => {
            create(&files)?;
            t0.elapsed()
        }
        Step::Stat => {
            let t1 = Instant::now();
            for f in &files {
                std::fs::metadata(f).map_err(|e| format!("stat {}: {e}", f.display()))?;
            }
            t1.elapsed()
        }
        Step::Write4k => {
            write_small(&files)?;
            t0.elapsed()
        }
        Step::Unlink => {
            let t1 = Instant::now();
            for f in &files {
                std::fs::remove_file(f).map_err(|e| format!("unlink {}: {e}", f.display()))?;
            }
            t1.elapsed()
        }
    };
    std::fs::remove_dir_all(&dir).map_err(|e| format!("rm -r {}: {e}", dir.display()))?;
    Ok(n as f64 / t.as_secs_f64().max(1e-9))
}

pub fn run(cfg: &Config) -> Result<Vec<Row>, String> {
    let n = if cfg.quick { 300 } else { 1000 };
    std::fs::create_dir_all(&cfg.work_dir).map_err(|e| e.to_string())?;
    let places = Places::start(&cfg.work_dir, "meta", 0)?;
    let mut rows = Vec::new();
    for (case_name, step) in [
        ("create", Step::Create),
        ("stat", Step::Stat),
        ("unlink", Step::Unlink),
        ("create+write+close", Step::Write4k),
    ] {
        let subjects = places
            .dirs()
            .into_iter()
            .map(|(name, dir)| {
                let mut round = 0u32;
                Subject {
                    name: name.into(),
                    run: Box::new(move || sample(&dir, &mut round, n, step)),
                }
            })
            .collect();
        let what = if step == Step::Write4k {
            "files of 4 KiB"
        } else {
            "files"
        };
        rows.extend(run_case(
            Case {
                suite: "meta",
                name: format!("{case_name} ({n} {what}, one directory)"),
                unit: "ops/s",
                better: Better::Higher,
                baseline: NATIVE.into(),
                subjects,
            },
            cfg.repeats,
        ));
    }
    let subjects = places
        .dirs()
        .into_iter()
        .map(|(name, dir)| {
            let mut round = 0u32;
            Subject {
                name: name.into(),
                run: Box::new(move || space_sample(&dir, &mut round, n)),
            }
        })
        .collect();
    rows.extend(run_case(
        Case {
            suite: "meta",
            name: format!("space held per 4 KiB file ({n} files, st_blocks)"),
            unit: "bytes",
            better: Better::Lower,
            baseline: NATIVE.into(),
            subjects,
        },
        cfg.repeats,
    ));
    Ok(rows)
}

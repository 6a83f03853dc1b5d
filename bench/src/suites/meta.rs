//! `meta`: metadata rates on a `vmfs mount` against the native directory
//! (the baseline) and bindfs, same disk, run alternately: creating empty
//! files (open O_CREAT + close), stat of each, unlink of each, in one
//! directory. Each sample makes its own fresh directory; only the measured
//! step is timed.

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
    if step != Step::Create {
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
        rows.extend(run_case(
            Case {
                suite: "meta",
                name: format!("{case_name} ({n} files, one directory)"),
                unit: "ops/s",
                better: Better::Higher,
                baseline: NATIVE.into(),
                subjects,
            },
            cfg.repeats,
        ));
    }
    Ok(rows)
}

//! `raw`: fio on a plain backing file, the physical limit the other suites
//! are compared against (io_uring + O_DIRECT, and buffered psync).

use crate::fio::{self, FioJob};
use crate::harness::{run_case, Better, Case, Row, Subject};
use crate::{tools, Config};

pub fn run(cfg: &Config) -> Result<Vec<Row>, String> {
    let fio_bin = tools::ensure("fio", "fio")?;
    let file = cfg.work_dir.join("raw-backing.img");
    let size = cfg.file_size();
    fio::prefill(&fio_bin, &file, size)?;
    let workloads: [(&str, &'static str, &'static str, u32, &'static str); 4] = [
        ("4k randread QD1", "randread", "4k", 1, "IOPS"),
        ("4k randread QD32", "randread", "4k", 32, "IOPS"),
        ("4k randwrite QD1", "randwrite", "4k", 1, "IOPS"),
        ("1M read QD8", "read", "1M", 8, "MiB/s"),
    ];
    let mut rows = Vec::new();
    for (name, rw, bs, qd, unit) in workloads {
        let mk = |engine: &'static str, direct: bool| {
            let fio_bin = fio_bin.clone();
            let file = file.clone();
            let job = FioJob {
                rw,
                block_size: bs,
                iodepth: if engine == "psync" { 1 } else { qd },
                ioengine: engine,
                direct,
                size,
                runtime_secs: cfg.runtime_secs(),
                keep_cache: false,
            };
            move || {
                let r = fio::run(&fio_bin, &file, &job)?;
                Ok(if unit == "IOPS" { r.iops } else { r.mib_per_s })
            }
        };
        let case = Case {
            suite: "raw",
            name: name.to_string(),
            unit,
            better: Better::Higher,
            baseline: "io_uring O_DIRECT".into(),
            subjects: vec![
                Subject {
                    name: "io_uring O_DIRECT".into(),
                    run: Box::new(mk("io_uring", true)),
                },
                Subject {
                    name: "psync buffered".into(),
                    run: Box::new(mk("psync", false)),
                },
            ],
        };
        rows.extend(run_case(case, cfg.repeats));
    }
    let _ = std::fs::remove_file(&file);
    Ok(rows)
}

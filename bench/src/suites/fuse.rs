//! `fuse`: fio on a `vmfs mount` against bindfs (a FUSE passthrough of a
//! plain directory) and the plain directory, all on the same disk, run
//! alternately: 4k random write and read at QD1 (ratio vs bindfs; goal:
//! random write ≥ 2× bindfs) and 1 MiB sequential write and read (ratio vs
//! native; goal: sequential read ≥ 0.9× native). Buffered psync I/O, the
//! file written in full first so random writes overwrite allocated blocks;
//! the page cache is dropped before each sample. The sequential read also
//! runs on a second vmfs mount with `--direct-io` (no FUSE page cache; an
//! option, not the default: docs/fuse.md), to keep both figures in view.

use std::path::{Path, PathBuf};

use crate::fio::{self, FioJob};
use crate::harness::{run_case, Better, Case, Row, Subject};
use crate::mounts::{drop_caches, Bindfs, VmfsMount};
use crate::placement::{self, Placement};
use crate::{tools, Config};

pub const VMFS: &str = "vmfs mount";
pub const BINDFS: &str = "bindfs";
pub const NATIVE: &str = "native dir";
pub const VMFS_DIRECT: &str = "vmfs mount --direct-io";

/// The three subjects' directories, mounted for as long as this lives.
pub struct Places {
    pub vmfs: VmfsMount,
    pub bindfs: Bindfs,
    pub native: PathBuf,
}

impl Places {
    /// Mount all three under `work` (the image sized for `data` bytes of
    /// files).
    pub fn start(work: &Path, tag: &str, data: u64) -> Result<Places, String> {
        let native = work.join(format!("{tag}-native"));
        let _ = std::fs::remove_dir_all(&native);
        std::fs::create_dir_all(&native).map_err(|e| format!("{}: {e}", native.display()))?;
        let vmfs = VmfsMount::start(
            &work.join(format!("{tag}-vmfs.img")),
            &work.join(format!("{tag}-vmfs")),
            (2 * data + (2 << 30)).next_multiple_of(1 << 20),
        )?;
        let src = work.join(format!("{tag}-bindfs-src"));
        let _ = std::fs::remove_dir_all(&src);
        let bindfs = Bindfs::start(&src, &work.join(format!("{tag}-bindfs")))?;
        Ok(Places {
            vmfs,
            bindfs,
            native,
        })
    }

    /// The FUSE server behind subject `name` (none for the plain directory).
    pub fn server_pid(&self, name: &str) -> Option<u32> {
        match name {
            VMFS => Some(self.vmfs.pid()),
            BINDFS => placement::find_server("bindfs", &self.bindfs.dir),
            _ => None,
        }
    }

    /// (subject name, directory) in a fixed order.
    pub fn dirs(&self) -> [(&'static str, PathBuf); 3] {
        [
            (VMFS, self.vmfs.dir.clone()),
            (BINDFS, self.bindfs.dir.clone()),
            (NATIVE, self.native.clone()),
        ]
    }
}

pub fn run(cfg: &Config) -> Result<Vec<Row>, String> {
    let fio_bin = tools::ensure("fio", "fio")?;
    let size = if cfg.quick { 64 << 20 } else { 1 << 30 };
    std::fs::create_dir_all(&cfg.work_dir).map_err(|e| e.to_string())?;
    let places = Places::start(&cfg.work_dir, "fuse", size)?;
    let direct = VmfsMount::start_with(
        &cfg.work_dir.join("fuse-dio-vmfs.img"),
        &cfg.work_dir.join("fuse-dio-vmfs"),
        (2 * size + (2 << 30)).next_multiple_of(1 << 20),
        &["--direct-io"],
    )?;
    for (name, dir) in places.dirs() {
        fio::prefill(&fio_bin, &dir.join("bench.dat"), size).map_err(|e| format!("{name}: {e}"))?;
    }
    fio::prefill(&fio_bin, &direct.dir.join("bench.dat"), size)
        .map_err(|e| format!("{VMFS_DIRECT}: {e}"))?;
    let workloads: [(&str, &'static str, &'static str, &'static str, &str); 4] = [
        ("4k randwrite QD1", "randwrite", "4k", "IOPS", BINDFS),
        ("4k randread QD1", "randread", "4k", "IOPS", BINDFS),
        ("1M seq write", "write", "1M", "MiB/s", NATIVE),
        ("1M seq read", "read", "1M", "MiB/s", NATIVE),
    ];
    let mut rows = Vec::new();
    // The 4k QD1 cases are ruled by the wakeups between fio and the server
    // (placement.rs): measured free and pinned both ways.
    let runs = workloads.into_iter().flat_map(|w| {
        let placements = if w.1.starts_with("rand") {
            Placement::all()
        } else {
            vec![Placement::Free]
        };
        placements.into_iter().map(move |p| (w, p))
    });
    for ((case_name, rw, bs, unit, baseline), at) in runs {
        let mut dirs = places.dirs().to_vec();
        // The sequential read also on a --direct-io mount (no page cache).
        if rw == "read" {
            dirs.push((VMFS_DIRECT, direct.dir.clone()));
        }
        let subjects = dirs
            .into_iter()
            .map(|(name, dir)| {
                let fio_bin = fio_bin.clone();
                let file = dir.join("bench.dat");
                let server = places.server_pid(name);
                let job = FioJob {
                    rw,
                    block_size: bs,
                    iodepth: 1,
                    ioengine: "psync",
                    direct: false,
                    size,
                    runtime_secs: cfg.runtime_secs(),
                    // Every subject starts cold (drop_caches), fio included.
                    keep_cache: false,
                };
                Subject {
                    name: name.into(),
                    run: Box::new(move || {
                        if let Some(pid) = server {
                            at.pin_server(pid)?;
                        }
                        drop_caches();
                        let r = fio::run_pinned(&fio_bin, &file, &job, at.fio_cpus())?;
                        Ok(if unit == "IOPS" { r.iops } else { r.mib_per_s })
                    }),
                }
            })
            .collect();
        rows.extend(run_case(
            Case {
                suite: "fuse",
                name: format!("{case_name}{}", at.label()),
                unit,
                better: Better::Higher,
                baseline: baseline.into(),
                subjects,
            },
            cfg.repeats,
        ));
    }
    // Leave the servers free for whatever runs next.
    for (name, _) in places.dirs() {
        if let Some(pid) = places.server_pid(name) {
            if let Err(e) = Placement::Free.pin_server(pid) {
                eprintln!("bench: {e}");
            }
        }
    }
    for (_, dir) in places.dirs() {
        let _ = std::fs::remove_file(dir.join("bench.dat"));
    }
    let _ = std::fs::remove_file(direct.dir.join("bench.dat"));
    Ok(rows)
}

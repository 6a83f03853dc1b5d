//! `vhost`: 4k random IOPS through the vhost-user-blk daemon, driven by the
//! crate's own frontend (real virtqueues in shared memfd guest RAM, eventfd
//! kicks and calls, as a VMM would), against fio on the same backing file.
//!
//! The daemon serves a plain-file backend here; [`vhost_iops`] takes any
//! `BlockBackend`, so the `disk` suite can run the same load through a
//! VirtualDisk. Daemon and load generator share this process (threads), as
//! the daemon and VMM would share the host's cores.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmfs_vhost_blk::frontend::{BlkFrontend, DriverOptions, Layout, Request};
use vmfs_vhost_blk::{serve, BlockBackend, FileBackend, ServeOptions};

use crate::fio::{self, FioJob};
use crate::harness::{run_case, Better, Case, Row, Subject};
use crate::{tools, Config};

/// Direction of a random 4k workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rw {
    Read,
    Write,
}

/// Serve `backend` on a socket under `dir` and run 4 KiB random `rw` at
/// total depth `depth` spread over `queues` queues (one load thread per
/// queue) for `runtime`; returns IOPS.
pub fn vhost_iops(
    backend: Arc<dyn BlockBackend>,
    dir: &Path,
    rw: Rw,
    depth: u16,
    queues: u16,
    runtime: Duration,
) -> Result<f64, String> {
    let socket = dir.join(format!("vhost-bench-{}.sock", std::process::id()));
    let sectors_4k = backend.size() / 4096;
    if sectors_4k == 0 {
        return Err("backend smaller than 4 KiB".into());
    }
    let opts = ServeOptions {
        num_queues: queues,
        serial: "vmfs-bench".into(),
        ..ServeOptions::default()
    };
    let stop = opts.shutdown.clone();
    let sock = socket.clone();
    let daemon = std::thread::spawn(move || serve(backend, &sock, opts));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > deadline || daemon.is_finished() {
            stop.shutdown();
            let why = match daemon.join() {
                Ok(Err(e)) => e.to_string(),
                _ => "socket never appeared".into(),
            };
            return Err(format!("vhost-user-blk daemon did not start: {why}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let per_queue = depth.div_ceil(queues).max(1);
    let result = (|| {
        let driver = DriverOptions {
            num_queues: queues,
            queue_size: 256,
            event_idx: true,
            slots_per_queue: per_queue,
            max_data: 4096,
            timeout: Duration::from_secs(10),
        };
        let (_frontend, qs) = BlkFrontend::connect(&socket, &driver).map_err(|e| e.to_string())?;
        let go = Arc::new(AtomicBool::new(true));
        let start = Instant::now();
        let workers: Vec<_> = qs
            .into_iter()
            .enumerate()
            .map(|(i, mut q)| {
                let go = go.clone();
                std::thread::spawn(move || -> Result<u64, String> {
                    q.set_copy_data(false);
                    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1);
                    let buf = vec![0x5Au8; 4096];
                    let mut next = |q: &mut vmfs_vhost_blk::frontend::BlkQueue| {
                        // xorshift64: cheap, and the same sequence every run.
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let sector = (rng % sectors_4k) * 8;
                        let req = match rw {
                            Rw::Read => Request::Read { sector, len: 4096 },
                            Rw::Write => Request::Write { sector, data: &buf },
                        };
                        q.push(&req, Layout::Direct)
                            .map(drop)
                            .map_err(|e| e.to_string())
                    };
                    for _ in 0..per_queue {
                        next(&mut q)?;
                    }
                    q.kick().map_err(|e| e.to_string())?;
                    let mut done = 0u64;
                    while go.load(Ordering::Relaxed) {
                        for c in q.wait().map_err(|e| e.to_string())? {
                            if c.status != 0 {
                                return Err(format!("request failed with status {}", c.status));
                            }
                            done += 1;
                            next(&mut q)?;
                        }
                        q.kick().map_err(|e| e.to_string())?;
                    }
                    // Drain what is still in flight before the disconnect.
                    while q.in_flight() > 0 {
                        q.wait().map_err(|e| e.to_string())?;
                    }
                    Ok(done)
                })
            })
            .collect();
        std::thread::sleep(runtime);
        go.store(false, Ordering::Relaxed);
        let mut total = 0;
        for w in workers {
            total += w.join().map_err(|_| "load thread panicked".to_string())??;
        }
        Ok(total as f64 / start.elapsed().as_secs_f64())
    })();
    stop.shutdown();
    match daemon.join() {
        Ok(Ok(())) => result,
        Ok(Err(e)) => Err(format!("daemon: {e}")),
        Err(_) => Err("daemon thread panicked".into()),
    }
}

/// Start from a cold page cache for `file`, as fio does for its jobs
/// (`invalidate=1`), so both sides read the same way.
fn drop_page_cache(file: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(file).map_err(|e| format!("opening {}: {e}", file.display()))?;
    // SAFETY: the fd is open for the duration of the call; fadvise only
    // drops clean cached pages and touches no memory of ours.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(format!("posix_fadvise on {}: error {rc}", file.display()));
    }
    Ok(())
}

pub fn run(cfg: &Config) -> Result<Vec<Row>, String> {
    let fio_bin = tools::ensure("fio", "fio")?;
    let file = cfg.work_dir.join("vhost-backing.img");
    let size = cfg.file_size();
    fio::prefill(&fio_bin, &file, size)?;
    let runtime = Duration::from_secs(u64::from(cfg.runtime_secs()));
    // (case, direction, total depth, queues, fio engine at that depth)
    let workloads: [(&str, Rw, u16, u16, &'static str); 4] = [
        ("4k randread QD1", Rw::Read, 1, 1, "psync"),
        ("4k randwrite QD1", Rw::Write, 1, 1, "psync"),
        ("4k randread QD32 (2 queues)", Rw::Read, 32, 2, "io_uring"),
        ("4k randwrite QD32 (2 queues)", Rw::Write, 32, 2, "io_uring"),
    ];
    let mut rows = Vec::new();
    for (name, rw, depth, queues, engine) in workloads {
        let anchor = format!("fio {engine} buffered QD{depth}");
        let fio_job = FioJob {
            rw: if rw == Rw::Read {
                "randread"
            } else {
                "randwrite"
            },
            block_size: "4k",
            iodepth: u32::from(depth),
            ioengine: engine,
            // The file backend does buffered pread/pwrite: compare like with like.
            direct: false,
            size,
            runtime_secs: cfg.runtime_secs(),
        };
        let direct_job = FioJob {
            ioengine: "io_uring",
            direct: true,
            ..fio_job.clone()
        };
        let (fio_bin, fio_file) = (fio_bin.clone(), file.clone());
        let (fio_bin2, fio_file2) = (fio_bin.clone(), file.clone());
        let vhost_file = file.clone();
        let dir = cfg.work_dir.clone();
        let case = Case {
            suite: "vhost",
            name: name.to_string(),
            unit: "IOPS",
            better: Better::Higher,
            baseline: anchor.clone(),
            subjects: vec![
                Subject {
                    name: "vhost-user-blk (file backend)".into(),
                    run: Box::new(move || {
                        drop_page_cache(&vhost_file)?;
                        let backend =
                            FileBackend::open(&vhost_file, false).map_err(|e| e.to_string())?;
                        vhost_iops(Arc::new(backend), &dir, rw, depth, queues, runtime)
                    }),
                },
                Subject {
                    name: anchor,
                    run: Box::new(move || Ok(fio::run(&fio_bin, &fio_file, &fio_job)?.iops)),
                },
                Subject {
                    name: format!("fio io_uring O_DIRECT QD{depth} (device limit)"),
                    run: Box::new(move || Ok(fio::run(&fio_bin2, &fio_file2, &direct_job)?.iops)),
                },
            ],
        };
        rows.extend(run_case(case, cfg.repeats));
    }
    let _ = std::fs::remove_file(&file);
    Ok(rows)
}

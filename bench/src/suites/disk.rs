//! `disk`: virtual disks on the volume (`vmfs::disk::VirtualDisk`).
//!
//! - 4k random IOPS through VirtualDisk (an eager-zeroed disk, so no
//!   allocation; the volume image's page cache dropped before each run, as
//!   fio does for its file) against fio on a raw backing file of the same
//!   size on the same filesystem (io_uring O_DIRECT, and buffered psync);
//! - the cost of a thin disk's first write into a new 1 MiB block
//!   (allocation: one journaled transaction) against an overwrite;
//! - cloning a thin disk with few data: 10 GiB with 1 GiB written (quick:
//!   1 GiB with 64 MiB), against copying the same amount of data as a host
//!   file, and against the same disk with a quarter of the data — the clone
//!   time follows the data, not the disk size.

use std::sync::Arc;
use std::time::Instant;

use vmfs::cluster::{Host, HostConfig};
use vmfs::dev::{FileDev, FileDevOptions, SharedDev};
use vmfs::disk::jobs::{clone_disk, create_disk, flat_name};
use vmfs::disk::{DiskOptions, FsStore, ReadLock, VirtualDisk, WriteLock};
use vmfs::fs::Fs;
use vmfs::vmdk::{ExtentStore, Provisioning};
use vmfs::volume::{mkfs, MkfsOptions, Volume};

use crate::fio::{self, FioJob};
use crate::harness::{run_case, Better, Case, Row, Subject};
use crate::{tools, Config};

const MIB: u64 = 1 << 20;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A fresh volume image in the work directory, joined and mounted.
fn volume(cfg: &Config, size: u64) -> Result<(Fs, std::path::PathBuf), String> {
    let img = cfg.work_dir.join("disk-vol.img");
    let _ = std::fs::remove_file(&img);
    let dev: SharedDev = Arc::new(
        FileDev::open(
            &img,
            FileDevOptions {
                create_size: Some(size),
                ..FileDevOptions::default()
            },
        )
        .map_err(err)?,
    );
    let opts = MkfsOptions {
        label: "bench-disk".into(),
        max_hosts: 8,
        ..Default::default()
    };
    mkfs(&dev, &opts, false).map_err(err)?;
    let host =
        Host::join(Volume::open(dev).map_err(err)?, HostConfig::new("bench")).map_err(err)?;
    host.start();
    let fs = Fs::mount(host).map_err(err)?;
    fs.mkdir(fs.root(), b"vm", 0o755, 0, 0).map_err(err)?;
    Ok((fs, img))
}

fn close(fs: Fs, img: &std::path::Path) {
    let host = fs.host().clone();
    let _ = fs.unmount();
    drop(fs);
    let _ = host.leave();
    let _ = std::fs::remove_file(img);
}

/// xorshift offsets, 4 KiB aligned, inside `size`.
fn offsets(seed: u64, size: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % (size / 4096)) * 4096
    }
}

/// Drop the page cache of the volume image, as fio does for its file
/// (`invalidate=1`), so VirtualDisk's reads reach the disk too.
fn drop_cache(img: &std::path::Path) -> Result<(), String> {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::File::open(img).map_err(err)?;
    // SAFETY: posix_fadvise only reads its integer arguments; the
    // descriptor is owned by `f` and open for the duration of the call.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(format!("posix_fadvise({}): error {rc}", img.display()));
    }
    Ok(())
}

/// IOPS of 4 KiB random requests through `disk` for `secs`, `qd` in flight.
fn disk_iops(disk: &VirtualDisk, write: bool, qd: usize, secs: u32) -> Result<f64, String> {
    let mut next = offsets(0x9e37_79b9, disk.capacity());
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < f64::from(secs) {
        if write {
            let fs: Vec<_> = (0..qd)
                .map(|_| disk.write(next(), vec![0x5a; 4096]))
                .collect();
            for f in fs {
                f.wait().map_err(err)?;
            }
        } else {
            let fs: Vec<_> = (0..qd).map(|_| disk.read(next(), 4096)).collect();
            for f in fs {
                f.wait().map_err(err)?;
            }
        }
        n += qd as u64;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn iops_cases(cfg: &Config, rows: &mut Vec<Row>) -> Result<(), String> {
    let fio_bin = tools::ensure("fio", "fio")?;
    let size = cfg.file_size();
    let raw = cfg.work_dir.join("disk-raw.img");
    fio::prefill(&fio_bin, &raw, size)?;
    let (fs, img) = volume(cfg, size + 512 * MIB)?;
    let path = "vm/iops.vmdk";
    create_disk(&fs, path, size, Provisioning::EagerZeroedThick, |_, _| {}).map_err(err)?;
    let opts = DiskOptions {
        workers: 4,
        ..DiskOptions::default()
    };
    let disk = VirtualDisk::open(&fs, path, &opts).map_err(err)?;
    for (name, rw, write, qd) in [
        ("4k randread QD1", "randread", false, 1u32),
        ("4k randwrite QD1", "randwrite", true, 1),
        ("4k randread QD8", "randread", false, 8),
    ] {
        let fio_sub = |engine: &'static str, direct: bool| {
            let (fio_bin, raw) = (fio_bin.clone(), raw.clone());
            let job = FioJob {
                rw,
                block_size: "4k",
                iodepth: if engine == "psync" { 1 } else { qd },
                ioengine: engine,
                direct,
                size,
                runtime_secs: cfg.runtime_secs(),
                keep_cache: false,
            };
            move || Ok(fio::run(&fio_bin, &raw, &job)?.iops)
        };
        let d = disk.clone();
        let secs = cfg.runtime_secs();
        let vol_img = img.clone();
        let case = Case {
            suite: "disk",
            name: name.to_string(),
            unit: "IOPS",
            better: Better::Higher,
            baseline: "fio raw file, io_uring O_DIRECT".into(),
            subjects: vec![
                Subject {
                    name: "VirtualDisk (eagerzeroedthick)".into(),
                    run: Box::new(move || {
                        d.flush().wait().map_err(err)?;
                        drop_cache(&vol_img)?;
                        disk_iops(&d, write, qd as usize, secs)
                    }),
                },
                Subject {
                    name: "fio raw file, io_uring O_DIRECT".into(),
                    run: Box::new(fio_sub("io_uring", true)),
                },
                Subject {
                    name: "fio raw file, psync buffered".into(),
                    run: Box::new(fio_sub("psync", false)),
                },
            ],
        };
        rows.extend(run_case(case, cfg.repeats));
    }
    disk.close().map_err(err)?;
    close(fs, &img);
    let _ = std::fs::remove_file(&raw);
    Ok(())
}

fn first_write_case(cfg: &Config, rows: &mut Vec<Row>) -> Result<(), String> {
    let blocks: u64 = if cfg.quick { 64 } else { 512 };
    let rounds = cfg.repeats as u64 + 1;
    let (fs, img) = volume(cfg, (rounds + 2) * blocks * MIB + 1024 * MIB)?;
    let counter = std::cell::Cell::new(0u64);
    let time_writes = |disk: &VirtualDisk| -> Result<f64, String> {
        let start = Instant::now();
        for i in 0..blocks {
            disk.write(i * MIB + 8192, vec![0xa5; 4096])
                .wait()
                .map_err(err)?;
        }
        disk.flush().wait().map_err(err)?;
        Ok(start.elapsed().as_secs_f64() * 1e6 / blocks as f64)
    };
    let fresh = || -> Result<f64, String> {
        let n = counter.get();
        counter.set(n + 1);
        let path = format!("vm/first-{n}.vmdk");
        create_disk(&fs, &path, blocks * MIB, Provisioning::Thin, |_, _| {}).map_err(err)?;
        let disk = VirtualDisk::open(&fs, &path, &DiskOptions::default()).map_err(err)?;
        let r = time_writes(&disk);
        disk.close().map_err(err)?;
        r
    };
    let over_path = "vm/over.vmdk";
    create_disk(&fs, over_path, blocks * MIB, Provisioning::Thin, |_, _| {}).map_err(err)?;
    let over = VirtualDisk::open(&fs, over_path, &DiskOptions::default()).map_err(err)?;
    time_writes(&over)?;
    let o2 = over.clone();
    let case = Case {
        suite: "disk",
        name: format!("thin disk: 4 KiB write into each of {blocks} 1 MiB blocks"),
        unit: "µs/write",
        better: Better::Lower,
        baseline: "overwrite (block allocated)".into(),
        subjects: vec![
            Subject {
                name: "first write (allocates)".into(),
                run: Box::new(fresh),
            },
            Subject {
                name: "overwrite (block allocated)".into(),
                run: Box::new(move || time_writes(&o2)),
            },
        ],
    };
    rows.extend(run_case(case, cfg.repeats));
    over.close().map_err(err)?;
    close(fs, &img);
    Ok(())
}

/// Write `data` bytes spread over `disk` in 1 MiB pieces.
fn fill(fs: &Fs, path: &str, data: u64) -> Result<(), String> {
    let disk = VirtualDisk::open(fs, path, &DiskOptions::default()).map_err(err)?;
    let pieces = data / MIB;
    let stride = disk.capacity() / MIB / pieces;
    for i in 0..pieces {
        let v: Vec<u8> = (0..MIB).map(|b| (b as u8) ^ (i as u8) | 1).collect();
        disk.write(i * stride * MIB, v).wait().map_err(err)?;
    }
    disk.close().map_err(err)
}

fn clone_case(cfg: &Config, rows: &mut Vec<Row>) -> Result<(), String> {
    let (cap, data) = if cfg.quick {
        (1024 * MIB, 64 * MIB)
    } else {
        (10240 * MIB, 1024 * MIB)
    };
    let (fs, img) = volume(cfg, cap * 2 + data * 4 + 1024 * MIB)?;
    create_disk(&fs, "vm/big.vmdk", cap, Provisioning::Thin, |_, _| {}).map_err(err)?;
    fill(&fs, "vm/big.vmdk", data)?;
    create_disk(&fs, "vm/quarter.vmdk", cap, Provisioning::Thin, |_, _| {}).map_err(err)?;
    fill(&fs, "vm/quarter.vmdk", data / 4)?;
    let host_file = cfg.work_dir.join("disk-clone-src.bin");
    std::fs::write(&host_file, vec![0x42u8; data as usize]).map_err(err)?;
    let host_copy = cfg.work_dir.join("disk-clone-dst.bin");
    let store = FsStore::new(fs.clone(), WriteLock::Exclusive, ReadLock::Shared);
    let clone = |src: &'static str| {
        let (fs, store) = (fs.clone(), store.clone());
        move || -> Result<f64, String> {
            let dst = "vm/clone.vmdk";
            let start = Instant::now();
            clone_disk(&fs, src, dst, Provisioning::Thin, |_, _| {}).map_err(err)?;
            let t = start.elapsed().as_secs_f64();
            store.remove(&flat_name(dst)).map_err(err)?;
            store.remove(dst).map_err(err)?;
            Ok(t)
        }
    };
    let (hf, hc) = (host_file.clone(), host_copy.clone());
    let gib = |b: u64| b as f64 / (1024.0 * MIB as f64);
    let case = Case {
        suite: "disk",
        name: format!(
            "clone a {:.0} GiB thin disk with {:.3} GiB written",
            gib(cap),
            gib(data)
        ),
        unit: "s",
        better: Better::Lower,
        baseline: "host file copy of the same data (std::fs::copy)".into(),
        subjects: vec![
            Subject {
                name: "vmfs clone_disk".into(),
                run: Box::new(clone("vm/big.vmdk")),
            },
            Subject {
                name: "vmfs clone_disk, a quarter of the data".into(),
                run: Box::new(clone("vm/quarter.vmdk")),
            },
            Subject {
                name: "host file copy of the same data (std::fs::copy)".into(),
                run: Box::new(move || {
                    let start = Instant::now();
                    std::fs::copy(&hf, &hc).map_err(err)?;
                    let f = std::fs::File::open(&hc).map_err(err)?;
                    f.sync_all().map_err(err)?;
                    Ok(start.elapsed().as_secs_f64())
                }),
            },
        ],
    };
    rows.extend(run_case(case, cfg.repeats));
    let _ = std::fs::remove_file(&host_file);
    let _ = std::fs::remove_file(&host_copy);
    close(fs, &img);
    Ok(())
}

pub fn run(cfg: &Config) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    iops_cases(cfg, &mut rows)?;
    first_write_case(cfg, &mut rows)?;
    clone_case(cfg, &mut rows)?;
    Ok(rows)
}

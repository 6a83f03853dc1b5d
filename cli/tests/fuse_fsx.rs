//! A random-operation verifier in the manner of fsx: random writes,
//! truncates, reads, hole punches, zero ranges, preallocations, mmap reads
//! and writes, fsyncs and reopens on a file in a `vmfs mount`, checked
//! against an in-memory model. Any miscompare fails with the recent
//! operation log.
//!
//! VMFS_FSX_OPS (default 20,000: about 30 s per seed on an idle machine)
//! operations per seed; VMFS_FSX_SEEDS (default "1,2,3") comma-separated
//! seeds. The full check is `VMFS_FSX_OPS=100000` (3 × 100,000 operations:
//! 11 min on the 2-core development machine at load 6–10; about 2.5 min
//! idle, going by 5,000-operation runs).

mod fuse_util;

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use fuse_util::{check_image, env_or, fuse_ready, make_image, mount_with};

/// Largest file the run makes (crosses several 1 MiB file blocks).
const MAX_LEN: u64 = 6 << 20;
/// Largest single transfer.
const MAX_IO: u64 = 128 << 10;
const PAGE: u64 = 4096;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn range(&mut self) -> (u64, u64) {
        let off = self.below(MAX_LEN);
        let len = 1 + self.below(MAX_IO.min(MAX_LEN - off));
        (off, len)
    }
}

struct Run {
    rng: Rng,
    model: Vec<u8>,
    file: File,
    path: std::path::PathBuf,
    log: Vec<String>,
    op: u64,
    counts: [u64; 11],
    /// Time spent per kind of operation.
    times: [std::time::Duration; 11],
}

const NAMES: [&str; 11] = [
    "write", "read", "truncate", "punch", "zero", "alloc", "mapread", "mapwrite", "fsync",
    "reopen", "stat",
];

fn open(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
        .unwrap()
}

fn fallocate(f: &File, mode: i32, off: u64, len: u64) {
    // SAFETY: fallocate on a descriptor we own.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) };
    assert_eq!(r, 0, "fallocate: {}", std::io::Error::last_os_error());
}

/// Map `off..off+len` of `f` (page-aligned start) and run `f` on the bytes.
fn with_map<T>(f: &File, off: u64, len: u64, write: bool, g: impl FnOnce(&mut [u8]) -> T) -> T {
    let start = off / PAGE * PAGE;
    let span = (off + len - start) as usize;
    let prot = libc::PROT_READ | if write { libc::PROT_WRITE } else { 0 };
    // SAFETY: a fresh shared mapping of our own descriptor; unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            prot,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            start as i64,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the mapping is `span` bytes long and lives until munmap.
    let all = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, span) };
    let r = g(&mut all[(off - start) as usize..]);
    if write {
        // SAFETY: the mapping made above.
        let s = unsafe { libc::msync(p, span, libc::MS_SYNC) };
        assert_eq!(s, 0, "msync: {}", std::io::Error::last_os_error());
    }
    // SAFETY: unmapping exactly what was mapped.
    unsafe { libc::munmap(p, span) };
    r
}

impl Run {
    fn fail(&self, what: String) -> ! {
        let tail = self.log.len().saturating_sub(25);
        panic!(
            "fsx miscompare at op {}: {what}\nlast operations:\n{}",
            self.op,
            self.log[tail..].join("\n")
        );
    }

    fn check(&self, off: u64, got: &[u8]) {
        let want = &self.model[off as usize..off as usize + got.len()];
        if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
            self.fail(format!(
                "byte {} (file offset {}): got {:#04x}, model {:#04x}",
                i,
                off + i as u64,
                got[i],
                want[i]
            ));
        }
    }

    fn resize(&mut self, len: u64) {
        self.model.resize(len as usize, 0);
    }

    fn step(&mut self) {
        self.op += 1;
        let size = self.model.len() as u64;
        let which = match self.rng.below(100) {
            0..=29 => 0,
            30..=54 => 1,
            55..=61 => 2,
            62..=68 => 3,
            69..=73 => 4,
            74..=77 => 5,
            78..=83 => 6,
            84..=89 => 7,
            90..=93 => 8,
            94..=96 => 9,
            _ => 10,
        };
        self.counts[which] += 1;
        let t0 = Instant::now();
        self.run_op(which, size);
        self.times[which] += t0.elapsed();
    }

    fn run_op(&mut self, which: usize, size: u64) {
        match which {
            0 => {
                let (off, len) = self.rng.range();
                let fill: Vec<u8> = (0..len).map(|_| self.rng.next() as u8).collect();
                self.log.push(format!("write {off} +{len}"));
                self.file.write_all_at(&fill, off).unwrap();
                if off + len > size {
                    self.resize(off + len);
                }
                self.model[off as usize..(off + len) as usize].copy_from_slice(&fill);
            }
            1 if size > 0 => {
                let off = self.rng.below(size);
                let len = 1 + self.rng.below(MAX_IO.min(size - off));
                self.log.push(format!("read {off} +{len}"));
                let mut buf = vec![0u8; len as usize];
                self.file.read_exact_at(&mut buf, off).unwrap();
                self.check(off, &buf);
            }
            2 => {
                let len = self.rng.below(MAX_LEN);
                self.log.push(format!("truncate {size} -> {len}"));
                self.file.set_len(len).unwrap();
                self.resize(len);
            }
            3 | 4 => {
                let (off, len) = self.rng.range();
                let keep = which == 3 || self.rng.below(2) == 0;
                let mode = if which == 3 {
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
                } else if keep {
                    libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
                } else {
                    libc::FALLOC_FL_ZERO_RANGE
                };
                self.log
                    .push(format!("{} {off} +{len} keep={keep}", NAMES[which]));
                fallocate(&self.file, mode, off, len);
                if !keep && off + len > size {
                    self.resize(off + len);
                }
                let end = (off + len).min(self.model.len() as u64);
                if off < end {
                    self.model[off as usize..end as usize].fill(0);
                }
            }
            5 => {
                let (off, len) = self.rng.range();
                let keep = self.rng.below(2) == 0;
                self.log.push(format!("alloc {off} +{len} keep={keep}"));
                let mode = if keep { libc::FALLOC_FL_KEEP_SIZE } else { 0 };
                fallocate(&self.file, mode, off, len);
                if !keep && off + len > size {
                    self.resize(off + len);
                }
            }
            6 if size > 0 => {
                let off = self.rng.below(size);
                let len = 1 + self.rng.below(MAX_IO.min(size - off));
                self.log.push(format!("mapread {off} +{len}"));
                let got = with_map(&self.file, off, len, false, |b| b[..len as usize].to_vec());
                self.check(off, &got);
            }
            7 if size > 0 => {
                let off = self.rng.below(size);
                let len = 1 + self.rng.below(MAX_IO.min(size - off));
                let fill: Vec<u8> = (0..len).map(|_| self.rng.next() as u8).collect();
                self.log.push(format!("mapwrite {off} +{len}"));
                with_map(&self.file, off, len, true, |b| {
                    b[..len as usize].copy_from_slice(&fill)
                });
                self.model[off as usize..(off + len) as usize].copy_from_slice(&fill);
            }
            8 => {
                self.log.push("fsync".into());
                self.file.sync_all().unwrap();
            }
            9 => {
                self.log.push("close+reopen".into());
                self.file = open(&self.path);
            }
            _ => {
                self.log.push("stat".into());
                let got = self.file.metadata().unwrap().len();
                if got != size {
                    self.fail(format!("size {got}, model {size}"));
                }
            }
        }
    }

    fn verify_all(&self) {
        let got = std::fs::read(&self.path).unwrap();
        if got.len() != self.model.len() {
            self.fail(format!(
                "final size {}, model {}",
                got.len(),
                self.model.len()
            ));
        }
        self.check(0, &got);
    }
}

#[test]
fn random_operations_match_the_model() {
    if !fuse_ready("fuse_fsx") {
        return;
    }
    let ops: u64 = env_or("VMFS_FSX_OPS", 20_000);
    let seeds: Vec<u64> = std::env::var("VMFS_FSX_SEEDS")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("VMFS_FSX_SEEDS: comma-separated numbers")
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 1 << 30);
    // No takeover is tested here: relaxed timeouts (H 0.5 s, F 3 s, D 6 s)
    // keep a heavily loaded machine's slow flushes from fencing the host
    // in the middle of a long run.
    let m = mount_with(
        &img,
        &dir.path().join("m"),
        "fsx",
        &[
            "--heartbeat-ms",
            "500",
            "--io-timeout-ms",
            "1000",
            "--self-fence-ms",
            "3000",
            "--dead-after-ms",
            "6000",
        ],
    );
    let run_all = || {
        for &seed in &seeds {
            run_seed(&m.mountpoint, seed, ops);
        }
    };
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run_all)) {
        eprintln!("vmfs mount said:\n{}", m.output());
        std::panic::resume_unwind(p);
    }
    let (st, out) = m.stop();
    assert!(st.success(), "vmfs mount exited {st}:\n{out}");
    check_image(&img);
}

fn run_seed(mountpoint: &Path, seed: u64, ops: u64) {
    {
        let path = mountpoint.join(format!("fsx-{seed}"));
        let mut run = Run {
            rng: Rng(seed),
            model: Vec::new(),
            file: open(&path),
            path,
            log: Vec::new(),
            op: 0,
            counts: [0; 11],
            times: Default::default(),
        };
        let start = Instant::now();
        for _ in 0..ops {
            run.step();
        }
        run.verify_all();
        let counts: Vec<String> = NAMES
            .iter()
            .zip(run.counts.iter().zip(run.times))
            .map(|(n, (c, t))| format!("{n} {c} ({:.0?})", t))
            .collect();
        eprintln!(
            "fuse_fsx: seed {seed}: {ops} ops in {:.2?}, 0 miscompares, final size {} ({})",
            start.elapsed(),
            run.model.len(),
            counts.join(", ")
        );
        drop(run);
    }
}

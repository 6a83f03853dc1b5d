//! `fsck`: time for `vmfs-fsck` to check a volume holding 100,000 files on
//! a 1 TiB thin (sparse) image, next to `e2fsck -fn` on a 1 TiB ext4 image
//! holding the same tree on the same disk. The ext4 figure is a reference
//! point, not like-for-like: e2fsck checks ext4's structures (no heartbeat
//! region, journals per host or lock records), and ext4 keeps small
//! directories and inodes denser.
//!
//! The vmfs volume is filled in-process through `vmfs::fs::Fs` (no FUSE):
//! 100 directories of 1,000 files, every hundredth file holding 4 KiB (each
//! takes a 1 MiB file block: the image grows by about 1 GiB). The ext4
//! image gets the same tree from a host directory with `mkfs.ext4 -d`.
//! Before every timed run both images are dropped from the page cache
//! (`posix_fadvise(DONTNEED)`), so each check reads from the disk.

use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmfs::cluster::{Host, HostConfig};
use vmfs::dev::{
    check_cas, check_then_apply, BlockDev, CasOutcome, DevError, FenceToken, FencedOp, FileDev,
    FileDevOptions, SharedDev,
};
use vmfs::fs::Fs;
use vmfs::volume::{mkfs, MkfsOptions, Volume};

use crate::harness::{run_case, Better, Case, Row, Subject};
use crate::tools::{ensure, workspace_bin};
use crate::Config;

const IMAGE: u64 = 1 << 40;
const PER_DIR: usize = 1000;
const DATA: usize = 4096;

fn files(cfg: &Config) -> usize {
    if cfg.quick {
        2_000
    } else {
        100_000
    }
}

/// Drop `path` from the page cache (it must be clean: written and synced).
fn drop_cache(path: &Path) -> Result<(), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.sync_all()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: posix_fadvise reads only its integer arguments; the
    // descriptor stays open for the call.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(format!("posix_fadvise {}: error {rc}", path.display()));
    }
    Ok(())
}

/// The image while this one process fills it: flushes are skipped and
/// compare-and-write is done under a mutex without the sync FileDev makes
/// durable before answering (the setup is not what is measured, and a sync
/// per transaction makes 100,000 creates take many minutes); the file is
/// synced once at the end. Fenced writes check the slot with a plain read
/// (`check_then_apply`), not under the FileDev range lock.
#[derive(Debug)]
struct SetupDev {
    inner: SharedDev,
    cas: Mutex<()>,
}

impl vmfs::dev::DevWrapper for SetupDev {
    fn inner(&self) -> &dyn BlockDev {
        &*self.inner
    }
    fn flush(&self) -> Result<(), DevError> {
        Ok(())
    }
    fn compare_and_write(
        &self,
        offset: u64,
        expected: &[u8],
        new: &[u8],
    ) -> Result<CasOutcome, DevError> {
        check_cas(self, offset, expected, new)?;
        let _one = self.cas.lock().unwrap_or_else(|e| e.into_inner());
        let mut current = vec![0u8; new.len()];
        self.inner.read_at(&mut current, offset)?;
        if current != expected {
            return Ok(CasOutcome::Miscompare(current));
        }
        self.inner.write_at(new, offset)?;
        Ok(CasOutcome::Done)
    }
    fn write_fenced(
        &self,
        op: FencedOp<'_>,
        offset: u64,
        fence: &FenceToken,
    ) -> Result<(), DevError> {
        check_then_apply(self, op, offset, fence)
    }
}

/// Format a 1 TiB sparse image and fill it with `n` files through Fs.
fn vmfs_volume(path: &Path, n: usize) -> Result<Duration, String> {
    let dev: SharedDev = Arc::new(
        FileDev::open(
            path,
            FileDevOptions {
                create_size: Some(IMAGE),
                ..Default::default()
            },
        )
        .map_err(|e| format!("{}: {e}", path.display()))?,
    );
    mkfs(
        &dev,
        &MkfsOptions {
            label: "fsck-bench".into(),
            ..Default::default()
        },
        false,
    )
    .map_err(|e| format!("mkfs: {e}"))?;
    let vol = Volume::open(Arc::new(SetupDev {
        inner: dev.clone(),
        cas: Mutex::new(()),
    }))
    .map_err(|e| format!("open volume: {e}"))?;
    let host = Host::join(vol, HostConfig::new("bench")).map_err(|e| format!("join: {e}"))?;
    host.start();
    let fs = Fs::mount(host.clone()).map_err(|e| format!("mount: {e}"))?;
    let t = Instant::now();
    let data = vec![0xa5u8; DATA];
    for d in 0..n.div_ceil(PER_DIR) {
        let dir = fs
            .mkdir(fs.root(), format!("d{d:03}").as_bytes(), 0o755, 0, 0)
            .map_err(|e| format!("mkdir d{d:03}: {e}"))?
            .ino;
        for k in 0..PER_DIR.min(n - d * PER_DIR) {
            let a = fs
                .create(dir, format!("f{k:04}").as_bytes(), 0o644, 0, 0)
                .map_err(|e| format!("create d{d:03}/f{k:04}: {e}"))?;
            if k % 100 == 0 {
                let fh = fs.open(a.ino, true).map_err(|e| format!("open: {e}"))?;
                fs.write(fh, 0, &data).map_err(|e| format!("write: {e}"))?;
                fs.close(fh).map_err(|e| format!("close: {e}"))?;
            }
        }
    }
    let took = t.elapsed();
    fs.unmount().map_err(|e| format!("unmount: {e}"))?;
    drop(fs);
    host.leave().map_err(|e| format!("leave: {e}"))?;
    dev.flush().map_err(|e| format!("flush: {e}"))?;
    Ok(took)
}

/// The same tree as a host directory, then a 1 TiB ext4 image made from it.
fn ext4_image(src: &Path, img: &Path, n: usize) -> Result<(), String> {
    let data = vec![0xa5u8; DATA];
    for d in 0..n.div_ceil(PER_DIR) {
        let dir = src.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for k in 0..PER_DIR.min(n - d * PER_DIR) {
            let f = dir.join(format!("f{k:04}"));
            let body: &[u8] = if k % 100 == 0 { &data } else { &[] };
            std::fs::write(&f, body).map_err(|e| format!("{}: {e}", f.display()))?;
        }
    }
    let mkfs = e2fsprogs("mkfs.ext4")?;
    let out = Command::new(mkfs)
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(src)
        .arg(img)
        .arg("1T")
        .output()
        .map_err(|e| format!("mkfs.ext4: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mkfs.ext4 -d: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// e2fsprogs lives in /usr/sbin, which a non-root PATH often lacks.
fn e2fsprogs(program: &str) -> Result<std::path::PathBuf, String> {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
        .map_or_else(|| ensure(program, "e2fsprogs"), Ok)
}

/// Run a checker; `Ok(seconds)` if it exits with `ok_code`.
fn timed(cmd: &mut Command, ok_code: i32, what: &str) -> Result<f64, String> {
    let t = Instant::now();
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    let secs = t.elapsed().as_secs_f64();
    if out.status.code() != Some(ok_code) {
        return Err(format!(
            "{what} exited {:?}: {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(secs)
}

pub fn run(cfg: &Config) -> Result<Vec<Row>, String> {
    let n = files(cfg);
    let dir = tempfile::tempdir_in(&cfg.work_dir).map_err(|e| e.to_string())?;
    let vimg = dir.path().join("vmfs.img");
    let eimg = dir.path().join("ext4.img");
    let fsck = workspace_bin("vmfs-fsck", "vmfs-fsck")?;
    let filled = vmfs_volume(&vimg, n)?;
    eprintln!(
        "bench: fsck: {n} files created through Fs in {:.1} s ({:.0} files/s)",
        filled.as_secs_f64(),
        n as f64 / filled.as_secs_f64()
    );
    let ext4 = ext4_image(&dir.path().join("tree"), &eimg, n);
    let e2fsck = e2fsprogs("e2fsck");
    let vpath = vimg.clone();
    let mut subjects = vec![Subject {
        name: "vmfs-fsck".into(),
        run: Box::new(move || {
            drop_cache(&vpath)?;
            let mut c = Command::new(&fsck);
            c.arg(&vpath).arg("--json");
            timed(&mut c, 0, "vmfs-fsck")
        }),
    }];
    let anchor = "e2fsck -fn (ext4, reference)";
    subjects.push(Subject {
        name: anchor.into(),
        run: Box::new(move || {
            ext4.clone()?;
            let e2fsck = e2fsck.clone()?;
            drop_cache(&eimg)?;
            let mut c = Command::new(e2fsck);
            c.arg("-fn").arg(&eimg);
            timed(&mut c, 0, "e2fsck -fn")
        }),
    });
    let case = Case {
        suite: "fsck",
        name: format!("check {n} files, 1 TiB thin image, page cache dropped"),
        unit: "s",
        better: Better::Lower,
        baseline: anchor.into(),
        subjects,
    };
    let mut rows = run_case(case, cfg.repeats);
    let rate = n as f64 / filled.as_secs_f64();
    rows.extend(run_case(
        Case {
            suite: "fsck",
            name: format!("populate {n} files through Fs (setup)"),
            unit: "files/s",
            better: Better::Higher,
            baseline: "vmfs Fs".into(),
            subjects: vec![Subject {
                name: "vmfs Fs".into(),
                run: Box::new(move || Ok(rate)),
            }],
        },
        1,
    ));
    Ok(rows)
}

//! Shared by the FUSE tests: images with test timeouts, `vmfs mount`
//! processes, consistency checks.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use vmfs::cluster::Timeouts;
use vmfs::dev::{FileDev, FileDevOptions, SharedDev};
use vmfs::volume::{mkfs, MkfsOptions, Volume};

/// `name` from the environment parsed as `T`, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Test timeouts: the defaults scaled by 1/30 (H = 100 ms, D = 833 ms).
pub fn timeouts() -> Timeouts {
    Timeouts::scaled(1.0 / 30.0)
}

/// Can FUSE tests run here? False (with a loud message) only when the
/// kernel has no /dev/fuse; not being root is a failure.
pub fn fuse_ready(test: &str) -> bool {
    if !Path::new("/dev/fuse").exists() {
        eprintln!(
            "\n*** {test}: SKIPPED — /dev/fuse is absent (load the fuse module: modprobe fuse) ***\n"
        );
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "{test}: FUSE tests mount directly through /dev/fuse and need root"
    );
    true
}

/// Like [`fuse_ready`], but a missing root is a skip too: prints
/// `SKIP: test: reason` and returns false when FUSE cannot be used here.
pub fn fuse_or_skip(test: &str) -> bool {
    let why = if !Path::new("/dev/fuse").exists() {
        "/dev/fuse is absent (modprobe fuse)"
    // SAFETY: geteuid has no preconditions.
    } else if unsafe { libc::geteuid() } != 0 {
        "not root (the mount is made directly through /dev/fuse)"
    } else {
        return true;
    };
    println!("SKIP: {test}: {why}");
    eprintln!("SKIP: {test}: {why}");
    false
}

/// A fresh sparse image of `size` bytes formatted with test timeouts.
pub fn make_image(dir: &Path, size: u64) -> PathBuf {
    let img = dir.join("vol.img");
    let dev: SharedDev = Arc::new(
        FileDev::open(
            &img,
            FileDevOptions {
                create_size: Some(size),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    mkfs(
        &dev,
        &MkfsOptions {
            label: "fusetest".into(),
            max_hosts: 4,
            journal_size: 1 << 20,
            timeouts: timeouts().to_minimums(),
            ..Default::default()
        },
        false,
    )
    .unwrap();
    img
}

/// Walk the volume in `img`; panic listing every problem.
pub fn check_image(img: &Path) -> vmfs::fs::check::Report {
    let dev: SharedDev = Arc::new(
        FileDev::open(
            img,
            FileDevOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let r = vmfs::fs::check::check(&Volume::open(dev).unwrap()).unwrap();
    assert!(
        r.problems.is_empty(),
        "inconsistent volume: {:#?}",
        r.problems
    );
    r
}

/// A running `vmfs mount` process.
pub struct MountProc {
    child: Option<Child>,
    pub mountpoint: PathBuf,
    out: Arc<Mutex<String>>,
}

/// Run `vmfs mount img mountpoint --host-name name` and wait until it
/// serves.
pub fn mount(img: &Path, mountpoint: &Path, name: &str) -> MountProc {
    mount_with(img, mountpoint, name, &[])
}

/// [`mount`] with extra `vmfs mount` options.
pub fn mount_with(img: &Path, mountpoint: &Path, name: &str, extra: &[&str]) -> MountProc {
    mount_env(img, mountpoint, name, extra, &[])
}

/// [`mount_with`] with extra environment variables for the process.
pub fn mount_env(
    img: &Path,
    mountpoint: &Path,
    name: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> MountProc {
    std::fs::create_dir_all(mountpoint).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmfs"))
        .arg("mount")
        .arg(img)
        .arg(mountpoint)
        .args(["--host-name", name])
        .args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let out = out.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if line.contains("mounted at") {
                    let _ = tx.send(());
                }
                out.lock().unwrap().push_str(&(line + "\n"));
            }
        });
    }
    let mut p = MountProc {
        child: Some(child),
        mountpoint: mountpoint.to_path_buf(),
        out,
    };
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let text = p.output();
        p.kill();
        panic!(
            "vmfs mount {} did not come up:\n{text}",
            mountpoint.display()
        );
    }
    p
}

impl MountProc {
    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// SIGTERM and wait: returns the exit status and everything it printed.
    pub fn stop(mut self) -> (ExitStatus, String) {
        let mut c = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let st = c.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        (st, self.output())
    }

    /// The exit status if the process has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// SIGKILL (a crash), then detach the dead mount point.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = vmfs::fuse::detach(&self.mountpoint);
        }
    }
}

impl Drop for MountProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The errno of an I/O result that should have failed.
pub fn errno_of<T: std::fmt::Debug>(r: std::io::Result<T>, what: &str) -> i32 {
    match r {
        Ok(v) => panic!("{what}: succeeded ({v:?}), an error was expected"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: {e} carries no errno")),
    }
}

//! The three places the filesystem suites compare, side by side on one disk:
//! a `vmfs mount` of a fresh image, a bindfs (FUSE passthrough) view of a
//! plain directory, and the plain directory itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tools;

fn is_mounted(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let want = path.to_string_lossy();
    text.lines()
        .any(|l| l.split_whitespace().nth(1) == Some(want.as_ref()))
}

fn wait_mounted(path: &Path, child: &mut Child, what: &str) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if is_mounted(path) {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!(
                "{what} exited ({st}) before mounting {}",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "{what} did not mount {} within 30 s",
        path.display()
    ))
}

fn absolute(p: &Path) -> Result<PathBuf, String> {
    p.canonicalize()
        .map_err(|e| format!("{}: {e}", p.display()))
}

fn need_root(what: &str) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
        return Err(format!("{what} needs root and /dev/fuse"));
    }
    Ok(())
}

/// A `vmfs mount` process serving a fresh image; unmounted (SIGTERM, a
/// clean leave) when dropped.
pub struct VmfsMount {
    child: Child,
    pub dir: PathBuf,
    image: PathBuf,
}

impl VmfsMount {
    /// Format `image` (sparse, `size` bytes) and mount it on `dir`.
    pub fn start(image: &Path, dir: &Path, size: u64) -> Result<VmfsMount, String> {
        VmfsMount::start_with(image, dir, size, &[])
    }

    /// [`VmfsMount::start`] with extra `vmfs mount` options.
    pub fn start_with(
        image: &Path,
        dir: &Path,
        size: u64,
        extra: &[&str],
    ) -> Result<VmfsMount, String> {
        need_root("vmfs mount")?;
        let vmfs = tools::workspace_bin("vmfs", "vmfs")?;
        let _ = std::fs::remove_file(image);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // /proc/self/mounts names mount points by absolute path.
        let dir = &absolute(dir)?;
        let out = Command::new(&vmfs)
            .arg("mkfs")
            .arg(image)
            .args(["--label", "bench", "--max-hosts", "4", "--size"])
            .arg(size.to_string())
            .output()
            .map_err(|e| format!("running vmfs mkfs: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "vmfs mkfs {}: {}",
                image.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let mut child = Command::new(&vmfs)
            .arg("mount")
            .arg(image)
            .arg(dir)
            .args(["--host-name", "bench"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("running vmfs mount: {e}"))?;
        if let Err(e) = wait_mounted(dir, &mut child, "vmfs mount") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(VmfsMount {
            child,
            dir: dir.to_path_buf(),
            image: image.to_path_buf(),
        })
    }

    /// The `vmfs mount` process serving the mount.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for VmfsMount {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

/// bindfs mirroring `src` on `dir`; unmounted when dropped.
pub struct Bindfs {
    pub dir: PathBuf,
}

impl Bindfs {
    pub fn start(src: &Path, dir: &Path) -> Result<Bindfs, String> {
        need_root("bindfs")?;
        let bin = tools::ensure("bindfs", "bindfs")?;
        for d in [src, dir] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let dir = &absolute(dir)?;
        // Foreground mode would tie it to our stdio; the default daemonizes
        // once the mount is made, so waiting for the exit is enough.
        let mut child = Command::new(bin)
            .arg(src)
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("running bindfs: {e}"))?;
        let st = child.wait().map_err(|e| format!("bindfs: {e}"))?;
        if !st.success() {
            return Err(format!(
                "bindfs {} {} failed ({st})",
                src.display(),
                dir.display()
            ));
        }
        wait_mounted(dir, &mut child, "bindfs")?;
        Ok(Bindfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Bindfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Drop the page cache (as root) so read figures come from the storage,
/// not from memory left by the previous subject.
pub fn drop_caches() {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

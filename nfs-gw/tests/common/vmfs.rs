//! Test support for the vmfs backend: fresh images, the `nfs-gw DEVICE`
//! process (stopped with SIGTERM to check its clean exit, or SIGKILLed),
//! and a second vmfs host in the test process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use vmfs::cluster::{Host, HostConfig, Timeouts};
use vmfs::dev::{FileDev, FileDevOptions, SharedDev};
use vmfs::fs::Fs;
use vmfs::volume::{mkfs, MkfsOptions, Volume};

/// Test timeouts: the defaults scaled by 1/30 (H = 100 ms, D = 833 ms).
pub fn timeouts() -> Timeouts {
    Timeouts::scaled(1.0 / 30.0)
}

/// A fresh sparse image `dir/vol.img` of `size` bytes labelled `label`.
pub fn make_image(dir: &Path, size: u64, label: &str) -> PathBuf {
    make_image_with(dir, size, label, None)
}

/// [`make_image`] with a number of inodes.
pub fn make_image_with(dir: &Path, size: u64, label: &str, inodes: Option<u64>) -> PathBuf {
    let img = dir.join("vol.img");
    let dev: SharedDev = Arc::new(
        FileDev::open(
            &img,
            FileDevOptions {
                create_size: Some(size),
                ..Default::default()
            },
        )
        .expect("create image"),
    );
    mkfs(
        &dev,
        &MkfsOptions {
            label: label.into(),
            max_hosts: 8,
            inodes,
            timeouts: timeouts().to_minimums(),
            ..Default::default()
        },
        false,
    )
    .expect("mkfs");
    img
}

/// Opens the volume in `img`.
pub fn open_volume(img: &Path, read_only: bool) -> Volume {
    let dev: SharedDev = Arc::new(
        FileDev::open(
            img,
            FileDevOptions {
                read_only,
                ..Default::default()
            },
        )
        .expect("open image"),
    );
    Volume::open(dev).expect("open volume")
}

/// Another vmfs host of the volume, in this process.
pub struct OtherHost {
    pub host: Host,
    pub fs: Fs,
}

impl OtherHost {
    pub fn join(img: &Path, name: &str) -> OtherHost {
        let host = Host::join(open_volume(img, false), HostConfig::new(name)).expect("join");
        host.start();
        let fs = Fs::mount(host.clone()).expect("mount fs");
        OtherHost { host, fs }
    }

    /// The inode of `/name` (root directory entries only).
    pub fn ino(&self, name: &str) -> u64 {
        self.fs
            .lookup(self.fs.root(), name.as_bytes())
            .expect("lookup")
            .ino
    }

    /// Reads the whole file `/name`.
    pub fn read_all(&self, name: &str) -> Vec<u8> {
        let ino = self.ino(name);
        let fh = self.fs.open(ino, false).expect("open");
        let size = self.fs.getattr(ino).unwrap().size as usize;
        let mut out = Vec::with_capacity(size);
        while out.len() < size {
            let b = self
                .fs
                .read(fh, out.len() as u64, (size - out.len()).min(1 << 20))
                .unwrap();
            assert!(!b.is_empty(), "short read");
            out.extend_from_slice(&b);
        }
        self.fs.close(fh).unwrap();
        out
    }

    pub fn leave(self) {
        self.fs.unmount().expect("unmount");
        drop(self.fs);
        self.host.leave().expect("leave");
    }
}

/// A running `nfs-gw DEVICE` process.
pub struct VmfsGateway {
    child: Option<Child>,
    pub port: u16,
    pub label: String,
    pub img: PathBuf,
}

impl VmfsGateway {
    /// Starts `nfs-gw IMG` on a free loopback port, without root squash,
    /// with its host identity beside the image, plus `extra` flags.
    pub fn start(img: &Path, label: &str, extra: &[&str]) -> VmfsGateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nfs-gw"))
            .arg(img)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--no-rpcbind",
                "--no-root-squash",
            ])
            .args(["--host-name", "nfs-gw-test"])
            .args(extra)
            .env("NFS_GW_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nfs-gw");
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out);
        let mut line = String::new();
        lines.read_line(&mut line).expect("read banner");
        let port = line
            .trim()
            .strip_prefix("nfs-gw listening on ")
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected banner {line:?}"));
        let mut exp = String::new();
        lines.read_line(&mut exp).expect("read export line");
        assert_eq!(exp.trim(), format!("exporting /{label}"));
        // Keep draining stdout so the gateway never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut s = String::new();
            while lines.read_line(&mut s).map(|n| n > 0).unwrap_or(false) {
                eprint!("[nfs-gw] {s}");
                s.clear();
            }
        });
        VmfsGateway {
            child: Some(child),
            port,
            label: label.to_string(),
            img: img.to_path_buf(),
        }
    }

    /// A libnfs URL for `path` inside the export.
    pub fn url(&self, path: &str) -> String {
        format!(
            "nfs://127.0.0.1/{}{}?nfsport={}&mountport={}",
            self.label, path, self.port, self.port
        )
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGTERM, and wait: the gateway must exit 0 (it left cleanly).
    pub fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let st = child.wait().expect("wait nfs-gw");
        assert!(st.success(), "nfs-gw did not exit cleanly: {st}");
    }

    /// SIGKILL (a crash), and wait.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for VmfsGateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Heartbeat slot states of the volume: (host name, state) of slots in use.
pub fn slots(img: &Path) -> Vec<(String, vmfs::format::SlotState)> {
    let vol = open_volume(img, true);
    vmfs::cluster::read_region(&vol)
        .expect("read heartbeat region")
        .into_iter()
        .filter_map(Result::ok)
        .filter(|s| s.state != vmfs::format::SlotState::Free)
        .map(|s| (s.host_name.clone(), s.state))
        .collect()
}

/// A temporary directory in memory (/dev/shm) when there is one: for tests
/// whose subject is not flush latency (thousands of journal commits).
pub fn memory_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("nfsgw-test")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

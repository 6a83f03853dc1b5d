//! Test support: start the `nfs-gw` binary on a free loopback port, run the
//! libnfs command-line tools against it, and a small NFSv3 client speaking
//! the crate's own XDR for procedures the tools cannot drive.
#![allow(dead_code)]

pub mod client;
pub mod vmfs;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A running gateway process, killed on drop.
pub struct Gateway {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub name: String,
}

impl Gateway {
    /// Exports a fresh temporary directory as `/NAME` with `extra` flags.
    pub fn start(name: &str, extra: &[&str]) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("nfsgw-test")
            .tempdir()
            .expect("tempdir");
        Self::start_in(dir, name, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, name: &str, extra: &[&str]) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nfs-gw"))
            .args(["--listen", "127.0.0.1:0", "--export-name", name, "--dir"])
            .arg(dir.path())
            .arg("--no-rpcbind")
            .args(extra)
            .env("NFS_GW_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nfs-gw");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .expect("read banner");
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected banner {line:?}"));
        Gateway {
            child,
            port,
            dir,
            name: name.to_string(),
        }
    }

    /// A libnfs URL for `path` inside the export (no rpcbind needed).
    pub fn url(&self, path: &str) -> String {
        format!(
            "nfs://127.0.0.1/{}{}?nfsport={}&mountport={}",
            self.name, path, self.port, self.port
        )
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Path of a libnfs tool; panics with a clear message when missing.
pub fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{name} not found: install the Debian package libnfs-utils \
         (scripts/test-all.sh does this)"
    );
}

/// Runs a libnfs tool with a timeout; returns its output.
pub fn run_tool(name: &str, args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .arg("300")
        .arg(tool(name))
        .args(args)
        .output()
        .expect("run libnfs tool");
    out
}

pub fn run_ok(name: &str, args: &[&str]) -> String {
    let out = run_tool(name, args);
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `len` pseudo-random bytes (seeded) to `path` in 1 MiB pieces,
/// returning their FNV-1a 64 checksum.
pub fn write_random_file(path: &Path, len: u64, seed: u64) -> u64 {
    use rand::{RngCore, SeedableRng};
    use std::io::Write;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut sum = Fnv::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        sum.update(&buf[..n]);
        f.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    f.flush().expect("flush");
    sum.finish()
}

/// FNV-1a 64 checksum of a file.
pub fn checksum_file(path: &Path) -> u64 {
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("open");
    let mut sum = Fnv::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        sum.update(&buf[..n]);
    }
    sum.finish()
}

pub struct Fnv(u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn update(&mut self, b: &[u8]) {
        for x in b {
            self.0 ^= *x as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
}

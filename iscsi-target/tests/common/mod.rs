//! Starts the `iscsi-target` binary on a free loopback port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const IQN: &str = "iqn.2024-01.test.vmfs:target";

pub struct Target {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Target {
    pub fn lun_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("lun{i}.img"))
    }
    pub fn url(&self, lun: u32) -> String {
        format!("iscsi://{}/{}/{}", self.addr, IQN, lun)
    }
}

/// Creates `sizes.len()` sparse LUN files and starts the target on them.
pub fn start(sizes: &[u64]) -> Target {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iscsi-target"));
    cmd.args(["--listen", "127.0.0.1:0", "--target", IQN, "--print-port"]);
    for (i, s) in sizes.iter().enumerate() {
        let p = dir.path().join(format!("lun{i}.img"));
        let f = std::fs::File::create(&p).expect("create lun");
        f.set_len(*s).expect("size lun");
        cmd.arg("--lun").arg(&p);
    }
    start_cmd(cmd, dir)
}

pub fn start_cmd(mut cmd: Command, dir: tempfile::TempDir) -> Target {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("spawn iscsi-target");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("read port line");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("unexpected target output {line:?}"))
        .parse()
        .expect("address");
    Target { child, addr, dir }
}

/// Fails clearly when an external tool is missing.
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} not found: install Debian package libiscsi-bin (scripts/test-all.sh does)"
    );
}

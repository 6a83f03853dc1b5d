//! Helpers for the network cluster tests: an in-process iSCSI target on a
//! formatted image, host processes with their stdout collected, and network
//! namespaces joined to the test's namespace by veth pairs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iscsi_target::config::{Config, LunConfig, TargetConfig};
use iscsi_target::server::Server;
use vmfs::cluster::Timeouts;
use vmfs::dev::{FileDev, FileDevOptions, SharedDev};
use vmfs::volume::{mkfs, MkfsOptions};

pub const IQN: &str = "iqn.2024-01.org.vmfs.test:cluster";

/// An iSCSI target serving one LUN (a vmfs image) from this process.
pub struct Target {
    pub addr: SocketAddr,
    pub server: Arc<Server>,
    pub image: PathBuf,
}

impl Target {
    /// URL of the LUN as a host at `host` reaches it.
    pub fn url(&self, host: &str) -> String {
        format!("iscsi://{host}:{}/{IQN}/0", self.addr.port())
    }
}

/// Format `image` (`size` bytes) with the timeouts scaled by `scale`.
pub fn make_volume(image: &Path, size: u64, scale: f64) {
    let dev: SharedDev = Arc::new(
        FileDev::open(
            image,
            FileDevOptions {
                create_size: Some(size),
                ..Default::default()
            },
        )
        .expect("create image"),
    );
    let opts = MkfsOptions {
        label: "cluster".into(),
        max_hosts: 16,
        journal_size: 1 << 20,
        timeouts: Timeouts::scaled(scale).to_minimums(),
        ..Default::default()
    };
    mkfs(&dev, &opts, false).expect("mkfs");
    dev.flush().expect("flush");
}

/// Serve `image` on `listen` (port 0: any).
pub fn serve(image: &Path, listen: &str) -> Target {
    let config = Config {
        portals: vec![listen.parse().expect("listen address")],
        tpgt: 1,
        targets: vec![TargetConfig {
            iqn: IQN.into(),
            luns: vec![LunConfig {
                path: image.to_path_buf(),
                read_only: false,
            }],
            initiators: vec![],
            chap: None,
            mutual_chap: None,
        }],
        discovery_chap: None,
    };
    let server = Server::new(config).expect("target");
    let addr = server.clone().spawn_background().expect("target listens");
    Target {
        addr,
        server,
        image: image.to_path_buf(),
    }
}

/// A child process whose stdout lines are collected.
pub struct Proc {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub name: String,
}

impl Proc {
    pub fn spawn(mut cmd: Command, name: &str) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l2.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Proc {
            child,
            lines,
            name: name.to_string(),
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn has(&self, prefix: &str) -> bool {
        self.lines().iter().any(|l| l.starts_with(prefix))
    }

    /// Wait until a line starts with `prefix`; returns it.
    pub fn wait_for(&self, prefix: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| l.starts_with(prefix)) {
                return l;
            }
            assert!(
                start.elapsed() < limit,
                "{}: no '{prefix}' within {limit:?}; got {:?}",
                self.name,
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill({sig})");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace with a veth link to ours: `outer` is our address
/// on the link, `inner` the namespace's.
pub struct Netns {
    pub name: String,
    pub outer: String,
    pub inner: String,
    inner_if: String,
}

impl Netns {
    /// Create namespace `idx` of this test run (subnet 10.`net`.`idx`.0/30).
    pub fn create(net: u8, idx: u8) -> Result<Netns, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let tag = std::process::id() % 100_000;
        let name = format!("vmfs{tag}n{net}x{idx}");
        let (o, i) = (
            format!("vo{tag}x{net}x{idx}"),
            format!("vi{tag}x{net}x{idx}"),
        );
        let outer = format!("10.{net}.{idx}.1");
        let inner = format!("10.{net}.{idx}.2");
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name: name.clone(),
            outer: outer.clone(),
            inner: inner.clone(),
            inner_if: i.clone(),
        };
        ip(&["link", "add", &o, "type", "veth", "peer", "name", &i])?;
        ip(&["link", "set", &i, "netns", &name])?;
        ip(&["addr", "add", &format!("{outer}/30"), "dev", &o])?;
        ip(&["link", "set", &o, "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{inner}/30"),
            "dev",
            &i,
        ])?;
        ip(&["-n", &name, "link", "set", &i, "up"])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `cmd` run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Cut (false) or restore (true) the namespace's link.
    pub fn set_link(&self, up: bool) {
        ip(&[
            "-n",
            &self.name,
            "link",
            "set",
            &self.inner_if,
            if up { "up" } else { "down" },
        ])
        .expect("ip link set");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth, and so the pair.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Every `ACK path len crc` line of the processes.
pub fn acks(procs: &[&Proc]) -> Vec<(String, usize, u32)> {
    let mut out = Vec::new();
    for p in procs {
        for l in p.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() == 4 && f[0] == "ACK" {
                out.push((
                    f[1].to_string(),
                    f[2].parse().expect("len"),
                    u32::from_str_radix(f[3], 16).expect("crc"),
                ));
            }
        }
    }
    out
}

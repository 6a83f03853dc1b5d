//! `initiator`: the userspace iSCSI initiator (`IscsiDev`) against the
//! workspace's iSCSI target, in process on loopback.
//!
//! - lock acquire+release latency over iSCSI, side by side with the same
//!   lock on a local image file (`FileDev`): what the network costs a lock.
//! - 4 KiB random-read IOPS at 16 outstanding commands: `IscsiDev` (16
//!   threads sharing one session) vs libiscsi's `iscsi-perf -m 16 -r` on the
//!   same LUN (the anchor).

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iscsi_target::config::{Config as TargetConfigFile, LunConfig, TargetConfig};
use iscsi_target::server::Server;
use vmfs::cluster::{Host, HostConfig, Timeouts};
use vmfs::dev::{BlockDev, FileDev, FileDevOptions, IscsiDev, IscsiOptions, SharedDev};
use vmfs::format::{LockMode, ResourceKind};
use vmfs::volume::{mkfs, MkfsOptions, Volume};

use crate::harness::{run_case, Better, Case, Row, Subject};
use crate::tools;
use crate::Config;

const IQN: &str = "iqn.2024-01.org.vmfs.bench:initiator";
const QD: usize = 16;

fn image(
    cfg: &Config,
    dir: &tempfile::TempDir,
    name: &str,
    size: u64,
) -> Result<SharedDev, String> {
    let dev: SharedDev = Arc::new(
        FileDev::open(
            dir.path().join(name),
            FileDevOptions {
                create_size: Some(size),
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?,
    );
    let _ = cfg;
    Ok(dev)
}

fn format(dev: &SharedDev) -> Result<(), String> {
    mkfs(
        dev,
        &MkfsOptions {
            label: "bench".into(),
            max_hosts: 16,
            journal_size: 1 << 20,
            ..Default::default()
        },
        false,
    )
    .map_err(|e| e.to_string())?;
    dev.flush().map_err(|e| e.to_string())
}

fn opts() -> IscsiOptions {
    IscsiOptions {
        initiator: "iqn.2024-01.org.vmfs.bench:host".into(),
        chap: None,
        mutual: None,
        io_timeout: Duration::from_secs(8),
        require_caw: true,
        read_only: false,
    }
}

/// Mean microseconds per lock+unlock on `host`.
fn lock_latency(host: &Host, n: u64) -> Result<f64, String> {
    let lock = host.volume().cluster_lock_addr(ResourceKind::FileBlock, 0);
    let start = Instant::now();
    for _ in 0..n {
        host.lock(lock, 0, LockMode::Exclusive, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        host.unlock(lock).map_err(|e| e.to_string())?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / n as f64)
}

fn random_reads(dev: &Arc<IscsiDev>, secs: f64) -> Result<f64, String> {
    let blocks = dev.size() / 4096;
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let hs: Vec<_> = (0..QD)
        .map(|t| {
            let (dev, done) = (dev.clone(), done.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
                let mut buf = vec![0u8; 4096];
                while Instant::now() < end {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    dev.read_at(&mut buf, (x % blocks) * 4096)
                        .map_err(|e| e.to_string())?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    let start = Instant::now();
    for h in hs {
        h.join()
            .map_err(|_| "reader thread panicked".to_string())??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

fn iscsi_perf(url: &str, secs: u32) -> Result<f64, String> {
    let perf = tools::ensure("iscsi-perf", "libiscsi-bin")?;
    let out = Command::new(perf)
        .args([
            "-i",
            "iqn.2024-01.org.vmfs.bench:perf",
            "-m",
            &QD.to_string(),
            "-b",
            "8",
            "-t",
            &secs.to_string(),
            "-r",
            url,
        ])
        .output()
        .map_err(|e| format!("iscsi-perf: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!(
            "iscsi-perf failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let last = text
        .rsplit("iops average ")
        .next()
        .filter(|_| text.contains("iops average "))
        .ok_or_else(|| format!("no 'iops average' in iscsi-perf output: {text:?}"))?;
    last.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("unparsable iscsi-perf figure in {last:?}"))
}

pub fn run(cfg: &Config) -> Result<Vec<Row>, String> {
    let dir = tempfile::tempdir_in(&cfg.work_dir).map_err(|e| e.to_string())?;
    let size: u64 = if cfg.quick { 256 << 20 } else { 2 << 30 };
    let lun = image(cfg, &dir, "lun.img", size)?;
    format(&lun)?;
    let local = image(cfg, &dir, "local.img", size)?;
    format(&local)?;
    let server = Server::new(TargetConfigFile {
        portals: vec!["127.0.0.1:0".parse().expect("address")],
        tpgt: 1,
        targets: vec![TargetConfig {
            iqn: IQN.into(),
            luns: vec![LunConfig {
                path: dir.path().join("lun.img"),
                read_only: false,
            }],
            initiators: vec![],
            chap: None,
            mutual_chap: None,
        }],
        discovery_chap: None,
    })
    .map_err(|e| format!("starting the iSCSI target: {e}"))?;
    let addr = server
        .spawn_background()
        .map_err(|e| format!("starting the iSCSI target: {e}"))?;
    let url = format!("iscsi://{addr}/{IQN}/0");

    // Lock latency: one host over iSCSI, one on the local file.
    let remote =
        Arc::new(IscsiDev::open(&addr.to_string(), IQN, 0, &opts()).map_err(|e| e.to_string())?);
    let t = Timeouts::from_minimums(&vmfs::format::TimeoutMinimums::default());
    remote.set_io_timeout(t.io_timeout);
    let mut hc = HostConfig::new("bench-iscsi");
    hc.fencer = Some(remote.clone());
    let rhost = Host::join(Volume::open(remote.clone()).map_err(|e| e.to_string())?, hc)
        .map_err(|e| e.to_string())?;
    let lhost = Host::join(
        Volume::open(local.clone()).map_err(|e| e.to_string())?,
        HostConfig::new("bench-local"),
    )
    .map_err(|e| e.to_string())?;
    let n: u64 = if cfg.quick { 200 } else { 2000 };
    let mut rows = run_case(
        Case {
            suite: "initiator",
            name: "lock acquire+release latency".into(),
            unit: "µs",
            better: Better::Lower,
            baseline: "FileDev (local image)".into(),
            subjects: vec![
                Subject {
                    name: "IscsiDev (loopback)".into(),
                    run: Box::new(|| lock_latency(&rhost, n)),
                },
                Subject {
                    name: "FileDev (local image)".into(),
                    run: Box::new(|| lock_latency(&lhost, n)),
                },
            ],
        },
        cfg.repeats,
    );
    rhost.leave().map_err(|e| e.to_string())?;
    lhost.leave().map_err(|e| e.to_string())?;

    // Random reads: our initiator vs libiscsi on the same LUN.
    let secs = if cfg.quick { 2 } else { 10 };
    rows.extend(run_case(
        Case {
            suite: "initiator",
            name: format!("4 KiB random read, {QD} outstanding"),
            unit: "IOPS",
            better: Better::Higher,
            baseline: "iscsi-perf (libiscsi)".into(),
            subjects: vec![
                Subject {
                    name: "IscsiDev".into(),
                    run: Box::new(|| random_reads(&remote, f64::from(secs))),
                },
                Subject {
                    name: "iscsi-perf (libiscsi)".into(),
                    run: Box::new(|| iscsi_perf(&url, secs)),
                },
            ],
        },
        cfg.repeats,
    ));
    Ok(rows)
}

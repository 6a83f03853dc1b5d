//! `iscsi`: our `iscsi-target` against tgt (the Linux SCSI target framework
//! daemon) serving the same backing file on loopback, and fio (io_uring) on
//! the raw file as the physical limit.
//!
//! Reads are driven by libiscsi's `iscsi-perf` (it only reads). Writes are
//! driven by a small load generator built on this workspace's iSCSI test
//! initiator (`iscsi_target::initiator`), labelled "rust-initiator": N
//! sessions each with one command in flight (QD N in total), 4 KiB WRITE(10)
//! at random 4 KiB-aligned LBAs, the same generator against both targets.
//!
//! Every target sample and every buffered fio sample starts with the whole
//! file in the page cache (read once just before): the figures compare the
//! servers, not which of them found the cache warmer. fio O_DIRECT shows
//! the device underneath.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iscsi_target::initiator::Session;

use crate::fio::{self, FioJob};
use crate::harness::{run_case, Better, Case, Row, Subject};
use crate::{tools, Config};

const OUR_IQN: &str = "iqn.2024-01.bench.vmfs:ours";
const TGT_IQN: &str = "iqn.2024-01.bench.vmfs:tgt";

/// A child process killed (SIGKILL) and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One target under test: where it listens and which LUN is the file.
#[derive(Clone)]
struct Portal {
    addr: SocketAddr,
    iqn: &'static str,
    lun: u8,
}

impl Portal {
    fn url(&self) -> String {
        format!("iscsi://{}/{}/{}", self.addr, self.iqn, self.lun)
    }
}

fn start_ours(bin: &Path, file: &Path) -> Result<(Proc, Portal), String> {
    let mut child = Command::new(bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--target",
            OUR_IQN,
            "--print-port",
        ])
        .arg("--lun")
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout from iscsi-target")?;
    let proc = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("reading iscsi-target's port: {e}"))?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("iscsi-target printed {line:?} instead of its address"))?;
    Ok((
        proc,
        Portal {
            addr,
            iqn: OUR_IQN,
            lun: 0,
        },
    ))
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

fn tgtadm(control: u16, args: &[&str]) -> Result<(), String> {
    let out = Command::new("tgtadm")
        .arg("-C")
        .arg(control.to_string())
        .args(["--lld", "iscsi"])
        .args(args)
        .output()
        .map_err(|e| format!("running tgtadm: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "tgtadm {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// tgtd in the foreground on its own control port and loopback portal (so
/// it never touches a system tgtd), the file as LUN 1 (LUN 0 is tgt's
/// controller).
fn start_tgt(file: &Path) -> Result<(Proc, Portal), String> {
    let tgtd = tools::ensure("tgtd", "tgt")?;
    let port = free_port()?;
    let control = 100 + (std::process::id() % 20000) as u16;
    let child = Command::new(&tgtd)
        .args(["-f", "-C", &control.to_string()])
        .arg("--iscsi")
        .arg(format!("portal=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting tgtd: {e}"))?;
    let proc = Proc(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tgtadm(control, &["--mode", "target", "--op", "show"]).is_err() {
        if Instant::now() > deadline {
            return Err("tgtd did not come up within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let path = file.display().to_string();
    tgtadm(
        control,
        &[
            "--mode",
            "target",
            "--op",
            "new",
            "--tid",
            "1",
            "--targetname",
            TGT_IQN,
        ],
    )?;
    tgtadm(
        control,
        &[
            "--mode",
            "logicalunit",
            "--op",
            "new",
            "--tid",
            "1",
            "--lun",
            "1",
            "--backing-store",
            &path,
        ],
    )?;
    tgtadm(
        control,
        &[
            "--mode",
            "target",
            "--op",
            "bind",
            "--tid",
            "1",
            "--initiator-address",
            "ALL",
        ],
    )?;
    Ok((
        proc,
        Portal {
            addr,
            iqn: TGT_IQN,
            lun: 1,
        },
    ))
}

/// Reads the whole backing file so that every target sample starts from
/// the same state: all of it in the page cache (fio's O_DIRECT runs, and
/// other processes' memory use, may have evicted parts).
fn warm(file: &Path) -> Result<(), String> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(file).map_err(|e| format!("warming {}: {e}", file.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("warming {}: {e}", file.display())),
        }
    }
}

/// Runs `iscsi-perf` and returns its final average (IOPS, MB/s).
fn iscsi_perf(
    bin: &Path,
    portal: &Portal,
    qd: u32,
    blocks: u32,
    random: bool,
    secs: u32,
) -> Result<(f64, f64), String> {
    let mut c = Command::new(bin);
    c.args(["-i", "iqn.2024-01.bench.vmfs:perf"])
        .args(["-m", &qd.to_string()])
        .args(["-b", &blocks.to_string()])
        .args(["-t", &secs.to_string()]);
    if random {
        c.arg("-r");
    }
    let out = c
        .arg(portal.url())
        .output()
        .map_err(|e| format!("running iscsi-perf: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    parse_perf(&text).ok_or_else(|| {
        format!(
            "iscsi-perf against {} gave no average ({}): {}",
            portal.url(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// The last `iops average N (M MB/s)` of iscsi-perf's output.
fn parse_perf(text: &str) -> Option<(f64, f64)> {
    let i = text.rfind("iops average ")?;
    let rest = &text[i + "iops average ".len()..];
    let mut words = rest.split_whitespace();
    let iops: f64 = words.next()?.parse().ok()?;
    let mb: f64 = words.next()?.trim_start_matches('(').parse().ok()?;
    Some((iops, mb))
}

fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x2a;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// `sessions` logins, each writing 4 KiB at random aligned LBAs back to
/// back for `secs`; returns completed writes per second.
fn rust_writes(portal: &Portal, sessions: u32, secs: u32, size: u64) -> Result<f64, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let slots = (size / 4096).min(u32::MAX as u64 / 8) as u32;
    let mut handles = Vec::new();
    for i in 0..sessions {
        let (stop, done, portal) = (stop.clone(), done.clone(), portal.clone());
        handles.push(std::thread::spawn(move || -> Result<(), String> {
            let isid = [0x80, 0, 0, 0x42, (i >> 8) as u8, i as u8];
            let name = format!("iqn.2024-01.bench.vmfs:writer{i}");
            let mut s = Session::login(portal.addr, &name, portal.iqn, isid)
                .map_err(|e| format!("login to {}: {e}", portal.url()))?;
            let buf = vec![0x5au8; 4096];
            // xorshift: cheap, reproducible per session.
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let lba = (x % slots as u64) as u32 * 8;
                let r = s
                    .command(portal.lun, &write10(lba, 8), &buf, 0)
                    .map_err(|e| format!("WRITE(10) to {}: {e}", portal.url()))?;
                if r.status == 2 && r.sense_code().is_some_and(|c| c.0 == 6) {
                    // UNIT ATTENTION (tgt reports power-on on a new nexus): retry.
                    continue;
                }
                if r.status != 0 {
                    return Err(format!(
                        "WRITE(10) to {} status {:#x} sense {:?}",
                        portal.url(),
                        r.status,
                        r.sense_code()
                    ));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            let _ = s.logout();
            Ok(())
        }));
    }
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs as u64));
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for h in handles {
        h.join()
            .map_err(|_| "writer thread panicked".to_string())??;
    }
    Ok(n as f64 / elapsed)
}

struct Env {
    perf: PathBuf,
    fio: PathBuf,
    file: PathBuf,
    size: u64,
    secs: u32,
    ours: Portal,
    /// A second build of ours to compare against (`BENCH_ISCSI_TARGET_BEFORE`).
    before: Option<Portal>,
    tgt: Portal,
}

/// The read workloads: name, blocks per request, QD, random, unit.
const READS: [(&str, u32, u32, bool, &str); 3] = [
    ("4k randread QD1", 8, 1, true, "IOPS"),
    ("4k randread QD32", 8, 32, true, "IOPS"),
    ("1M read QD8", 2048, 8, false, "MiB/s"),
];

fn fio_subject<'a>(
    env: &'a Env,
    name: &str,
    rw: &'static str,
    bs: &'static str,
    qd: u32,
    direct: bool,
    mib: bool,
) -> Subject<'a> {
    let job = FioJob {
        rw,
        block_size: bs,
        iodepth: qd,
        ioengine: "io_uring",
        direct,
        size: env.size,
        runtime_secs: env.secs,
        // Buffered runs read the cached file, like the targets do.
        keep_cache: !direct,
    };
    Subject {
        name: name.to_string(),
        run: Box::new(move || {
            if !direct {
                warm(&env.file)?;
            }
            let r = fio::run(&env.fio, &env.file, &job)?;
            Ok(if mib { r.mib_per_s } else { r.iops })
        }),
    }
}

fn cases(env: &Env, repeats: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for (name, blocks, qd, random, unit) in READS {
        let mib = unit == "MiB/s";
        let perf = |portal: &'static str, p: Portal| Subject {
            name: portal.to_string(),
            run: Box::new(move || {
                warm(&env.file)?;
                let (iops, mb) = iscsi_perf(&env.perf, &p, qd, blocks, random, env.secs)?;
                // iscsi-perf's "MB" is MiB (bytes >> 20).
                Ok(if mib { mb } else { iops })
            }),
        };
        let (rw, bs) = if random {
            ("randread", "4k")
        } else {
            ("read", "1M")
        };
        let case = Case {
            suite: "iscsi",
            name: format!("{name} (iscsi-perf)"),
            unit,
            better: Better::Higher,
            baseline: "tgt".into(),
            subjects: vec![
                perf("iscsi-target", env.ours.clone()),
                perf("tgt", env.tgt.clone()),
                fio_subject(env, "fio io_uring buffered", rw, bs, qd, false, mib),
                fio_subject(env, "fio io_uring O_DIRECT", rw, bs, qd, true, mib),
            ],
        };
        let mut case = case;
        if let Some(b) = &env.before {
            case.subjects.push(perf("iscsi-target (before)", b.clone()));
        }
        rows.extend(run_case(case, repeats));
    }
    for qd in [1u32, 16] {
        let writer = |label: &'static str, p: Portal| Subject {
            name: label.to_string(),
            run: Box::new(move || {
                warm(&env.file)?;
                rust_writes(&p, qd, env.secs, env.size)
            }),
        };
        let case = Case {
            suite: "iscsi",
            name: format!("4k randwrite QD{qd} (rust-initiator, {qd} sessions x QD1)"),
            unit: "IOPS",
            better: Better::Higher,
            baseline: "tgt".into(),
            subjects: vec![
                writer("iscsi-target", env.ours.clone()),
                writer("tgt", env.tgt.clone()),
                fio_subject(
                    env,
                    "fio io_uring buffered",
                    "randwrite",
                    "4k",
                    qd,
                    false,
                    false,
                ),
            ],
        };
        let mut case = case;
        if let Some(b) = &env.before {
            case.subjects
                .push(writer("iscsi-target (before)", b.clone()));
        }
        rows.extend(run_case(case, repeats));
    }
    rows
}

pub fn run(cfg: &Config) -> Result<Vec<Row>, String> {
    let perf = tools::ensure("iscsi-perf", "libiscsi-bin")?;
    let fio_bin = tools::ensure("fio", "fio")?;
    let file = cfg.work_dir.join("iscsi-backing.img");
    let size = cfg.file_size();
    fio::prefill(&fio_bin, &file, size)?;
    let bin = tools::workspace_bin("iscsi-target", "iscsi-target")?;
    let (_ours_proc, ours) = start_ours(&bin, &file)?;
    // Optional A/B: another build of iscsi-target (e.g. the commit before a
    // change) serving the same file, as one more subject.
    let before = match std::env::var_os("BENCH_ISCSI_TARGET_BEFORE") {
        Some(p) => Some(start_ours(Path::new(&p), &file)?),
        None => None,
    };
    let (_tgt_proc, tgt) = start_tgt(&file)?;
    let env = Env {
        perf,
        fio: fio_bin,
        file: file.clone(),
        size,
        secs: if cfg.quick { 1 } else { cfg.runtime_secs() },
        ours,
        before: before.as_ref().map(|(_, p)| p.clone()),
        tgt,
    };
    let rows = cases(&env, cfg.repeats);
    drop(env);
    let _ = std::fs::remove_file(&file);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iscsi_perf_final_average() {
        let out =
            "00:00:01 - lba 1, iops current 10 (1 MB/s), iops average 10 (1 MB/s), in_flight 1\n\
                   iops average 62011 (242 MB/s)\n\nfinished.\n";
        assert_eq!(parse_perf(out), Some((62011.0, 242.0)));
        assert_eq!(parse_perf("connection failed"), None);
    }
}

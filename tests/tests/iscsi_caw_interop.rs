//! COMPARE AND WRITE through `iscsi-target` is atomic also against vmfs
//! `FileDev` hosts (other processes) using the same backing file: both take
//! the same OFD range lock. Processes running `cas-worker` (FileDev's
//! emulated ATS) and iSCSI sessions (real COMPARE AND WRITE on the target)
//! increment one shared sector concurrently; the count must end exact.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use iscsi_target::initiator::Session;

const IQN: &str = "iqn.2024-01.test.vmfs:interop";
const LOCAL_HOSTS: u64 = 3;
const LOCAL_INCREMENTS: u64 = 3000;
const ISCSI_HOSTS: u64 = 3;
const ISCSI_INCREMENTS: u64 = 600;
const LBA: u64 = 8;

/// The workspace's `iscsi-target` binary, next to this test's `deps/`
/// directory; built once if a partial build left it out.
fn iscsi_target_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps");
    let bin = profile_dir.join("iscsi-target");
    if !bin.is_file() {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["build", "-q", "-p", "iscsi-target", "--bin", "iscsi-target"]);
        if release {
            c.arg("--release");
        }
        let st = c.status().expect("run cargo build");
        assert!(
            st.success() && bin.is_file(),
            "could not build iscsi-target"
        );
    }
    bin
}

struct Target(Child);

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_target(img: &std::path::Path) -> (Target, SocketAddr) {
    let mut child = Command::new(iscsi_target_bin())
        .args(["--listen", "127.0.0.1:0", "--target", IQN, "--print-port"])
        .arg("--lun")
        .arg(img)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn iscsi-target");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("port line");
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("unexpected target output {line:?}"))
        .parse()
        .expect("address");
    (Target(child), addr)
}

fn read16(lba: u64) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x88;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[13] = 1;
    c
}

fn caw16(lba: u64) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x89;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[13] = 1;
    c
}

/// One iSCSI host: `n` read-modify-CAW increments, retrying on MISCOMPARE
/// (whose sense carries nothing we need: we simply re-read).
fn iscsi_host(addr: SocketAddr, i: u64, n: u64) -> u64 {
    let isid = [0x80, 0, 0, 0, 0x10, i as u8];
    let mut s =
        Session::login(addr, &format!("iqn.2024-01.test.vmfs:h{i}"), IQN, isid).expect("login");
    let mut retries = 0;
    for _ in 0..n {
        loop {
            let r = s.command(0, &read16(LBA), &[], 512).expect("read");
            assert_eq!(r.status, 0, "READ failed: {:?}", r.sense_code());
            let cur = u64::from_le_bytes(r.data[..8].try_into().expect("8 bytes"));
            let mut buf = r.data.clone();
            buf.extend_from_slice(&r.data);
            buf[512..520].copy_from_slice(&(cur + 1).to_le_bytes());
            let w = s.command(0, &caw16(LBA), &buf, 0).expect("caw");
            match (w.status, w.sense_code()) {
                (0, _) => break,
                (2, Some((0x0e, _, _))) => retries += 1,
                other => panic!("COMPARE AND WRITE: {other:?}"),
            }
        }
    }
    s.logout().expect("logout");
    retries
}

#[test]
fn target_caw_is_atomic_against_filedev_hosts() {
    // tmpfs keeps fdatasync cheap; what is under test is the OFD lock.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("tempdir");
    let img = dir.path().join("shared.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(1 << 20))
        .expect("create image");
    let (_target, addr) = start_target(&img);
    let started = std::time::Instant::now();
    let workers: Vec<Child> = (0..LOCAL_HOSTS)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_cas-worker"))
                .arg(&img)
                .arg((LBA * 512).to_string())
                .arg(LOCAL_INCREMENTS.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn cas-worker")
        })
        .collect();
    let remote: Vec<_> = (0..ISCSI_HOSTS)
        .map(|i| std::thread::spawn(move || iscsi_host(addr, i, ISCSI_INCREMENTS)))
        .collect();
    let mut retries = 0;
    for h in remote {
        retries += h.join().expect("iSCSI host thread");
    }
    for w in workers {
        let out = w.wait_with_output().expect("cas-worker");
        assert!(
            out.status.success(),
            "cas-worker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let data = std::fs::read(&img).expect("read image");
    let off = (LBA * 512) as usize;
    let count = u64::from_le_bytes(data[off..off + 8].try_into().expect("8 bytes"));
    let want = LOCAL_HOSTS * LOCAL_INCREMENTS + ISCSI_HOSTS * ISCSI_INCREMENTS;
    println!(
        "{LOCAL_HOSTS} FileDev processes x {LOCAL_INCREMENTS} + {ISCSI_HOSTS} iSCSI sessions x {ISCSI_INCREMENTS} = {count} (want {want}) in {:.2?}, {retries} iSCSI miscompare retries",
        started.elapsed()
    );
    assert_eq!(
        count, want,
        "increments were lost: CAW not atomic across the two paths"
    );
}

//! Against a third-party target without COMPARE AND WRITE: Debian's `tgt`
//! 1.0.85 (libiscsi's own test suite reports "COMPAREANDWRITE is not
//! implemented" on its rdwr backing store). A read-write open — every
//! read-write user joins the cluster — must refuse it naming the missing
//! command; a read-only open works. Needs root and `tgtd` (Debian `tgt`).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmfs::dev::{open_device, BlockDev, IscsiDev, IscsiOptions, OpenOptions};

const IQN: &str = "iqn.2024-01.org.vmfs.test:tgt";

fn tgtadm(ctl: u16, args: &[&str]) -> Result<(), String> {
    let out = Command::new("tgtadm")
        .args(["-C", &ctl.to_string(), "--lld", "iscsi"])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

struct Tgtd(std::process::Child);

impl Drop for Tgtd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tgt_without_compare_and_write_is_refused_read_write() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP: tgtd needs root");
        return;
    }
    if Command::new("tgtd").arg("--help").output().is_err() {
        println!("SKIP: tgtd not installed (Debian tgt)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("lun.img");
    let mut f = std::fs::File::create(&img).unwrap();
    f.set_len(64 << 20).unwrap();
    f.write_all(&[0x42; 4096]).unwrap();
    drop(f);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // A control port of our own: never talk to another tgtd on the machine.
    // tgtadm takes -C only up to 32767.
    let ctl = 2_000 + (std::process::id() % 30_000) as u16;
    let _tgtd = Tgtd(
        Command::new("tgtd")
            .args([
                "-f",
                "-C",
                &ctl.to_string(),
                "--iscsi",
                &format!("portal=127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while let Err(e) = tgtadm(
        ctl,
        &["--op", "new", "--mode", "target", "--tid", "1", "-T", IQN],
    ) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "tgtd (control port {ctl}) did not start: last tgtadm said: {e}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    tgtadm(
        ctl,
        &[
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            "1",
            "--lun",
            "1",
            "-b",
            img.to_str().unwrap(),
        ],
    )
    .unwrap();
    tgtadm(
        ctl,
        &[
            "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL",
        ],
    )
    .unwrap();
    let url = format!("iscsi://127.0.0.1:{port}/{IQN}/1");
    let e = open_device(&url, OpenOptions::default()).unwrap_err();
    let msg = e.to_string();
    println!("read-write open refused: {msg}");
    assert!(
        msg.contains("COMPARE AND WRITE") && msg.contains("0x89"),
        "{msg}"
    );
    let ro = IscsiDev::open(
        &format!("127.0.0.1:{port}"),
        IQN,
        1,
        &IscsiOptions {
            initiator: "iqn.2024-01.org.vmfs.test:ro".into(),
            chap: None,
            mutual: None,
            io_timeout: Duration::from_secs(5),
            require_caw: false,
            read_only: true,
        },
    )
    .unwrap();
    assert_eq!(ro.size(), 64 << 20);
    // (Read-only opens do not test-write; tgt's REPORT SUPPORTED OPERATION
    // CODES lists COMPARE AND WRITE although the backing store cannot do it,
    // which is why read-write opens probe with a real, harmless one.)
    let mut b = vec![0u8; 4096];
    ro.read_at(&mut b, 0).unwrap();
    assert!(b.iter().all(|&x| x == 0x42));
}

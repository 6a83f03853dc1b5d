//! `vmfs up`: creates the default image, joins, leaves cleanly on SIGTERM,
//! and a second run picks up where the first left off.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn run_once(dir: &std::path::Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmfs"))
        .args([
            "up",
            "--size",
            "4G",
            "--iscsi-listen",
            "127.0.0.1:0",
            "--nfs-listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        text.push_str(&line);
        if line.contains("Ctrl-C") {
            break;
        }
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    text.push_str(&rest);
    let st = child.wait().unwrap();
    assert!(st.success(), "vmfs up exited {st}:\n{text}");
    text
}

#[test]
fn up_creates_joins_leaves_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_once(dir.path());
    assert!(
        first.contains("created") && first.contains("'datastore1'"),
        "{first}"
    );
    assert!(first.contains("host slot 0 (hb_gen 1)"), "{first}");
    assert!(first.contains("left the volume cleanly"), "{first}");
    let second = run_once(dir.path());
    assert!(!second.contains("created"), "{second}");
    // Same identity, same slot, next generation after the clean exit.
    assert!(second.contains("host slot 0 (hb_gen 3)"), "{second}");
    let o = Command::new(env!("CARGO_BIN_EXE_vmfs"))
        .args(["hosts", "vmfs-data/datastore.img", "--wait", "0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.contains("clean-exit"), "{t}");
}

//! A host process holding a VM's swap file is killed with SIGKILL; another
//! host process running the swap reclaimer declares it dead, deletes the
//! `.vswp` and the space comes back (statfs). Timeouts scaled by 1/30.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_disk-host");

fn spawn(args: &[&str]) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l2 = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            l2.lock().unwrap().push(line);
        }
    });
    (child, lines)
}

fn wait_for(lines: &Mutex<Vec<String>>, prefix: &str, nth: usize) -> String {
    let start = Instant::now();
    loop {
        {
            let l = lines.lock().unwrap();
            if let Some(x) = l.iter().filter(|x| x.starts_with(prefix)).nth(nth) {
                return x.clone();
            }
            if let Some(e) = l.iter().find(|x| x.starts_with("ERROR")) {
                panic!("host failed: {e}");
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "no '{prefix}' #{nth}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn dead_hosts_swap_file_is_reclaimed_and_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vol.img").to_str().unwrap().to_string();
    assert!(Command::new(BIN)
        .args(["mkfs", &img])
        .status()
        .unwrap()
        .success());
    let (mut holder, hl) = spawn(&["swap", &img, "vm-host"]);
    let path = wait_for(&hl, "SWAP ", 0)[5..].to_string();
    assert!(path.starts_with("/vm1/vm1-") && path.ends_with(".vswp"));
    let (mut survivor, sl) = spawn(&["reclaim", &img, "survivor"]);
    let before: u64 = wait_for(&sl, "FREE ", 0)[5..].parse().unwrap();
    // The holder is alive: nothing may be reclaimed meanwhile.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !sl.lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("RECLAIMED")),
        "a live host's swap file was reclaimed"
    );
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    let r = unsafe { libc::kill(holder.id() as libc::pid_t, libc::SIGKILL) };
    assert_eq!(r, 0);
    let _ = holder.wait();
    let got = wait_for(&sl, "RECLAIMED ", 0);
    assert!(got.contains(&path), "{got}");
    let after: u64 = wait_for(&sl, "FREE ", 1)[5..].parse().unwrap();
    // 32 MiB of 1 MiB blocks came back (less the block the reclaim log,
    // /.vmfs-swap/reclaimed.log, took for its first line).
    assert!(
        after + 1 >= before + 32,
        "free blocks {before} -> {after}: the swap file's space did not return"
    );
    assert!(survivor.wait().unwrap().success());
}

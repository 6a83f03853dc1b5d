//! `vmfs up` under heavy writes through its FUSE mount gets SIGTERM: it
//! stops every service and leaves cleanly (exit 0, slot CLEAN_EXIT), and
//! `vmfs-fsck` finds the volume clean afterwards.

mod fuse_util;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fuse_util::fuse_ready;

fn writer(mnt: &Path, id: usize, stop: &AtomicBool, written: &AtomicU64) {
    let block = vec![id as u8 ^ 0x5a; 256 << 10];
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let path = mnt.join(format!("w{id}-{n}.bin"));
        let Ok(mut f) = std::fs::File::create(&path) else {
            return;
        };
        for _ in 0..16 {
            if f.write_all(&block).is_err() {
                return;
            }
            written.fetch_add(block.len() as u64, Ordering::Relaxed);
        }
        if n % 3 == 0 && f.sync_all().is_err() {
            return;
        }
        n += 1;
    }
}

#[test]
fn sigterm_during_heavy_writes_leaves_a_clean_volume() {
    if !fuse_ready("sigterm_during_heavy_writes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
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
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
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
    assert!(
        text.contains("fuse  vmfs-data/mnt"),
        "FUSE not running:\n{text}"
    );
    let mnt = dir.path().join("vmfs-data/mnt");
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..4)
        .map(|id| {
            let (mnt, stop, written) = (mnt.clone(), stop.clone(), written.clone());
            std::thread::spawn(move || writer(&mnt, id, &stop, &written))
        })
        .collect();
    // Let the load build up, then stop the service under it.
    while written.load(Ordering::Relaxed) < 64 << 20 {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    text.push_str(&rest);
    let st = child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    println!(
        "wrote {} MiB before and during the shutdown",
        written.load(Ordering::Relaxed) >> 20
    );
    assert!(st.success(), "vmfs up exited {st}:\n{text}");
    assert!(text.contains("left the volume cleanly"), "{text}");
    let img = dir.path().join("vmfs-data/datastore.img");
    let dev: vmfs::dev::SharedDev =
        Arc::new(vmfs::dev::FileDev::open(&img, vmfs::dev::FileDevOptions::default()).unwrap());
    let outcome = vmfs_fsck::fsck(
        dev,
        &vmfs_fsck::Options::default(),
        &vmfs_fsck::report::Quiet,
    );
    assert_eq!(
        outcome.exit, 0,
        "vmfs-fsck after SIGTERM: {:?} {:?}",
        outcome.problems, outcome.error
    );
    // The slot was marked CLEAN_EXIT: a new `vmfs up` does not wait D.
    let o = Command::new(env!("CARGO_BIN_EXE_vmfs"))
        .args(["hosts", "vmfs-data/datastore.img", "--wait", "0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.contains("clean-exit"), "{t}");
}

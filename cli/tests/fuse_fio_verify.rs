//! fio with `verify=crc32c` on a `vmfs mount`: four jobs, each writing a
//! 16 MiB file (64 MiB in all) with random 4 KiB writes, then reading it
//! back and checking every block's crc32c header; a second pass overwrites
//! with sequential 1 MiB writes of mixed sizes and verifies again after a
//! remount (so the data comes from the volume, not the page cache). Then
//! the volume must check clean.

mod fuse_util;

use std::path::Path;
use std::process::Command;

use fuse_util::{check_image, fuse_ready, make_image, mount};

fn fio_available() -> bool {
    Command::new("fio")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Run fio with `args` in `dir`; panic with its output unless it passes.
fn fio(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("fio")
        .arg(format!("--directory={}", dir.display()))
        .args(args)
        .output()
        .expect("running fio");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "fio {args:?} failed ({}):\n{text}",
        out.status
    );
    assert!(
        !text.contains("verify: bad") && !text.contains("crc32c: verify failed"),
        "fio reported a verify failure:\n{text}"
    );
    text
}

#[test]
fn fio_crc32c_verify_passes_on_the_mount() {
    if !fuse_ready("fuse_fio_verify") {
        return;
    }
    if !fio_available() {
        eprintln!("\n*** fuse_fio_verify: SKIP: fio is not installed (apt-get install fio) ***\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 1 << 30);
    let mnt = dir.path().join("m");
    let m = mount(&img, &mnt, "fio");
    let common = [
        "--numjobs=4",
        "--size=16M",
        "--ioengine=psync",
        "--verify=crc32c",
        "--do_verify=1",
        "--verify_fatal=1",
        "--end_fsync=1",
        "--group_reporting=1",
        // No verify-state files in the working directory.
        "--verify_state_save=0",
    ];
    let mut args = vec!["--name=randwrite", "--rw=randwrite", "--bs=4k"];
    args.extend(common);
    fio(&mnt, &args);
    let mut args = vec![
        "--name=randwrite",
        "--rw=write",
        "--bsrange=4k-1m",
        "--overwrite=1",
    ];
    args.extend(common);
    fio(&mnt, &args);
    let (st, out) = m.stop();
    assert!(st.success(), "vmfs mount exited {st}:\n{out}");

    // After a remount the page cache is gone: verify what is on the volume.
    let m = mount(&img, &mnt, "fio2");
    let mut args = vec![
        "--name=randwrite",
        "--rw=read",
        "--bsrange=4k-1m",
        "--verify_only=1",
    ];
    args.extend(common);
    fio(&mnt, &args);
    let (st, out) = m.stop();
    assert!(st.success(), "vmfs mount exited {st}:\n{out}");
    let r = check_image(&img);
    eprintln!("fuse_fio_verify: 4 jobs × 16 MiB verified (crc32c) twice, volume clean: {r:?}");
}

//! A swap file held by a live host is not stale: while the host that runs
//! the VM keeps its `.vswp` open for write (EXCLUSIVE), the check is clean
//! and `--repair --force` leaves the file alone. Once that host closes it
//! and leaves (the VM is gone but its swap file was not deleted), the
//! check reports VSWP001 and a repair deletes it.

mod common;

use std::time::Duration;

use common::*;
use vmfs::fs::Falloc;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn held_swap_file_is_left_alone_and_an_abandoned_one_is_reclaimed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = case_path(dir.path(), "swap");
    build(&img);
    let p = img.to_str().unwrap();
    let fs = mount(&img);
    let vm = fs.lookup(fs.root(), b"vm1").expect("vm1").ino;
    let a = fs
        .create(vm, b"vm1-5f3a.vswp", 0o600, 0, 0)
        .expect("create swap file");
    let fh = fs.open(a.ino, true).expect("open swap file");
    fs.fallocate(fh, 0, 4 << 20, Falloc::AllocateLazy { keep_size: false })
        .expect("allocate swap file");
    fs.fsync(fh).expect("fsync");

    let held = run(fsck_bin(), &[p, "--json"], LIMIT);
    assert_eq!(held.code, 0, "held swap file reported:\n{}", held.stdout);
    let forced = run(fsck_bin(), &[p, "--repair", "--force", "--json"], LIMIT);
    assert_eq!(forced.code, 0, "{}{}", forced.stdout, forced.stderr);
    assert_eq!(
        fs.getattr(a.ino).expect("swap file still there").size,
        4 << 20
    );

    fs.close(fh).expect("close");
    unmount(fs);
    let left = run(fsck_bin(), &[p, "--json"], LIMIT);
    assert_eq!(left.code, 4, "{}", left.stdout);
    assert_eq!(codes(&left), ["VSWP001"], "{}", left.stdout);
    assert!(
        left.stdout.contains("/vm1/vm1-5f3a.vswp"),
        "{}",
        left.stdout
    );
    let repair = run(fsck_bin(), &[p, "--repair"], LIMIT);
    assert_eq!(repair.code, 1, "{}{}", repair.stdout, repair.stderr);
    let after = run(fsck_bin(), &[p], LIMIT);
    assert_eq!(after.code, 0, "{}", after.stdout);
    let fs = mount(&img);
    let vm = fs.lookup(fs.root(), b"vm1").expect("vm1").ino;
    assert!(fs.lookup(vm, b"vm1-5f3a.vswp").is_err(), "not deleted");
    assert!(
        fs.lookup(vm, b"vm1.vmdk").is_ok(),
        "the disk next to it is gone"
    );
    unmount(fs);
}

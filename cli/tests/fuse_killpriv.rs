//! Set-user-ID and set-group-ID bits on a `vmfs mount` are cleared as the
//! VFS clears them (the mount negotiates FUSE_HANDLE_KILLPRIV_V2 and does
//! it itself): on write and truncate by a caller without CAP_FSETID, on
//! chown always; set-group-ID only with group execute. Writes by root
//! (CAP_FSETID) keep them.
//!
//! The unprivileged caller is a child process running as nobody (65534),
//! handed the file open read-write as its stdin, so it needs no access to
//! the test's private temporary directory.

mod fuse_util;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use fuse_util::{check_image, fuse_ready, make_image, mount};

const NOBODY: u32 = 65534;

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

fn set_mode(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    assert_eq!(mode(p), m, "chmod {m:o} of {}", p.display());
}

/// Run `script` with `sh` as nobody, `p` open read-write on its stdin.
fn as_nobody(p: &Path, script: &str) {
    let f = OpenOptions::new().read(true).write(true).open(p).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::from(f))
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("running sh as nobody");
    assert!(
        out.status.success(),
        "{script:?} as nobody: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn setid_bits_cleared_on_write_truncate_and_chown() {
    if !fuse_ready("fuse_killpriv") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 256 << 20);
    let a = mount(&img, &dir.path().join("a"), "killpriv");
    let f = a.mountpoint.join("prog");
    fs::write(&f, b"#!/bin/sh\n").unwrap();

    // Write by nobody: both bits go (group execute set).
    set_mode(&f, 0o6777);
    as_nobody(&f, "printf x >&0");
    assert_eq!(mode(&f), 0o777, "after a write by nobody");
    assert_eq!(fs::read(&f).unwrap(), b"x!/bin/sh\n");

    // Without group execute, set-group-ID stays (mandatory locking mark).
    set_mode(&f, 0o6767);
    as_nobody(&f, "printf y >&0");
    assert_eq!(mode(&f), 0o2767, "after a write by nobody, no g+x");

    // Truncate by nobody.
    set_mode(&f, 0o6777);
    as_nobody(&f, "truncate -s 3 /proc/self/fd/0");
    assert_eq!(fs::metadata(&f).unwrap().len(), 3);
    assert_eq!(mode(&f), 0o777, "after a truncate by nobody");

    // Root has CAP_FSETID: its writes and truncates keep the bits.
    set_mode(&f, 0o6777);
    OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(b"root")
        .unwrap();
    File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(2)
        .unwrap();
    assert_eq!(mode(&f), 0o6777, "after a write and truncate by root");

    // chown clears them whoever does it.
    std::os::unix::fs::chown(&f, Some(NOBODY), None).unwrap();
    assert_eq!(mode(&f), 0o777, "after chown by root");
    assert_eq!(fs::metadata(&f).unwrap().uid(), NOBODY);

    // An explicit chmod sets them again.
    set_mode(&f, 0o4755);

    let (st, out) = a.stop();
    assert!(st.success(), "mount exited {st}:\n{out}");
    check_image(&img);
}

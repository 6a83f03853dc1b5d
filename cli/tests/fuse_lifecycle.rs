//! How a `vmfs mount` ends: an outside `umount` and SIGTERM with files
//! still open both leave the volume cleanly; a host that misses its
//! self-fence deadline (the process is stopped for longer than F) fences
//! itself: requests fail with EIO, the mount goes away and the process
//! exits with status 3.

mod fuse_util;

use std::io::Read;
use std::time::{Duration, Instant};

use std::io::Write;
use std::process::Command;

use fuse_util::{check_image, fuse_ready, make_image, mount, timeouts};

#[test]
fn an_outside_umount_leaves_the_volume_cleanly() {
    if !fuse_ready("fuse_lifecycle") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 1 << 30);
    let mut m = mount(&img, &dir.path().join("m"), "outside");
    std::fs::write(m.mountpoint.join("kept"), b"kept across the umount").unwrap();
    let st = Command::new("umount").arg(&m.mountpoint).status().unwrap();
    assert!(st.success(), "umount: {st}");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = m.try_wait() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{}", m.output());
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = m.output();
    assert!(status.success(), "exit {status}:\n{out}");
    assert!(out.contains("unmounted from outside"), "{out}");
    assert!(out.contains("left the volume cleanly"), "{out}");
    check_image(&img);
    let m = mount(&img, &dir.path().join("m"), "again");
    let back = std::fs::read(m.mountpoint.join("kept")).unwrap();
    assert_eq!(back, b"kept across the umount");
    let (st, out) = m.stop();
    assert!(st.success(), "{out}");
}

#[test]
fn sigterm_with_open_files_detaches_and_leaves_cleanly() {
    if !fuse_ready("fuse_lifecycle") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 1 << 30);
    let m = mount(&img, &dir.path().join("m"), "busy");
    let mut held = std::fs::File::create(m.mountpoint.join("open")).unwrap();
    held.write_all(&[0x42; 100_000]).unwrap();
    let (st, out) = m.stop();
    assert!(st.success(), "exit {st}:\n{out}");
    assert!(out.contains("left the volume cleanly"), "{out}");
    assert!(out.contains("detached"), "{out}");
    // The process is gone: the open file is dead, not silently served.
    let e = held.write_all(b"more").unwrap_err();
    assert!(
        matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::ENOTCONN)),
        "write after the mount ended: {e}"
    );
    drop(held);
    check_image(&img);
    let m = mount(&img, &dir.path().join("m2"), "after");
    let back = std::fs::read(m.mountpoint.join("open")).unwrap();
    assert_eq!(back, vec![0x42; 100_000]);
    let (st, out) = m.stop();
    assert!(st.success(), "{out}");
}

#[test]
fn a_fenced_mount_fails_requests_and_exits_non_zero() {
    if !fuse_ready("fuse_lifecycle") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 1 << 30);
    let mut m = mount(&img, &dir.path().join("m"), "fenced");
    let p = m.mountpoint.join("f");
    std::fs::write(&p, b"before the fence").unwrap();
    let mut held = std::fs::File::open(&p).unwrap();

    let pid = m.pid();
    // SAFETY: signals to our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(timeouts().self_fence * 2);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };

    let start = Instant::now();
    let status = loop {
        if let Some(st) = m.try_wait() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the fenced mount did not exit:\n{}",
            m.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = m.output();
    assert_eq!(status.code(), Some(3), "exit status {status}:\n{out}");
    assert!(out.contains("fenced"), "{out}");
    eprintln!(
        "fuse_fence: exited {status} after SIGCONT in {:?}:\n{out}",
        start.elapsed()
    );
    // The file opened before is dead: EIO while the process lived, ENOTCONN
    // once it is gone — never data.
    let mut buf = Vec::new();
    let e = held.read_to_end(&mut buf).unwrap_err();
    assert!(
        matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::ENOTCONN)),
        "read after the fence: {e}"
    );
    drop(held);
    m.kill();
}

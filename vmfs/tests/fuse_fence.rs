//! A `vmfs mount` whose host misses its self-fence deadline (the process
//! is stopped for longer than F) fences itself: requests fail with EIO,
//! the mount goes away and the process exits with status 3.

mod fuse_util;

use std::io::Read;
use std::time::{Duration, Instant};

use fuse_util::{fuse_ready, make_image, mount, timeouts};

#[test]
fn a_fenced_mount_fails_requests_and_exits_non_zero() {
    if !fuse_ready("fuse_fence") {
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

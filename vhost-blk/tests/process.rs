//! The `vmfs-vhost-blk` binary as a real process: SIGTERM stops it
//! gracefully; after SIGKILL mid-I/O a restarted daemon serves the flushed
//! data from the same (stale) socket path.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{driver, pattern, wait_for_socket};
use vmfs_vhost_blk::frontend::{BlkFrontend, DriverOptions, Layout, Request};

const MIB: u64 = 1 << 20;

/// The daemon process; killed if a test fails before it is reaped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

fn spawn(file: &Path, socket: &Path, queues: u16) -> Proc {
    // The daemon's log goes next to the disk, not into the test's pipes.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file.with_extension("log"))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_vmfs-vhost-blk"))
        .stdout(Stdio::null())
        .stderr(log)
        .arg("--file")
        .arg(file)
        .arg("--socket")
        .arg(socket)
        .arg("--queues")
        .arg(queues.to_string())
        .spawn()
        .expect("vmfs-vhost-blk starts");
    let child = Proc(child);
    wait_for_socket(socket);
    child
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill has no memory preconditions; the pid is our own child,
    // not yet reaped.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", child.id());
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_stops_the_daemon_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.img");
    std::fs::write(&file, vec![0u8; (4 * MIB) as usize]).unwrap();
    let socket = dir.path().join("blk.sock");
    let mut child = spawn(&file, &socket, 2);
    let (fe, mut qs) = BlkFrontend::connect(&socket, &driver(2)).unwrap();
    qs[1].write(64, &pattern(64 * 512, 65536, 1)).unwrap();
    signal(&child, libc::SIGTERM);
    let st = wait_exit(&mut child, Duration::from_secs(10));
    assert!(st.success(), "graceful exit, got {st}");
    assert!(!socket.exists(), "socket removed");
    drop(qs);
    drop(fe);
    let content = std::fs::read(&file).unwrap();
    assert!(content[64 * 512..64 * 512 + 65536] == pattern(64 * 512, 65536, 1));
}

#[test]
fn restarted_daemon_serves_flushed_data_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.img");
    std::fs::write(&file, vec![0u8; (8 * MIB) as usize]).unwrap();
    let socket = dir.path().join("blk.sock");
    let mut child = spawn(&file, &socket, 1);
    let big = DriverOptions {
        max_data: 1 << 20,
        ..driver(1)
    };
    {
        let (_fe, mut qs) = BlkFrontend::connect(&socket, &big).unwrap();
        let q = &mut qs[0];
        q.write(0, &pattern(0, 1 << 20, 2)).unwrap();
        q.flush().unwrap();
        // Writes in flight when the daemon dies.
        for i in 0..16u64 {
            let data = pattern(MIB + i * 4096, 4096, 3);
            q.push(
                &Request::Write {
                    sector: (MIB / 512) + i * 8,
                    data: &data,
                },
                Layout::Direct,
            )
            .unwrap();
        }
        q.kick().unwrap();
        signal(&child, libc::SIGKILL);
        wait_exit(&mut child, Duration::from_secs(10));
    }
    assert!(socket.exists(), "SIGKILL leaves the socket file behind");
    let mut child = spawn(&file, &socket, 1);
    let (_fe, mut qs) = BlkFrontend::connect(&socket, &big).unwrap();
    assert!(
        qs[0].read(0, 1 << 20).unwrap() == pattern(0, 1 << 20, 2),
        "flushed data served"
    );
    for i in 0..16u64 {
        let got = qs[0].read(MIB / 512 + i * 8, 4096).unwrap();
        assert!(
            got == pattern(MIB + i * 4096, 4096, 3) || got.iter().all(|&b| b == 0),
            "in-flight write {i} torn"
        );
    }
    signal(&child, libc::SIGTERM);
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
}

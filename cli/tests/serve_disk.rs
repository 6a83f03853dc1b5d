//! `vmfs serve-disk`: a VMDK on the volume served over vhost-user-blk, driven
//! as a VMM would (real virtqueues in shared memory, through the vhost
//! crate's frontend): data written by the "guest" reads back, the disk's
//! EXCLUSIVE lock keeps a second daemon out, SIGTERM closes cleanly, and a
//! read-only daemon afterwards serves the same bytes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmfs_vhost_blk::frontend::{BlkFrontend, DriverOptions};

fn vmfs(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vmfs"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn serve(dir: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vmfs"))
        .args([
            "serve-disk",
            "ds.img",
            "vm1/vm1.vmdk",
            "--socket",
            "vm1.sock",
        ])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_socket(p: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("serve-disk exited {st}: {err}");
        }
        assert!(Instant::now() < deadline, "no socket {}", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(mut child: Child) -> String {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let st = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(st.success(), "serve-disk exited {st}: {err}");
    err
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed)
        .collect()
}

#[test]
fn serves_a_vmdk_to_a_vhost_user_frontend() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = vmfs(d, &["mkfs", "ds.img", "--label", "ds", "--size", "2G"]);
    assert!(o.status.success(), "{o:?}");
    let o = vmfs(
        d,
        &[
            "disk",
            "create",
            "ds.img",
            "vm1/vm1.vmdk",
            "--size",
            "64M",
            "--type",
            "thin",
        ],
    );
    assert!(o.status.success(), "{o:?}");

    let sock = d.join("vm1.sock");
    let mut daemon = serve(d, &["--queues", "2"]);
    wait_socket(&sock, &mut daemon);
    let opts = DriverOptions {
        num_queues: 2,
        ..DriverOptions::default()
    };
    let (fe, mut queues) = BlkFrontend::connect(&sock, &opts).unwrap();
    assert_eq!(fe.config().capacity_sectors, (64 << 20) / 512);
    let a = pattern(1, 128 << 10);
    let b = pattern(2, 64 << 10);
    queues[0].write(0, &a).unwrap();
    // Sector 40000 lies in another 1 MiB block: a second thin allocation.
    queues[1].write(40_000, &b).unwrap();
    queues[0].flush().unwrap();
    assert_eq!(queues[1].read(0, a.len() as u32).unwrap(), a);
    assert_eq!(queues[0].read(40_000, b.len() as u32).unwrap(), b);
    // A hole reads as zeros.
    assert!(queues[0]
        .read(100_000, 4096)
        .unwrap()
        .iter()
        .all(|x| *x == 0));
    let id = queues[0].get_id().unwrap();
    assert!(id.starts_with(b"vm1.vmdk"), "{id:?}");

    // The disk is EXCLUSIVE-locked by the serving host: a second daemon
    // (another host) is refused, naming the lock.
    let second = Command::new(env!("CARGO_BIN_EXE_vmfs"))
        .args([
            "serve-disk",
            "ds.img",
            "vm1/vm1.vmdk",
            "--socket",
            "other.sock",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr).to_lowercase();
    assert!(
        err.contains("lock") || err.contains("busy") || err.contains("held"),
        "{err}"
    );

    drop(queues);
    drop(fe);
    stop(daemon);

    // After a clean stop, a read-only daemon serves the same bytes.
    let mut ro = serve(d, &["--read-only", "--queues", "1"]);
    wait_socket(&sock, &mut ro);
    let (fe, mut queues) = BlkFrontend::connect(&sock, &DriverOptions::default()).unwrap();
    assert_eq!(queues[0].read(0, a.len() as u32).unwrap(), a);
    assert_eq!(queues[0].read(40_000, b.len() as u32).unwrap(), b);
    assert!(
        queues[0].write(0, &b).is_err(),
        "read-only disk took a write"
    );
    drop(queues);
    drop(fe);
    stop(ro);
}

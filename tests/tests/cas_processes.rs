//! 8 processes x 10,000 compare-and-write increments on one sector of one
//! image file must end with the exact count: the emulated ATS of FileDev is
//! atomic across processes of one machine.

use std::process::Command;
use std::time::Instant;

use vmfs::dev::{BlockDev, FileDev, FileDevOptions};

const WORKERS: u64 = 8;
const INCREMENTS: u64 = 10_000;

fn run(engine_env: Option<&str>) {
    // tmpfs keeps fdatasync cheap; the atomicity under test is the OFD lock's.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let img = dir.path().join("cas.img");
    let dev = FileDev::open(
        &img,
        FileDevOptions {
            create_size: Some(1 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    let offset = 4096u64;
    let start = Instant::now();
    let children: Vec<_> = (0..WORKERS)
        .map(|_| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_cas-worker"));
            c.arg(&img)
                .arg(offset.to_string())
                .arg(INCREMENTS.to_string());
            if let Some(v) = engine_env {
                c.env("VMFS_NO_URING", v);
            }
            c.output_async()
        })
        .collect();
    let mut retries = 0u64;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "worker failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        retries += stdout
            .lines()
            .find_map(|l| l.strip_prefix("retries "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    let mut b = [0u8; 512];
    dev.read_at(&mut b, offset).unwrap();
    let count = u64::from_le_bytes(b[..8].try_into().unwrap());
    println!(
        "engine env {:?}: {WORKERS} processes x {INCREMENTS} increments = {count} in {:.2?} ({retries} miscompare retries)",
        engine_env,
        start.elapsed()
    );
    assert_eq!(count, WORKERS * INCREMENTS);
}

trait SpawnAsync {
    fn output_async(&mut self) -> std::process::Child;
}

impl SpawnAsync for Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn cas-worker")
    }
}

#[test]
fn eight_processes_ten_thousand_cas_each_io_uring() {
    run(None);
}

#[test]
fn eight_processes_ten_thousand_cas_each_pread() {
    run(Some("1"));
}

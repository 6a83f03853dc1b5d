//! The `vmfs mkfs` and `vmfs info` commands, run as a user would.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

fn vmfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmfs"))
        .args(args)
        .output()
        .expect("run vmfs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A directory on a filesystem that can hold a 64 TiB sparse file (tmpfs;
/// ext4 stops at 16 TiB).
fn big_file_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs) is needed for the 64 TiB image")
}

#[test]
fn mkfs_64_tib_sparse_image_writes_only_metadata() {
    let dir = big_file_dir();
    let img = dir.path().join("ds.img");
    let img_s = img.to_str().unwrap();
    let start = Instant::now();
    let o = vmfs(&["mkfs", img_s, "--label", "big", "--size", "64T"]);
    let took = start.elapsed();
    assert!(o.status.success(), "{}", text(&o));
    let used = std::fs::metadata(&img).unwrap().blocks() * 512;
    println!(
        "mkfs 64 TiB: {took:.2?}, {used} bytes really used ({} MiB)",
        used >> 20
    );
    assert!(took.as_secs() < 30, "mkfs took {took:?}");
    assert!(used < 128 << 20, "{used} bytes written");

    let o = vmfs(&["info", img_s, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["label"], "big");
    assert_eq!(j["capacity_bytes"], 64u64 << 40);
    assert!(j["free_bytes"].as_u64().unwrap() > 63 << 40);
    let o = vmfs(&["info", img_s]);
    assert!(
        text(&o).contains("volume 'big'") && text(&o).contains("64.0 TiB"),
        "{}",
        text(&o)
    );
}

#[test]
fn mkfs_refuses_an_existing_volume_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ds.img");
    let img_s = img.to_str().unwrap();
    assert!(vmfs(&["mkfs", img_s, "--label", "one", "--size", "2G"])
        .status
        .success());
    let o = vmfs(&["mkfs", img_s, "--label", "two"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("'one'") && text(&o).contains("--force"),
        "{}",
        text(&o)
    );
    let o = vmfs(&["mkfs", img_s, "--label", "two", "--force"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = vmfs(&["info", img_s, "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["label"], "two");
}

#[test]
fn mkfs_refuses_bad_arguments_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("small.img");
    let img_s = img.to_str().unwrap();
    let o = vmfs(&["mkfs", img_s, "--label", "x", "--size", "8M"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("too small") && text(&o).contains("at least"),
        "{}",
        text(&o)
    );
    assert!(
        !Path::new(&img).exists(),
        "a refused mkfs must not leave an image behind"
    );
    let o = vmfs(&["mkfs", img_s, "--label", "x", "--size", "12Q"]);
    assert!(
        !o.status.success() && text(&o).contains("unknown unit"),
        "{}",
        text(&o)
    );
    let o = vmfs(&[
        "mkfs",
        img_s,
        "--label",
        "x",
        "--size",
        "4G",
        "--block-size",
        "3M",
    ]);
    assert!(
        !o.status.success() && text(&o).contains("--block-size"),
        "{}",
        text(&o)
    );
    let o = vmfs(&["mkfs", img_s, "--label", "x"]);
    assert!(
        !o.status.success() && text(&o).contains("--size"),
        "{}",
        text(&o)
    );
    let o = vmfs(&[
        "mkfs",
        img_s,
        "--label",
        "x",
        "--size",
        "4G",
        "--max-hosts",
        "0",
    ]);
    assert!(
        !o.status.success() && text(&o).contains("--max-hosts"),
        "{}",
        text(&o)
    );
}

#[test]
fn info_on_a_device_without_a_volume_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    let garbage = dir.path().join("garbage.img");
    let bytes: Vec<u8> = (0..(8u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, bytes).unwrap();
    for p in [&empty, &garbage] {
        let o = vmfs(&["info", p.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("no vmfs volume found"), "{}", text(&o));
        assert!(!text(&o).contains("panicked"));
    }
    let o = vmfs(&["info", dir.path().join("missing.img").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("missing.img"), "{}", text(&o));
}

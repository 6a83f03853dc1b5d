//! `vmfs hosts` and `vmfs locks` against a volume with live hosts (joined
//! in this process) and a host that stopped beating.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use vmfs::cluster::{Host, HostConfig, Timeouts};
use vmfs::dev::{FileDev, FileDevOptions, SharedDev};
use vmfs::format::{LockMode, ResourceKind};
use vmfs::volume::{mkfs, MkfsOptions, Volume};

fn vmfs(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_vmfs"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn hosts_and_locks_report_what_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("v.img");
    let dev: SharedDev = Arc::new(
        FileDev::open(
            &img,
            FileDevOptions {
                create_size: Some(512 << 20),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let t = Timeouts::scaled(1.0 / 30.0);
    mkfs(
        &dev,
        &MkfsOptions {
            label: "cli".into(),
            max_hosts: 8,
            journal_size: 1 << 20,
            timeouts: t.to_minimums(),
            ..Default::default()
        },
        false,
    )
    .unwrap();
    let img_s = img.to_str().unwrap();
    let (ok, out) = vmfs(&["hosts", img_s]);
    assert!(ok && out.contains("no host has joined"), "{out}");

    let a = Host::join(Volume::open(dev.clone()).unwrap(), HostConfig::new("alpha")).unwrap();
    a.start();
    let b = Host::join(Volume::open(dev.clone()).unwrap(), HostConfig::new("beta")).unwrap();
    let vol = Volume::open(dev.clone()).unwrap();
    let l = vol.cluster_lock_addr(ResourceKind::SmallBlock, 2);
    a.lock(l, 0, LockMode::Exclusive, Duration::from_secs(1))
        .unwrap();
    // beta never beats: it must show as silent.
    let (ok, out) = vmfs(&["hosts", img_s, "--json"]);
    assert!(ok, "{out}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let slots = j["slots"].as_array().unwrap();
    let find = |name: &str| {
        slots
            .iter()
            .find(|s| s["host_name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(find("alpha")["verdict"], "alive");
    assert!(
        find("beta")["verdict"]
            .as_str()
            .unwrap()
            .starts_with("silent"),
        "{out}"
    );

    let (ok, out) = vmfs(&["locks", img_s, "--json"]);
    assert!(ok, "{out}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let locks = j["locks"].as_array().unwrap();
    assert_eq!(locks.len(), 1, "{out}");
    assert_eq!(locks[0]["lock"], "small block cluster 2");
    assert_eq!(locks[0]["mode"], "exclusive");
    assert_eq!(locks[0]["holders"][0]["slot"], a.slot());
    let (ok, out) = vmfs(&["locks", img_s]);
    assert!(
        ok && out.contains("small block cluster 2") && out.contains("exclusive"),
        "{out}"
    );

    // A file held open for write shows its inode lock by path.
    let fs = vmfs::fs::Fs::mount(a.clone()).unwrap();
    let vms = fs.mkdir(fs.root(), b"vms", 0o755, 0, 0).unwrap();
    let f = fs.create(vms.ino, b"disk.vmdk", 0o644, 0, 0).unwrap();
    let fh = fs.open(f.ino, true).unwrap();
    let (ok, out) = vmfs(&["locks", img_s, "/vms/disk.vmdk", "--json"]);
    assert!(ok, "{out}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["locks"][0]["lock"], format!("inode {}", f.ino));
    assert_eq!(j["locks"][0]["mode"], "exclusive");
    assert_eq!(j["locks"][0]["holders"][0]["slot"], a.slot());
    let (ok, out) = vmfs(&["locks", img_s, "/vms/nope.vmdk"]);
    assert!(!ok && out.contains("no such file"), "{out}");
    fs.close(fh).unwrap();
    let (ok, out) = vmfs(&["locks", img_s, "vms/disk.vmdk"]);
    assert!(ok && out.contains("free"), "{out}");
    fs.unmount().unwrap();

    a.leave().unwrap();
    let (ok, out) = vmfs(&["hosts", img_s]);
    assert!(
        ok && out.contains("clean-exit") && out.contains("alpha"),
        "{out}"
    );
    let (_, out) = vmfs(&["locks", img_s]);
    assert!(out.contains("no locks held"), "{out}");
    b.abandon();
}

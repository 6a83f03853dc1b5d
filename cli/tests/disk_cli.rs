//! `vmfs disk` / `vmfs swap` from the command line: a disk open on another
//! host is refused with who holds it and what to do; bad input names what
//! was wrong; the snapshot commands keep the chain consistent.

use std::process::Command;
use std::sync::Arc;

use vmfs::cluster::{Host, HostConfig};
use vmfs::dev::{FileDev, FileDevOptions, SharedDev};
use vmfs::disk::{DiskLock, DiskOptions, VirtualDisk};
use vmfs::fs::Fs;
use vmfs::volume::Volume;

const BIN: &str = env!("CARGO_BIN_EXE_vmfs");

fn vmfs(args: &[&str]) -> (bool, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn mount(img: &str) -> Fs {
    let dev: SharedDev = Arc::new(FileDev::open(img, FileDevOptions::default()).unwrap());
    let host = Host::join(Volume::open(dev).unwrap(), HostConfig::new("vmm")).unwrap();
    host.start();
    Fs::mount(host).unwrap()
}

#[test]
fn disk_commands_refuse_disks_in_use_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vol.img").to_str().unwrap().to_string();
    let (ok, out) = vmfs(&[
        "mkfs",
        &img,
        "--label",
        "c",
        "--size",
        "1G",
        "--max-hosts",
        "8",
        "--journal-size",
        "4M",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = vmfs(&["disk", "create", &img, "vm/a.vmdk", "--size", "1000"]);
    assert!(
        !ok && out.contains("multiple of 512") && out.contains(&img),
        "{out}"
    );
    let (ok, out) = vmfs(&[
        "disk",
        "create",
        &img,
        "vm/a.vmdk",
        "--size",
        "8M",
        "--type",
        "fat",
    ]);
    assert!(!ok && out.contains("not a disk type"), "{out}");
    let (ok, out) = vmfs(&[
        "disk",
        "create",
        &img,
        "vm/a.vmdk",
        "--size",
        "8M",
        "--type",
        "zeroedthick",
    ]);
    assert!(ok, "{out}");

    // A VMM on another host has the disk open: the jobs are refused.
    let fs = mount(&img);
    let disk = VirtualDisk::open(&fs, "vm/a.vmdk", &DiskOptions::default()).unwrap();
    disk.write(0, vec![1; 4096]).wait().unwrap();
    disk.flush().wait().unwrap();
    for args in [
        vec!["disk", "delete", &img, "vm/a.vmdk"],
        vec!["disk", "snapshot", "create", &img, "vm/a.vmdk"],
    ] {
        let (ok, out) = vmfs(&args);
        assert!(
            !ok && out.contains(&img)
                && out.contains("vm/a.vmdk")
                && out.contains("in use on another host"),
            "{args:?}: {out}"
        );
    }
    // Reading its description still works (follows the writer).
    let (ok, out) = vmfs(&["disk", "info", &img, "vm/a.vmdk"]);
    assert!(
        ok && out.contains("zeroedthick") && out.contains("Exclusive"),
        "{out}"
    );
    disk.close().unwrap();
    // Multi-writer needs eager-zeroed: refused, then fine after inflate.
    let mw = DiskOptions {
        lock: DiskLock::MultiWriter,
        ..DiskOptions::default()
    };
    let e = VirtualDisk::open(&fs, "vm/a.vmdk", &mw).unwrap_err();
    assert!(e.to_string().contains("eager-zeroed"), "{e}");
    let host = fs.host().clone();
    fs.unmount().unwrap();
    drop(fs);
    host.leave().unwrap();
    let (ok, out) = vmfs(&["disk", "inflate", &img, "vm/a.vmdk"]);
    assert!(ok, "{out}");
    let fs = mount(&img);
    let d = VirtualDisk::open(&fs, "vm/a.vmdk", &mw).unwrap();
    let got = d.read(0, 8192).wait().unwrap();
    assert_eq!(&got[..4096], &[1u8; 4096][..], "data kept by inflate");
    assert_eq!(&got[4096..], &[0u8; 4096][..]);
    d.close().unwrap();
    let host = fs.host().clone();
    fs.unmount().unwrap();
    drop(fs);
    host.leave().unwrap();

    // Snapshots: create two, delete (merge) the top, consolidate.
    let (ok, out) = vmfs(&["disk", "snapshot", "create", &img, "vm/a.vmdk"]);
    assert!(ok && out.trim() == "vm/a-000001.vmdk", "{out}");
    let (ok, out) = vmfs(&["disk", "snapshot", "create", &img, "vm/a-000001.vmdk"]);
    assert!(ok && out.trim() == "vm/a-000002.vmdk", "{out}");
    let (ok, out) = vmfs(&["disk", "snapshot", "delete", &img, "vm/a-000002.vmdk"]);
    assert!(ok && out.trim() == "vm/a-000001.vmdk", "{out}");
    let (ok, out) = vmfs(&["disk", "snapshot", "consolidate", &img, "vm/a-000001.vmdk"]);
    assert!(ok && out.trim() == "vm/a.vmdk", "{out}");
    let (ok, out) = vmfs(&["disk", "info", &img, "vm/a.vmdk"]);
    assert!(
        ok && out.contains("1 disk(s)") && out.contains("eagerzeroedthick"),
        "{out}"
    );

    // Swap: bad sizes named; a created swap file is listed by swap delete's path.
    let (ok, out) = vmfs(&[
        "swap",
        "create",
        &img,
        "--vm",
        "vm1",
        "--memory",
        "1G",
        "--reservation",
        "2G",
    ]);
    assert!(!ok && out.contains("--reservation"), "{out}");
    let (ok, out) = vmfs(&[
        "swap",
        "create",
        &img,
        "--vm",
        "vm1",
        "--memory",
        "64M",
        "--reservation",
        "32M",
    ]);
    assert!(ok, "{out}");
    let path = out.lines().next().unwrap().trim().to_string();
    assert!(
        path.starts_with("/vm1/vm1-") && path.ends_with(".vswp"),
        "{out}"
    );
    let (ok, out) = vmfs(&["swap", "delete", &img, &path]);
    assert!(ok, "{out}");
    let (ok, out) = vmfs(&["disk", "delete", &img, "vm/a.vmdk"]);
    assert!(ok && out.contains("2 files"), "{out}");
}

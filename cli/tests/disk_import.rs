//! Disks from outside the volume: `qemu-img convert` from a qcow2 straight
//! into a disk on the FUSE mount, and `vmfs disk import` of a raw image and
//! of a host VMDK; each compares identical with the source (`qemu-img
//! compare`), and the volume is consistent afterwards.

mod fuse_util;

use std::path::Path;
use std::process::Command;

use fuse_util::{check_image, fuse_ready, make_image, mount};

fn run(dir: &Path, prog: &str, args: &[&str]) -> String {
    let o = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{prog} {args:?}: {}\n{text}", o.status);
    text
}

fn vmfs(dir: &Path, args: &[&str]) -> String {
    run(dir, env!("CARGO_BIN_EXE_vmfs"), args)
}

#[test]
fn qcow2_converted_onto_the_mount_and_imports_compare_identical() {
    if !fuse_ready("disk_import") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let img = make_image(d, 2 << 30);
    let img_s = img.to_str().unwrap();
    // A qcow2 with data in a few places and holes elsewhere.
    run(
        d,
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "src.qcow2", "48M"],
    );
    run(
        d,
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0xab 1M 3M",
            "-c",
            "write -P 0x5c 20M 64k",
            "-c",
            "write -P 0x11 47M 512k",
            "src.qcow2",
        ],
    );
    run(
        d,
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            "src.qcow2",
            "src.raw",
        ],
    );
    // A host VMDK (monolithicFlat) of the same content.
    run(
        d,
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "vmdk",
            "-o",
            "subformat=monolithicFlat",
            "src.qcow2",
            "host.vmdk",
        ],
    );

    // vmfs disk import: raw and VMDK sources.
    let out = vmfs(d, &["disk", "import", "src.raw", img_s, "vm/raw.vmdk"]);
    // Only the data was read (SEEK_DATA/SEEK_HOLE): 3 MiB + 64 KiB + 512 KiB.
    assert!(out.contains("3.6 MiB of data read"), "{out}");
    vmfs(
        d,
        &[
            "disk",
            "import",
            "host.vmdk",
            img_s,
            "vm/fromvmdk.vmdk",
            "--type",
            "zeroedthick",
        ],
    );
    // A missing source is refused before joining, naming it.
    let o = Command::new(env!("CARGO_BIN_EXE_vmfs"))
        .args(["disk", "import", "nope.raw", img_s, "vm/x.vmdk"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope.raw"));

    // qemu-img convert into a disk created on the volume, through the mount.
    vmfs(
        d,
        &["disk", "create", img_s, "vm/conv.vmdk", "--size", "48M"],
    );
    let mnt = d.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = mount(&img, &mnt, "importer");
    run(
        d,
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "qcow2",
            "-O",
            "vmdk",
            "src.qcow2",
            "mnt/vm/conv.vmdk",
        ],
    );
    for disk in [
        "mnt/vm/conv.vmdk",
        "mnt/vm/raw.vmdk",
        "mnt/vm/fromvmdk.vmdk",
    ] {
        let out = run(
            d,
            "qemu-img",
            &["compare", "-f", "qcow2", "src.qcow2", disk],
        );
        assert!(out.contains("identical"), "{disk}: {out}");
    }
    let info = run(d, "qemu-img", &["info", "mnt/vm/raw.vmdk"]);
    assert!(info.contains("virtual size: 48 MiB"), "{info}");
    let (st, log) = m.stop();
    assert!(st.success(), "{log}");
    let report = check_image(&img);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

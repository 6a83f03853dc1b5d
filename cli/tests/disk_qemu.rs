//! Disks made by `vmfs disk` and written through `vmfs::disk::VirtualDisk`,
//! checked by qemu (Debian qemu-utils): the files are copied out of the
//! volume through the filesystem (holes kept) and given to qemu-img.
//! Also the reverse: a qcow2 image converted by qemu-img to raw and
//! imported into a disk on the volume through `VirtualDisk`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use vmfs::cluster::{Host, HostConfig};
use vmfs::dev::{FileDev, FileDevOptions, SharedDev};
use vmfs::disk::{DiskOptions, FsStore, ReadLock, VirtualDisk, WriteLock};
use vmfs::fs::Fs;
use vmfs::vmdk::create_snapshot;
use vmfs::volume::Volume;

const BIN: &str = env!("CARGO_BIN_EXE_vmfs");
const MIB: u64 = 1 << 20;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn vmfs(args: &[&str]) -> String {
    let o = Command::new(BIN).args(args).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "vmfs {args:?}: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn qemu(args: &[&str]) -> (bool, String) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn mount(img: &str) -> Fs {
    let dev: SharedDev = Arc::new(FileDev::open(img, FileDevOptions::default()).unwrap());
    let host = Host::join(Volume::open(dev).unwrap(), HostConfig::new("qemu-test")).unwrap();
    host.start();
    Fs::mount(host).unwrap()
}

fn leave(fs: Fs) {
    let host = fs.host().clone();
    fs.unmount().unwrap();
    drop(fs);
    host.leave().unwrap();
}

/// Copy volume files `names` into `dir` (same relative names), keeping
/// holes: zero MiBs are not written.
fn copy_out(fs: &Fs, names: &[&str], dir: &Path) {
    let st = FsStore::new(fs.clone(), WriteLock::Exclusive, ReadLock::Follow);
    for name in names {
        let ino = st.lookup(name).unwrap();
        let size = fs.getattr(ino).unwrap().size;
        let fh = fs.open(ino, false).unwrap();
        let out = std::fs::File::create(dir.join(name.rsplit('/').next().unwrap())).unwrap();
        out.set_len(size).unwrap();
        let mut pos = 0;
        while pos < size {
            let b = fs.read(fh, pos, MIB as usize).unwrap();
            if b.iter().any(|&x| x != 0) {
                std::os::unix::fs::FileExt::write_all_at(&out, &b, pos).unwrap();
            }
            pos += b.len() as u64;
        }
        fs.close(fh).unwrap();
    }
}

/// Deterministic writes: (offset, data).
fn pattern(seed: u64, n: usize, cap: u64) -> Vec<(u64, Vec<u8>)> {
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let len = 512 * (1 + next() % 64);
            let off = (next() % (cap - len)) / 512 * 512 + next() % 3 * 100;
            let off = off.min(cap - len);
            let byte = (next() % 255 + 1) as u8;
            (off, vec![byte; len as usize])
        })
        .collect()
}

fn apply(disk: &VirtualDisk, reference: &Path, writes: &[(u64, Vec<u8>)]) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(reference)
        .unwrap();
    for (off, d) in writes {
        disk.write(*off, d.clone()).wait().unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, d, *off).unwrap();
    }
    disk.flush().wait().unwrap();
}

#[test]
fn qemu_reads_disks_made_and_written_on_the_volume() {
    if !have("qemu-img") {
        println!("SKIP: qemu-img not installed (Debian qemu-utils)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vol.img").to_str().unwrap().to_string();
    vmfs(&[
        "mkfs",
        &img,
        "--label",
        "q",
        "--size",
        "2G",
        "--max-hosts",
        "8",
        "--journal-size",
        "4M",
    ]);
    for t in ["thin", "zeroedthick", "eagerzeroedthick"] {
        vmfs(&[
            "disk",
            "create",
            &img,
            &format!("vm/{t}.vmdk"),
            "--size",
            "48M",
            "--type",
            t,
        ]);
    }
    let fs = mount(&img);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for t in ["thin", "zeroedthick", "eagerzeroedthick"] {
        copy_out(
            &fs,
            &[&format!("vm/{t}.vmdk"), &format!("vm/{t}-flat.vmdk")],
            &out,
        );
        let (ok, text) = qemu(&[
            "qemu-img",
            "info",
            "--output=json",
            out.join(format!("{t}.vmdk")).to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        let j: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(j["format"], "vmdk", "{t}: {text}");
        assert_eq!(j["virtual-size"], 48 * MIB, "{t}: {text}");
        assert_eq!(
            j["format-specific"]["data"]["create-type"], "vmfs",
            "{t}: {text}"
        );
    }

    // A pattern written through VirtualDisk equals the raw reference.
    let cap = 48 * MIB;
    let reference = dir.path().join("ref.raw");
    std::fs::File::create(&reference)
        .unwrap()
        .set_len(cap)
        .unwrap();
    let disk = VirtualDisk::open(&fs, "vm/thin.vmdk", &DiskOptions::default()).unwrap();
    apply(&disk, &reference, &pattern(7, 200, cap));
    disk.close().unwrap();
    copy_out(&fs, &["vm/thin.vmdk", "vm/thin-flat.vmdk"], &out);
    let top = out.join("thin.vmdk");
    let (ok, text) = qemu(&[
        "qemu-img",
        "compare",
        "-f",
        "vmdk",
        "-F",
        "raw",
        top.to_str().unwrap(),
        reference.to_str().unwrap(),
    ]);
    assert!(ok && text.contains("identical"), "{text}");

    // Through a snapshot chain: two deltas, more writes on each.
    let store = FsStore::new(fs.clone(), WriteLock::Exclusive, ReadLock::Shared);
    create_snapshot(&store, "vm/thin.vmdk", "vm/thin-000001.vmdk", 8).unwrap();
    let disk = VirtualDisk::open(&fs, "vm/thin-000001.vmdk", &DiskOptions::default()).unwrap();
    apply(&disk, &reference, &pattern(11, 150, cap));
    disk.close().unwrap();
    create_snapshot(&store, "vm/thin-000001.vmdk", "vm/thin-000002.vmdk", 1).unwrap();
    let disk = VirtualDisk::open(&fs, "vm/thin-000002.vmdk", &DiskOptions::default()).unwrap();
    apply(&disk, &reference, &pattern(13, 150, cap));
    disk.close().unwrap();
    copy_out(
        &fs,
        &[
            "vm/thin.vmdk",
            "vm/thin-flat.vmdk",
            "vm/thin-000001.vmdk",
            "vm/thin-000001-delta.vmdk",
            "vm/thin-000002.vmdk",
            "vm/thin-000002-delta.vmdk",
        ],
        &out,
    );
    let top = out.join("thin-000002.vmdk");
    let (ok, text) = qemu(&["qemu-img", "info", "--backing-chain", top.to_str().unwrap()]);
    assert!(
        ok && text.matches("\nfile format: vmdk").count() == 3,
        "{text}"
    );
    let (ok, text) = qemu(&[
        "qemu-img",
        "compare",
        "-f",
        "vmdk",
        "-F",
        "raw",
        top.to_str().unwrap(),
        reference.to_str().unwrap(),
    ]);
    assert!(ok && text.contains("identical"), "{text}");
    leave(fs);

    // The CLI's clone reads through the chain: qemu agrees it is the same.
    vmfs(&[
        "disk",
        "clone",
        &img,
        "vm/thin-000002.vmdk",
        "vm2/clone.vmdk",
        "--type",
        "zeroedthick",
    ]);
    let fs = mount(&img);
    copy_out(&fs, &["vm2/clone.vmdk", "vm2/clone-flat.vmdk"], &out);
    let (ok, text) = qemu(&[
        "qemu-img",
        "compare",
        "-f",
        "vmdk",
        "-F",
        "raw",
        out.join("clone.vmdk").to_str().unwrap(),
        reference.to_str().unwrap(),
    ]);
    assert!(ok && text.contains("identical"), "{text}");
    leave(fs);
}

#[test]
fn qcow2_converted_by_qemu_imports_into_a_disk_on_the_volume() {
    if !have("qemu-img") || !have("qemu-io") {
        println!("SKIP: qemu-img/qemu-io not installed (Debian qemu-utils)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let q = p("src.qcow2");
    assert!(qemu(&["qemu-img", "create", "-f", "qcow2", &q, "32M"]).0);
    for (pat, off, len) in [
        ("0x5a", "0", "1M"),
        ("0xa5", "7M", "300k"),
        ("0x11", "31M", "1M"),
    ] {
        let (ok, text) = qemu(&[
            "qemu-io",
            "-f",
            "qcow2",
            "-c",
            &format!("write -P {pat} {off} {len}"),
            &q,
        ]);
        assert!(ok, "{text}");
    }
    // qemu-img converts to raw; the raw image is imported through VirtualDisk.
    let raw = p("src.raw");
    assert!(qemu(&["qemu-img", "convert", "-f", "qcow2", "-O", "raw", &q, &raw]).0);
    let img = p("vol.img");
    vmfs(&[
        "mkfs",
        &img,
        "--label",
        "q",
        "--size",
        "1G",
        "--max-hosts",
        "8",
        "--journal-size",
        "4M",
    ]);
    vmfs(&["disk", "create", &img, "vm/imported.vmdk", "--size", "32M"]);
    let fs = mount(&img);
    let disk = VirtualDisk::open(&fs, "vm/imported.vmdk", &DiskOptions::default()).unwrap();
    let data = std::fs::read(&raw).unwrap();
    for (i, c) in data.chunks(MIB as usize).enumerate() {
        if c.iter().any(|&b| b != 0) {
            disk.write(i as u64 * MIB, c.to_vec()).wait().unwrap();
        }
    }
    disk.flush().wait().unwrap();
    disk.close().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    copy_out(&fs, &["vm/imported.vmdk", "vm/imported-flat.vmdk"], &out);
    leave(fs);
    let (ok, text) = qemu(&[
        "qemu-img",
        "compare",
        &q,
        out.join("imported.vmdk").to_str().unwrap(),
    ]);
    assert!(ok && text.contains("identical"), "{text}");
}

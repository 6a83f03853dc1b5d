//! A real VMM and a real guest driver: QEMU boots a Linux kernel whose
//! virtio-blk driver talks to the daemon through `vhost-user-blk-pci`. The
//! guest (busybox init) reads, copies with O_DIRECT and fsync, and discards;
//! the host checks the backing file afterwards.
//!
//! Needs qemu-system-x86_64, a kernel in /boot with its virtio modules, and a
//! static busybox (Debian: qemu-system-x86, linux-image-cloud-amd64,
//! busybox-static); prints "SKIP: …" when any is missing.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{pattern, Daemon};
use md5::{Digest, Md5};
use vmfs_vhost_blk::{FileBackend, ServeOptions};

const MIB: usize = 1 << 20;
const MODULES: [&str; 6] = [
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/block/virtio_blk.ko",
];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
    insmod /modules/$m.ko || echo "INSMOD-FAILED $m"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
echo "SIZE $(blockdev --getsize64 /dev/vda)"
echo "SERIAL $(cat /sys/block/vda/serial)"
echo "QUEUES $(ls /sys/block/vda/mq | wc -l)"
echo "DISCARD $(cat /sys/block/vda/queue/discard_max_bytes)"
echo "READ $(dd if=/dev/vda bs=1M count=4 iflag=direct 2>/dev/null | md5sum)"
dd if=/dev/vda of=/dev/vda bs=64K count=64 seek=128 iflag=direct oflag=direct conv=fsync 2>/dev/null && echo COPIED
blkdiscard -o 16777216 -l 4194304 /dev/vda && echo DISCARDED
sync
echo "READ2 $(dd if=/dev/vda bs=1M skip=8 count=4 iflag=direct 2>/dev/null | md5sum)"
echo GUEST-DONE
poweroff -f
"#;

fn skip(why: &str) {
    println!("SKIP: {why}");
}

fn find_kernel() -> Option<(PathBuf, PathBuf)> {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort();
    for k in kernels.into_iter().rev() {
        let version = k
            .file_name()?
            .to_string_lossy()
            .trim_start_matches("vmlinuz-")
            .to_string();
        let modules = PathBuf::from("/lib/modules").join(&version).join("kernel");
        if MODULES.iter().all(|m| modules.join(m).is_file()) {
            return Some((k, modules));
        }
    }
    None
}

/// An initramfs in the cpio "newc" format: directories, then files.
fn initramfs(files: &[(String, u32, Vec<u8>)]) -> Vec<u8> {
    fn entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
        let fields = [
            ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    let mut ino = 1;
    for dir in ["bin", "dev", "proc", "sys", "modules"] {
        entry(&mut out, ino, dir, 0o040755, &[]);
        ino += 1;
    }
    for (name, mode, data) in files {
        entry(&mut out, ino, name, *mode, data);
        ino += 1;
    }
    entry(&mut out, 0, "TRAILER!!!", 0, &[]);
    out
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn linux_guest_in_qemu_uses_the_disk() {
    let Some(qemu) = [
        "/usr/bin/qemu-system-x86_64",
        "/usr/local/bin/qemu-system-x86_64",
    ]
    .iter()
    .map(Path::new)
    .find(|p| p.is_file()) else {
        return skip("qemu-system-x86_64 not installed (Debian package qemu-system-x86)");
    };
    let Some((kernel, modules)) = find_kernel() else {
        return skip(
            "no /boot/vmlinuz-* with virtio_blk modules (Debian package linux-image-cloud-amd64)",
        );
    };
    let busybox = Path::new("/bin/busybox");
    let static_busybox = Command::new("ldd")
        .arg(busybox)
        .output()
        .map(|o| {
            !o.status.success() || String::from_utf8_lossy(&o.stdout).contains("not a dynamic")
        })
        .unwrap_or(false);
    if !busybox.is_file() || !static_busybox {
        return skip("no static /bin/busybox (Debian package busybox-static)");
    }

    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![
        ("init".to_string(), 0o100755, INIT.as_bytes().to_vec()),
        (
            "bin/busybox".to_string(),
            0o100755,
            std::fs::read(busybox).unwrap(),
        ),
    ];
    for m in MODULES {
        let name = Path::new(m)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        files.push((
            format!("modules/{name}"),
            0o100644,
            std::fs::read(modules.join(m)).unwrap(),
        ));
    }
    let initrd = dir.path().join("initrd.cpio");
    std::fs::write(&initrd, initramfs(&files)).unwrap();

    // 32 MiB disk: a pattern in [0, 4 MiB) and [16, 20 MiB), zeros elsewhere.
    let img = dir.path().join("disk.img");
    let mut disk = vec![0u8; 32 * MIB];
    disk[..4 * MIB].copy_from_slice(&pattern(0, 4 * MIB, 1));
    disk[16 * MIB..20 * MIB].copy_from_slice(&pattern(16 * MIB as u64, 4 * MIB, 2));
    std::fs::write(&img, &disk).unwrap();
    let backend = Arc::new(FileBackend::open(&img, false).unwrap());
    let opts = ServeOptions {
        num_queues: 2,
        serial: "vmfs-qemu-guest".into(),
        ..ServeOptions::default()
    };
    let daemon = Daemon::start(backend, opts);

    let mut cmd = Command::new(qemu);
    cmd.args([
        "-machine",
        "q35",
        "-m",
        "256",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-nodefaults",
    ])
    // TCG, not KVM: nested KVM on the CI machines hangs this kernel
    // early, and emulation boots it in seconds anyway.
    .args(["-accel", "tcg", "-cpu", "max"])
    .arg("-kernel")
    .arg(&kernel)
    .arg("-initrd")
    .arg(&initrd)
    .args(["-append", "console=ttyS0 panic=-1 quiet"])
    .args(["-serial", "stdio"])
    .args([
        "-object",
        "memory-backend-memfd,id=mem,size=256M,share=on",
        "-numa",
        "node,memdev=mem",
    ])
    .arg("-chardev")
    .arg(format!("socket,id=disk0,path={}", daemon.socket.display()))
    .args(["-device", "vhost-user-blk-pci,chardev=disk0,num-queues=2"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("qemu starts");
    let limit = Duration::from_secs(180);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let log = format!("--- guest console ---\n{out}\n--- qemu stderr ---\n{err}");
    assert!(
        status.is_some(),
        "guest did not finish within {limit:?}\n{log}"
    );
    let line = |key: &str| -> String {
        // Console escape sequences may precede the text on a line.
        let tag = format!("{key} ");
        out.lines()
            .find_map(|l| l.find(&tag).map(|i| l[i + tag.len()..].trim().to_string()))
            .unwrap_or_else(|| panic!("guest printed no {key} line\n{log}"))
    };
    assert!(
        out.contains("GUEST-DONE"),
        "guest script ran to the end\n{log}"
    );
    assert!(!out.contains("INSMOD-FAILED"), "{log}");
    assert_eq!(
        line("SIZE"),
        (32 * MIB).to_string(),
        "capacity seen by Linux"
    );
    assert_eq!(line("SERIAL"), "vmfs-qemu-guest");
    assert_eq!(line("QUEUES"), "2", "Linux uses both queues");
    assert_ne!(line("DISCARD"), "0", "discard advertised");
    let want = md5_hex(&disk[..4 * MIB]);
    assert!(
        line("READ").starts_with(&want),
        "guest read the pattern\n{log}"
    );
    assert!(out.contains("COPIED") && out.contains("DISCARDED"), "{log}");
    assert!(
        line("READ2").starts_with(&want),
        "guest reads its copy back\n{log}"
    );
    daemon.stop().unwrap();

    let after = std::fs::read(&img).unwrap();
    assert!(
        after[8 * MIB..12 * MIB] == disk[..4 * MIB],
        "copy landed at 8 MiB in the file"
    );
    assert!(after[..4 * MIB] == disk[..4 * MIB], "source intact");
    assert!(
        after[16 * MIB..20 * MIB].iter().all(|&b| b == 0),
        "discarded range reads zeros"
    );
    assert!(after[20 * MIB..].iter().all(|&b| b == 0));
}

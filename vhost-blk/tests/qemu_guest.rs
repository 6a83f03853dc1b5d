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

/// Guest boot: load the virtio modules, wait for /dev/vda, then run the
/// test's script (appended) and power off.
const INIT_PROLOGUE: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
    insmod /modules/$m.ko || echo "INSMOD-FAILED $m"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
"#;

const RW_SCRIPT: &str = r#"echo "SIZE $(blockdev --getsize64 /dev/vda)"
echo "SERIAL $(cat /sys/block/vda/serial)"
echo "QUEUES $(ls /sys/block/vda/mq | wc -l)"
echo "DISCARD $(cat /sys/block/vda/queue/discard_max_bytes)"
echo "READ $(dd if=/dev/vda bs=1M count=4 iflag=direct 2>/dev/null | md5sum)"
dd if=/dev/vda of=/dev/vda bs=64K count=64 seek=128 iflag=direct oflag=direct conv=fsync 2>/dev/null && echo COPIED
blkdiscard -o 16777216 -l 4194304 /dev/vda && echo DISCARDED
sync
echo "READ2 $(dd if=/dev/vda bs=1M skip=8 count=4 iflag=direct 2>/dev/null | md5sum)"
"#;

const INIT_EPILOGUE: &str = "echo GUEST-DONE\npoweroff -f\n";

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

/// What a guest boot needs from the host, or why the test is skipped.
struct GuestKit {
    qemu: PathBuf,
    kernel: PathBuf,
    modules: PathBuf,
    busybox: PathBuf,
}

impl GuestKit {
    fn find() -> Result<GuestKit, &'static str> {
        let qemu = [
            "/usr/bin/qemu-system-x86_64",
            "/usr/local/bin/qemu-system-x86_64",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("qemu-system-x86_64 not installed (Debian package qemu-system-x86)")?;
        let (kernel, modules) = find_kernel().ok_or(
            "no /boot/vmlinuz-* with virtio_blk modules (Debian package linux-image-cloud-amd64)",
        )?;
        let busybox = PathBuf::from("/bin/busybox");
        let is_static = Command::new("ldd")
            .arg(&busybox)
            .output()
            .map(|o| {
                !o.status.success() || String::from_utf8_lossy(&o.stdout).contains("not a dynamic")
            })
            .unwrap_or(false);
        if !busybox.is_file() || !is_static {
            return Err("no static /bin/busybox (Debian package busybox-static)");
        }
        Ok(GuestKit {
            qemu,
            kernel,
            modules,
            busybox,
        })
    }

    /// Boot a guest whose vda is the daemon's disk on `socket` with
    /// `queues` queues, run `script`, return its console output once it has
    /// powered off (panics with the console log on timeout).
    fn run(&self, dir: &Path, socket: &Path, queues: u16, script: &str) -> String {
        let init = format!("{INIT_PROLOGUE}{script}{INIT_EPILOGUE}");
        let mut files = vec![
            ("init".to_string(), 0o100755, init.into_bytes()),
            (
                "bin/busybox".to_string(),
                0o100755,
                std::fs::read(&self.busybox).unwrap(),
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
                std::fs::read(self.modules.join(m)).unwrap(),
            ));
        }
        let initrd = dir.join("initrd.cpio");
        std::fs::write(&initrd, initramfs(&files)).unwrap();
        let mut child = Command::new(&self.qemu)
            .args([
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
            .arg(&self.kernel)
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
            .arg(format!("socket,id=disk0,path={}", socket.display()))
            .arg("-device")
            .arg(format!(
                "vhost-user-blk-pci,chardev=disk0,num-queues={queues}"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu starts");
        let limit = Duration::from_secs(180);
        let start = Instant::now();
        let finished = loop {
            if child.try_wait().unwrap().is_some() {
                break true;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break false;
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
        assert!(finished, "guest did not finish within {limit:?}\n{log}");
        assert!(
            out.contains("GUEST-DONE"),
            "guest script ran to the end\n{log}"
        );
        assert!(!out.contains("INSMOD-FAILED"), "{log}");
        log
    }
}

/// The value the guest printed after `key ` (console escape sequences may
/// precede the text on a line).
fn value(log: &str, key: &str) -> String {
    let tag = format!("{key} ");
    log.lines()
        .find_map(|l| l.find(&tag).map(|i| l[i + tag.len()..].trim().to_string()))
        .unwrap_or_else(|| panic!("guest printed no {key} line\n{log}"))
}

fn disk_image(dir: &Path) -> (PathBuf, Vec<u8>) {
    // 32 MiB: a pattern in [0, 4 MiB) and [16, 20 MiB), zeros elsewhere.
    let img = dir.join("disk.img");
    let mut disk = vec![0u8; 32 * MIB];
    disk[..4 * MIB].copy_from_slice(&pattern(0, 4 * MIB, 1));
    disk[16 * MIB..20 * MIB].copy_from_slice(&pattern(16 * MIB as u64, 4 * MIB, 2));
    std::fs::write(&img, &disk).unwrap();
    (img, disk)
}

#[test]
fn linux_guest_in_qemu_uses_the_disk() {
    let kit = match GuestKit::find() {
        Ok(k) => k,
        Err(why) => return skip(why),
    };
    let dir = tempfile::tempdir().unwrap();
    let (img, disk) = disk_image(dir.path());
    let opts = ServeOptions {
        num_queues: 2,
        serial: "vmfs-qemu-guest".into(),
        ..ServeOptions::default()
    };
    let daemon = Daemon::start(Arc::new(FileBackend::open(&img, false).unwrap()), opts);
    let log = kit.run(dir.path(), &daemon.socket, 2, RW_SCRIPT);
    assert_eq!(
        value(&log, "SIZE"),
        (32 * MIB).to_string(),
        "capacity seen by Linux"
    );
    assert_eq!(value(&log, "SERIAL"), "vmfs-qemu-guest");
    assert_eq!(value(&log, "QUEUES"), "2", "Linux uses both queues");
    assert_ne!(value(&log, "DISCARD"), "0", "discard advertised");
    let want = md5_hex(&disk[..4 * MIB]);
    assert!(
        value(&log, "READ").starts_with(&want),
        "guest read the pattern\n{log}"
    );
    assert!(log.contains("COPIED") && log.contains("DISCARDED"), "{log}");
    assert!(
        value(&log, "READ2").starts_with(&want),
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

const RO_SCRIPT: &str = r#"echo "RO $(cat /sys/block/vda/ro)"
echo "READ $(dd if=/dev/vda bs=1M count=4 iflag=direct 2>/dev/null | md5sum)"
if dd if=/dev/zero of=/dev/vda bs=4K count=1 oflag=direct 2>/dev/null; then echo WRITE-OK; else echo WRITE-REFUSED; fi
blkdiscard -o 16777216 -l 4194304 /dev/vda 2>/dev/null && echo DISCARD-OK
sync
"#;

#[test]
fn linux_guest_sees_a_read_only_disk() {
    let kit = match GuestKit::find() {
        Ok(k) => k,
        Err(why) => return skip(why),
    };
    let dir = tempfile::tempdir().unwrap();
    let (img, disk) = disk_image(dir.path());
    let opts = ServeOptions {
        read_only: true,
        ..ServeOptions::default()
    };
    let daemon = Daemon::start(Arc::new(FileBackend::open(&img, false).unwrap()), opts);
    let log = kit.run(dir.path(), &daemon.socket, 1, RO_SCRIPT);
    assert_eq!(value(&log, "RO"), "1", "Linux marks the disk read-only");
    assert!(
        value(&log, "READ").starts_with(&md5_hex(&disk[..4 * MIB])),
        "{log}"
    );
    assert!(
        log.contains("WRITE-REFUSED") && !log.contains("DISCARD-OK"),
        "{log}"
    );
    daemon.stop().unwrap();
    assert!(
        std::fs::read(&img).unwrap() == disk,
        "read-only disk unchanged"
    );
}

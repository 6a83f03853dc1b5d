//! A volume with files for the fsck tests, sparse image copies, and
//! running the binaries with a time limit.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmfs::cluster::{Host, HostConfig, Timeouts};
use vmfs::dev::{FileDev, FileDevOptions, SharedDev};
use vmfs::fs::Fs;
use vmfs::volume::{mkfs, MkfsOptions, Volume};

pub const IMAGE_SIZE: u64 = 192 << 20;

pub fn timeouts() -> Timeouts {
    Timeouts::scaled(1.0 / 30.0)
}

pub fn open(path: &Path) -> SharedDev {
    Arc::new(FileDev::open(path, FileDevOptions::default()).expect("open image"))
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn mount(path: &Path) -> Fs {
    let vol = Volume::open(open(path)).expect("volume");
    let mut cfg = HostConfig::new("fsck-test");
    cfg.timeouts = Some(timeouts());
    cfg.join_timeout = Duration::from_secs(20);
    let h = Host::join(vol, cfg).expect("join");
    h.start();
    Fs::mount(h).expect("mount")
}

pub fn unmount(fs: Fs) {
    fs.unmount().expect("unmount");
    let h = fs.host().clone();
    drop(fs);
    h.leave().expect("leave");
}

/// Path -> contents of every regular file written.
pub type Contents = BTreeMap<String, Vec<u8>>;

/// Format `path` and fill it: files with data at the root and two levels
/// down, an inline symlink, a sparse file with an indirect block.
pub fn build(path: &Path) -> Contents {
    let dev: SharedDev = Arc::new(
        FileDev::open(
            path,
            FileDevOptions {
                create_size: Some(IMAGE_SIZE),
                ..Default::default()
            },
        )
        .expect("create image"),
    );
    mkfs(
        &dev,
        &MkfsOptions {
            label: "fsck".into(),
            max_hosts: 4,
            journal_size: 1 << 20,
            inodes: Some(256),
            timeouts: timeouts().to_minimums(),
            ..Default::default()
        },
        false,
    )
    .expect("mkfs");
    drop(dev);
    let fs = mount(path);
    let mut out = Contents::new();
    let root = fs.root();
    let mut put = |fs: &Fs, dir: u64, prefix: &str, name: &str, data: Vec<u8>| {
        let a = fs
            .create(dir, name.as_bytes(), 0o644, 0, 0)
            .expect("create");
        let fh = fs.open(a.ino, true).expect("open");
        fs.write(fh, 0, &data).expect("write");
        fs.close(fh).expect("close");
        out.insert(format!("{prefix}/{name}"), data);
    };
    for (i, len) in [300_000usize, 1_500_000, 2_200_000, 70_000]
        .into_iter()
        .enumerate()
    {
        put(&fs, root, "", &format!("a{i}"), pattern(i as u64 + 1, len));
    }
    let d1 = fs.mkdir(root, b"d1", 0o755, 0, 0).expect("mkdir").ino;
    for i in 0..3 {
        put(
            &fs,
            d1,
            "/d1",
            &format!("b{i}"),
            pattern(100 + i, 120_000 + i as usize * 1000),
        );
    }
    let sub = fs.mkdir(d1, b"sub", 0o755, 0, 0).expect("mkdir").ino;
    put(&fs, sub, "/d1/sub", "c0", pattern(200, 1_100_000));
    fs.symlink(root, b"link", b"a0", 0, 0).expect("symlink");
    vm_disks(&fs);
    let s = fs.create(root, b"sparse", 0o644, 0, 0).expect("create");
    let fh = fs.open(s.ino, true).expect("open");
    fs.write(fh, 70 << 20, b"far away").expect("write");
    fs.close(fh).expect("close");
    unmount(fs);
    out
}

/// A VM directory with real VMDK disks: a thin flat base with data, a COWD
/// snapshot over it with data, and a zeroedthick data disk.
pub fn vm_disks(fs: &Fs) {
    use vmfs::disk::{FsStore, ReadLock, WriteLock};
    use vmfs::vmdk::{create_flat_disk, create_snapshot, DiskChain, FlatDiskOptions, Provisioning};
    let store = FsStore::new(fs.clone(), WriteLock::Exclusive, ReadLock::Follow);
    store.mkdir_p("vm1").expect("mkdir vm1");
    let write = |disk: &str, seed: u64| {
        let mut c = DiskChain::open(Arc::new(store.clone()), disk, true).expect("open disk");
        for (k, off) in [0u64, 12_800, 5 << 20, (32 << 20) - 4096]
            .into_iter()
            .enumerate()
        {
            c.write_at(off, &pattern(seed + k as u64, 4096))
                .expect("write disk");
        }
        c.flush().expect("flush disk");
    };
    create_flat_disk(
        &store,
        "vm1/vm1.vmdk",
        32 << 20,
        &FlatDiskOptions::default(),
    )
    .expect("create disk");
    write("vm1/vm1.vmdk", 300);
    create_snapshot(&store, "vm1/vm1.vmdk", "vm1/vm1-000001.vmdk", 8).expect("snapshot");
    write("vm1/vm1-000001.vmdk", 400);
    let thick = FlatDiskOptions {
        provisioning: Provisioning::ZeroedThick,
        ..Default::default()
    };
    create_flat_disk(&store, "vm1/vm1_1.vmdk", 4 << 20, &thick).expect("create thick disk");
}

/// Contents of `path` on a mounted fs, or why not.
pub fn read_file(fs: &Fs, path: &str) -> Result<Vec<u8>, String> {
    let mut ino = fs.root();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs
            .lookup(ino, part.as_bytes())
            .map_err(|e| e.to_string())?
            .ino;
    }
    let size = fs.getattr(ino).map_err(|e| e.to_string())?.size;
    let fh = fs.open(ino, false).map_err(|e| e.to_string())?;
    let d = fs.read(fh, 0, size as usize).map_err(|e| e.to_string());
    fs.close(fh).map_err(|e| e.to_string())?;
    d
}

/// Copy an image keeping it sparse.
pub fn copy_sparse(from: &Path, to: &Path) {
    let mut src = std::fs::File::open(from).expect("open source");
    let len = src.metadata().expect("meta").len();
    let mut dst = std::fs::File::create(to).expect("create copy");
    dst.set_len(len).expect("size copy");
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < len {
        let n = buf.len().min((len - off) as usize);
        src.read_exact(&mut buf[..n]).expect("read");
        if buf[..n].iter().any(|&b| b != 0) {
            dst.seek(SeekFrom::Start(off)).expect("seek");
            dst.write_all(&buf[..n]).expect("write");
        }
        off += n as u64;
    }
}

/// What a binary run printed and how it ended.
pub struct RunOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Run `bin args…` and kill it after `limit` (a hang fails the test).
/// The codes a `--json` run reported.
pub fn codes(out: &RunOut) -> Vec<String> {
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    j["codes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn run(bin: &str, args: &[&str], limit: Duration) -> RunOut {
    let t = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let ro = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let re = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{bin} {args:?} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    RunOut {
        code: status.code().unwrap_or(-1),
        stdout: ro.join().unwrap_or_default(),
        stderr: re.join().unwrap_or_default(),
        elapsed: t.elapsed(),
    }
}

pub fn fsck_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmfs-fsck")
}

pub fn wreck_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmfs-wreck")
}

pub fn case_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.img"))
}

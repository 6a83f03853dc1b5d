//! Cross-path coherence: the NFS gateway (in this process, through
//! `nfs_gw::serve_vmfs`, itself a vmfs host) and a `vmfs mount` FUSE process
//! (another host) on one image. A file written over NFS (`nfs-cp`) is read
//! byte-identical through FUSE, and a file written through FUSE is read
//! byte-identical over NFS — also after overwrites in place each way.
//!
//! The coherence rule (docs/nfs.md): another host sees what the gateway has
//! made durable — a FILE_SYNC/DATA_SYNC write, a COMMIT, or the idle close
//! of its handle — and a FUSE reader sees it on its next open once its
//! attribute cache (1 s) has expired. The gateway sees a FUSE writer's data
//! once that writer has fsynced or closed. A writer on either side excludes
//! a writer on the other (EBUSY through FUSE, NFS3ERR_ACCES over NFS).

mod fuse_util;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fuse_util::{check_image, make_image, mount};
use vmfs::cluster::{Host, HostConfig};
use vmfs::fs::Fs;
use vmfs::volume::Volume;

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Whether FUSE can be used here; prints `SKIP: …` when not.
fn fuse_usable() -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => true,
        Err(e) => {
            println!("SKIP: nfs_fuse_coherence: /dev/fuse unusable ({e})");
            eprintln!("SKIP: nfs_fuse_coherence: /dev/fuse unusable ({e})");
            false
        }
    }
}

fn nfs_tool(name: &str, args: &[&str]) -> Vec<u8> {
    let path = Path::new("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{name} not found: install libnfs-utils (scripts/test-all.sh does)"
    );
    let out = Command::new("timeout")
        .arg("120")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Retries `f` until it returns Some, for up to 10 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn nfs_and_fuse_hosts_see_each_others_writes() {
    if !fuse_usable() {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 1 << 30);

    // The gateway host, in process.
    let dev = std::sync::Arc::new(
        vmfs::dev::FileDev::open(&img, vmfs::dev::FileDevOptions::default()).unwrap(),
    );
    let host = Host::join(Volume::open(dev).unwrap(), HostConfig::new("nfs-gw")).unwrap();
    host.start();
    let fs = Fs::mount(host.clone()).unwrap();
    let gw = nfs_gw::serve_vmfs(
        fs.clone(),
        nfs_gw::VmfsServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            export: nfs_gw::ExportOptions {
                root_squash: false,
                ..Default::default()
            },
            idle_close: Duration::from_millis(300),
            rpcbind: false,
        },
    )
    .unwrap();
    assert_eq!(gw.export_path(), "/fusetest");
    let port = gw.local_addr().port();
    let url = |p: &str| format!("nfs://127.0.0.1/fusetest{p}?nfsport={port}&mountport={port}");

    // The FUSE host, another process.
    let m = mount(&img, &dir.path().join("mnt"), "fuse-host");
    let mp = m.mountpoint.clone();

    // 1. NFS -> FUSE.
    let a = pattern(8 << 20, 1);
    let src = dir.path().join("a.src");
    std::fs::write(&src, &a).unwrap();
    nfs_tool("nfs-cp", &[src.to_str().unwrap(), &url("/from-nfs.bin")]);
    let fa = mp.join("from-nfs.bin");
    eventually("the NFS-written file has its size through FUSE", || {
        (std::fs::metadata(&fa).ok()?.len() == a.len() as u64).then_some(())
    });
    assert!(
        std::fs::read(&fa).unwrap() == a,
        "FUSE read differs from what NFS wrote"
    );

    // 2. FUSE -> NFS.
    let b = pattern(5 * (1 << 20) + 4321, 2);
    let fb = mp.join("from-fuse.bin");
    {
        let mut f = std::fs::File::create(&fb).unwrap();
        f.write_all(&b).unwrap();
        f.sync_all().unwrap();
    }
    let back = dir.path().join("b.back");
    nfs_tool("nfs-cp", &[&url("/from-fuse.bin"), back.to_str().unwrap()]);
    assert!(
        std::fs::read(&back).unwrap() == b,
        "NFS read differs from what FUSE wrote"
    );

    // 3. Overwrite in place through FUSE the file NFS wrote: FUSE can open
    // it for write once the gateway's idle handle is closed.
    let patch = pattern(100_000, 3);
    let mut f = eventually("FUSE opens the NFS-written file for write", || {
        std::fs::OpenOptions::new().write(true).open(&fa).ok()
    });
    f.seek(SeekFrom::Start(3_000_000)).unwrap();
    f.write_all(&patch).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut a2 = a.clone();
    a2[3_000_000..3_100_000].copy_from_slice(&patch);
    let got = dir.path().join("a2.back");
    nfs_tool("nfs-cp", &[&url("/from-nfs.bin"), got.to_str().unwrap()]);
    assert!(
        std::fs::read(&got).unwrap() == a2,
        "NFS read misses the FUSE overwrite"
    );

    // 4. A new NFS upload, read through FUSE, then renamed by FUSE over the
    // file FUSE wrote (once the gateway's read handle on it has been
    // closed): NFS sees the new name space and content.
    let c = pattern(2 << 20, 4);
    let csrc = dir.path().join("c.src");
    std::fs::write(&csrc, &c).unwrap();
    nfs_tool("nfs-cp", &[csrc.to_str().unwrap(), &url("/c.bin")]);
    let fc = mp.join("c.bin");
    eventually("the second NFS file is complete through FUSE", || {
        (std::fs::metadata(&fc).ok()?.len() == c.len() as u64).then_some(())
    });
    assert!(std::fs::read(&fc).unwrap() == c);
    eventually("FUSE renames over the file the gateway read", || {
        std::fs::rename(&fc, &fb).ok()
    });
    let got = dir.path().join("c.back");
    nfs_tool("nfs-cp", &[&url("/from-fuse.bin"), got.to_str().unwrap()]);
    assert!(
        std::fs::read(&got).unwrap() == c,
        "NFS read misses the FUSE rename"
    );
    let listing = String::from_utf8(nfs_tool("nfs-ls", &[&url("")])).unwrap();
    assert!(
        listing.contains("from-nfs.bin") && listing.contains("from-fuse.bin"),
        "{listing}"
    );
    assert!(!listing.contains("c.bin"), "{listing}");

    let (st, out) = m.stop();
    assert!(st.success(), "vmfs mount: {out}");
    gw.shutdown().unwrap();
    fs.unmount().unwrap();
    drop(fs);
    host.leave().unwrap();
    check_image(&img);
}

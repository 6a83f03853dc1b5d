//! The libnfs tools (`nfs-cp`, `nfs-ls`, `nfs-cat`) against `nfs-gw DEVICE`
//! on a fresh vmfs image: random files copied in and out verify by
//! checksum (and read identically by another vmfs host), two clients at
//! once, and a TOML config exporting a datastore and a directory.
//! The 1 GiB copy runs only with `NFS_GW_BIG=1`.

mod common;

use common::vmfs::{make_image, OtherHost, VmfsGateway};
use common::{checksum_file, run_ok, run_tool, write_random_file, Fnv};
use std::path::Path;

fn fnv(b: &[u8]) -> u64 {
    let mut f = Fnv::new();
    f.update(b);
    f.finish()
}

fn round_trip(gw: &VmfsGateway, scratch: &Path, len: u64, seed: u64, name: &str) -> u64 {
    let src = scratch.join(format!("{name}.src"));
    let sum = write_random_file(&src, len, seed);
    let url = gw.url(&format!("/{name}"));
    run_ok("nfs-cp", &[src.to_str().unwrap(), &url]);
    let back = scratch.join(format!("{name}.back"));
    run_ok("nfs-cp", &[&url, back.to_str().unwrap()]);
    assert_eq!(checksum_file(&back), sum, "download of {name} differs");
    std::fs::remove_file(&src).unwrap();
    std::fs::remove_file(&back).unwrap();
    sum
}

fn copy_and_verify(size: u64, len: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let img = make_image(tmp.path(), size, "datastore1");
    let gw = VmfsGateway::start(&img, "datastore1", &[]);
    let t = std::time::Instant::now();
    let sum = round_trip(&gw, tmp.path(), len, 1, "big.bin");
    eprintln!(
        "{} MiB up+down through nfs-cp: {:?}",
        len >> 20,
        t.elapsed()
    );
    // nfs-cp creates GUARDED: an existing file is not clobbered.
    let other_src = tmp.path().join("other");
    std::fs::write(&other_src, b"other").unwrap();
    let out = run_tool(
        "nfs-cp",
        &[other_src.to_str().unwrap(), &gw.url("/big.bin")],
    );
    assert!(!out.status.success(), "nfs-cp clobbered an existing file");
    let odd = round_trip(&gw, tmp.path(), 1_000_003, 4, "odd.bin");
    let empty = round_trip(&gw, tmp.path(), 0, 5, "empty.bin");
    let ls = run_ok("nfs-ls", &[&gw.url("")]);
    for n in ["big.bin", "odd.bin", "empty.bin"] {
        assert!(ls.contains(n), "{ls}");
    }
    std::fs::write(tmp.path().join("hello"), b"hello, vmfs\n").unwrap();
    run_ok(
        "nfs-cp",
        &[
            tmp.path().join("hello").to_str().unwrap(),
            &gw.url("/hello"),
        ],
    );
    assert_eq!(run_ok("nfs-cat", &[&gw.url("/hello")]), "hello, vmfs\n");
    gw.stop();
    // The bytes are in the datastore: another host reads them back.
    let other = OtherHost::join(&img, "reader");
    assert_eq!(fnv(&other.read_all("big.bin")), sum);
    assert_eq!(fnv(&other.read_all("odd.bin")), odd);
    assert_eq!(fnv(&other.read_all("empty.bin")), empty);
    // Blocks preallocated past the end of file while copying in were
    // freed when the gateway closed the files: only whole blocks remain.
    let root = other.fs.root();
    let bs = 1u64 << 20;
    for (name, size) in [("big.bin", len), ("odd.bin", 1_000_003), ("empty.bin", 0)] {
        let a = other.fs.lookup(root, name.as_bytes()).unwrap();
        assert_eq!(a.size, size, "{name}");
        if size <= 64 * bs {
            // Direct blocks only: `allocated` is exactly the data blocks.
            assert_eq!(
                a.allocated,
                size.div_ceil(bs) * bs,
                "{name} kept extra blocks"
            );
        } else {
            assert!(a.allocated < size + (8 << 20), "{name} kept extra blocks");
        }
    }
    other.leave();
}

#[test]
fn cp_in_and_out_64mib_checksummed() {
    copy_and_verify(512 << 20, 64 << 20);
}

#[test]
fn cp_in_and_out_1gib_when_enabled() {
    if std::env::var_os("NFS_GW_BIG").is_none() {
        eprintln!("skipped: set NFS_GW_BIG=1 to copy 1 GiB in and out");
        return;
    }
    copy_and_verify(2 << 30, 1 << 30);
}

#[test]
fn two_clients_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let img = make_image(tmp.path(), 512 << 20, "shared");
    let gw = VmfsGateway::start(&img, "shared", &[]);
    let a = tmp.path().join("a.bin");
    let b = tmp.path().join("b.bin");
    let sa = write_random_file(&a, 16 << 20, 11);
    let sb = write_random_file(&b, 16 << 20, 12);
    let (ua, ub) = (gw.url("/a.bin"), gw.url("/b.bin"));
    std::thread::scope(|s| {
        let ta = s.spawn(|| run_ok("nfs-cp", &[a.to_str().unwrap(), &ua]));
        let tb = s.spawn(|| run_ok("nfs-cp", &[b.to_str().unwrap(), &ub]));
        let tl = s.spawn(|| {
            for _ in 0..5 {
                run_ok("nfs-ls", &[&gw.url("")]);
            }
        });
        ta.join().unwrap();
        tb.join().unwrap();
        tl.join().unwrap();
    });
    let (ra, rb) = (tmp.path().join("ra"), tmp.path().join("rb"));
    std::thread::scope(|s| {
        let ta = s.spawn(|| run_ok("nfs-cp", &[&ua, ra.to_str().unwrap()]));
        let tb = s.spawn(|| run_ok("nfs-cp", &[&ub, rb.to_str().unwrap()]));
        ta.join().unwrap();
        tb.join().unwrap();
    });
    assert_eq!(checksum_file(&ra), sa);
    assert_eq!(checksum_file(&rb), sb);
    gw.stop();
}

#[test]
fn config_exports_a_datastore_and_a_directory() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let img = make_image(tmp.path(), 256 << 20, "ds-conf");
    let dir = tmp.path().join("plain");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("p.txt"), b"plain\n").unwrap();
    let cfg = tmp.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nrpcbind = false\n\n[[export]]\ndevice = {:?}\nhost_id_file = {:?}\nidle_close_ms = 500\nroot_squash = false\n\n[[export]]\nname = \"plain\"\ndir = {:?}\nroot_squash = false\n",
            img.to_str().unwrap(),
            tmp.path().join("gw.id").to_str().unwrap(),
            dir.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nfs-gw"))
        .arg("--config")
        .arg(&cfg)
        .env("NFS_GW_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        lines.push(l.trim().to_string());
    }
    let port: u16 = lines[0].rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(&lines[1..], ["exporting /ds-conf", "exporting /plain"]);
    let url = |e: &str, p: &str| format!("nfs://127.0.0.1/{e}{p}?nfsport={port}&mountport={port}");
    std::fs::write(tmp.path().join("x"), b"to vmfs\n").unwrap();
    run_ok(
        "nfs-cp",
        &[
            tmp.path().join("x").to_str().unwrap(),
            &url("ds-conf", "/x"),
        ],
    );
    assert_eq!(run_ok("nfs-cat", &[&url("ds-conf", "/x")]), "to vmfs\n");
    assert_eq!(run_ok("nfs-cat", &[&url("plain", "/p.txt")]), "plain\n");
    // The identity file was created where configured.
    assert!(tmp.path().join("gw.id").exists());
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    assert!(child.wait().unwrap().success(), "{rest}");
    assert!(rest.contains("left volume 'ds-conf' cleanly"), "{rest}");
}

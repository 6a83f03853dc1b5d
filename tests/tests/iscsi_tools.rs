//! `IscsiDev` against libiscsi's own client on the same LUN: capacity from
//! `iscsi-readcapacity16`, bytes written by `qemu-io` (libiscsi block driver,
//! Debian qemu-block-extra) read back through `IscsiDev`, and bytes written
//! through `IscsiDev` read back by `qemu-img convert` and `qemu-io -P`.

use std::path::Path;
use std::process::Command;

use vmfs::dev::{BlockDev, IscsiDev, IscsiOptions};
use vmfs_tests::net::{serve, IQN};

fn tool(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(name).is_file()))
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

fn opts(read_only: bool) -> IscsiOptions {
    IscsiOptions {
        initiator: "iqn.2024-01.org.vmfs.test:sanity".into(),
        chap: None,
        mutual: None,
        io_timeout: std::time::Duration::from_secs(5),
        require_caw: !read_only,
        read_only,
    }
}

#[test]
fn iscsi_dev_and_libiscsi_tools_agree() {
    if !tool("iscsi-readcapacity16") {
        println!("SKIP: iscsi-readcapacity16 not installed (libiscsi-bin)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("lun.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let target = serve(&image, "127.0.0.1:0");
    let url = target.url("127.0.0.1");
    // Capacity as libiscsi sees it.
    let cap = run(Command::new("iscsi-readcapacity16").arg(&url));
    let total: u64 = cap
        .lines()
        .find_map(|l| l.strip_prefix("Total size:"))
        .expect("Total size line")
        .trim()
        .parse()
        .unwrap();

    {
        let ro = IscsiDev::open(&target.addr.to_string(), IQN, 0, &opts(true)).unwrap();
        assert_eq!(
            ro.size(),
            total,
            "capacity differs from iscsi-readcapacity16"
        );
    }
    if !tool("qemu-io") || !tool("qemu-img") {
        println!("SKIP (data part): qemu-io/qemu-img not installed (qemu-utils)");
        return;
    }
    let probe = Command::new("qemu-io")
        .args(["-f", "raw", "-r", "-c", "read 0 512", &url])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&probe.stderr).contains("Unable to load module iscsi") {
        println!(
            "SKIP (data part): qemu's libiscsi driver is not installed (Debian qemu-block-extra)"
        );
        return;
    }

    // libiscsi writes, IscsiDev reads (read-only: no reservation taken).
    run(Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0xa5 4M 192k", &url]));
    let ro = IscsiDev::open(&target.addr.to_string(), IQN, 0, &opts(true)).unwrap();
    let mut b = vec![0u8; 256 << 10];
    ro.read_at(&mut b, (4 << 20) - (32 << 10)).unwrap();
    assert!(b[..32 << 10].iter().all(|&x| x == 0));
    assert!(b[32 << 10..(224 << 10)].iter().all(|&x| x == 0xa5));
    assert!(b[224 << 10..].iter().all(|&x| x == 0));
    drop(ro);

    // IscsiDev writes (a non-uniform pattern, R2T-sized), libiscsi reads.
    let rw = IscsiDev::open(&target.addr.to_string(), IQN, 0, &opts(false)).unwrap();
    let data: Vec<u8> = (0..(3 << 20) + 512)
        .map(|i: usize| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    rw.write_at(&data, 8 << 20).unwrap();
    rw.write_at(&vec![0x3cu8; 64 << 10], 20 << 20).unwrap();
    rw.flush().unwrap();
    let out =
        run(Command::new("qemu-io").args(["-f", "raw", "-r", "-c", "read -P 0x3c 20M 64k", &url]));
    assert!(!out.contains("verification failed"), "{out}");
    let copy = dir.path().join("copy.raw");
    run(Command::new("qemu-img").args([
        "convert",
        "-f",
        "raw",
        "-O",
        "raw",
        &url,
        copy.to_str().unwrap(),
    ]));
    let all = std::fs::read(&copy).unwrap();
    assert_eq!(all.len() as u64, total);
    assert!(
        all[8 << 20..(8 << 20) + data.len()] == data[..],
        "qemu-img read different bytes than IscsiDev wrote"
    );
    assert!(all[(4 << 20)..(4 << 20) + (192 << 10)]
        .iter()
        .all(|&x| x == 0xa5));
    println!(
        "capacity {total} B agrees; 192 KiB from qemu-io and {} B from IscsiDev verified both ways",
        data.len() + (64 << 10)
    );
}

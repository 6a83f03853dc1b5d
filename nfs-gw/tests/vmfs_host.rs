//! The gateway as a vmfs host: another host's EXCLUSIVE lock refuses NFS
//! writes (NFS3ERR_ACCES, data untouched), the gateway's own write lock is
//! released after the idle period, handles go stale when their inode does
//! and survive restarts (clean and SIGKILL), the write verifier changes per
//! start, FSINFO/FSSTAT tell the truth, and SIGTERM leaves cleanly.

mod common;

use common::client::{Client, Fh, NFS};
use common::vmfs::{make_image, open_volume, slots, OtherHost, VmfsGateway};
use nfs_gw::xdr::{Decoder, Encoder};
use std::time::{Duration, Instant};
use vmfs::format::SlotState;

const ACCES: u32 = 13;
const STALE: u32 = 70;
const UNSTABLE: u32 = 0;
const FILE_SYNC: u32 = 2;

fn root(c: &mut Client, label: &str) -> Fh {
    c.mnt(&format!("/{label}")).expect("mount")
}

/// FSSTAT: (total bytes, free bytes).
fn fsstat(c: &mut Client, fh: &[u8]) -> (u64, u64) {
    let mut e = Encoder::new();
    e.opaque(fh);
    let b = c.call(NFS, 3, 18, e.as_slice()).ok();
    let mut d = Decoder::new(&b);
    assert_eq!(d.u32("status").unwrap(), 0);
    common::client::post_op_attr(&mut d);
    let total = d.u64("tbytes").unwrap();
    let free = d.u64("fbytes").unwrap();
    (total, free)
}

fn all_left_cleanly(img: &std::path::Path) {
    let s = slots(img);
    assert!(
        s.iter().all(|(_, st)| *st == SlotState::CleanExit),
        "slots: {s:?}"
    );
}

const NFS3ERR_JUKEBOX: u32 = 10008;

#[test]
fn another_hosts_exclusive_lock_refuses_nfs_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let img = make_image(tmp.path(), 256 << 20, "ds");
    let gw = VmfsGateway::start(&img, "ds", &["--idle-close-ms", "300"]);
    let mut c = Client::connect(gw.addr());
    let r = root(&mut c, "ds");
    let fh = c.create(&r, b"vm-flat.vmdk", 1).expect("create");
    let a = vec![b'A'; 8192];
    assert_eq!(c.write(&fh, 0, &a, FILE_SYNC).unwrap().0, 8192);

    // The gateway holds the file open for write until it has been idle:
    // the other host gets EBUSY at first, and the file once idle.
    let other = OtherHost::join(&img, "esx-b");
    let ino = other.ino("vm-flat.vmdk");
    let t = Instant::now();
    let mut first_busy = false;
    let ofh = loop {
        match other.fs.open(ino, true) {
            Ok(fh) => break fh,
            Err(e) => {
                assert_eq!(e.errno(), libc::EBUSY, "{e}");
                first_busy |= t.elapsed() < Duration::from_millis(100);
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "the gateway never released its write lock"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert!(
        first_busy,
        "the gateway's write handle was not holding the lock"
    );

    // Now the other host holds it EXCLUSIVE (a running VM's disk).
    for stable in [FILE_SYNC, UNSTABLE] {
        assert_eq!(
            c.write(&fh, 0, &[b'B'; 4096], stable),
            Err(ACCES),
            "write over another host's lock must fail"
        );
    }
    // Reads still work and follow what the other host writes.
    assert_eq!(c.read(&fh, 0, 8192).unwrap().0, a);
    other.fs.write(ofh, 0, &[b'C'; 4096]).unwrap();
    other.fs.fsync(ofh).unwrap();
    let (got, _) = c.read(&fh, 0, 8192).unwrap();
    assert_eq!(&got[..4096], &[b'C'; 4096][..]);
    assert_eq!(&got[4096..], &a[4096..], "the refused write landed");
    // Removing or renaming over the held file is refused too.
    assert_eq!(c.remove(&r, b"vm-flat.vmdk"), ACCES);

    // Once the other host closes, NFS writes go through.
    other.fs.close(ofh).unwrap();
    assert_eq!(c.write(&fh, 0, &[b'D'; 4096], FILE_SYNC).unwrap().0, 4096);
    assert_eq!(&c.read(&fh, 0, 4096).unwrap().0, &[b'D'; 4096]);
    // And the other host sees the NFS write once the gateway let go.
    let t = Instant::now();
    loop {
        match other.fs.open(ino, true) {
            Ok(h) => {
                other.fs.close(h).unwrap();
                break;
            }
            Err(_) if t.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("gateway kept the lock: {e}"),
        }
    }
    let data = other.read_all("vm-flat.vmdk");
    assert_eq!(&data[..4096], &[b'D'; 4096][..]);
    other.leave();
    gw.stop();
    all_left_cleanly(&img);
}

#[test]
fn handles_go_stale_with_their_inode() {
    let tmp = tempfile::tempdir().unwrap();
    let img = make_image(tmp.path(), 256 << 20, "st");
    let gw = VmfsGateway::start(&img, "st", &[]);
    let mut c = Client::connect(gw.addr());
    let r = root(&mut c, "st");
    let f = c.create(&r, b"f", 1).unwrap();
    c.write(&f, 0, b"data", UNSTABLE).unwrap();
    let old_id = c.getattr(&f).unwrap().fileid;
    assert_eq!(c.remove(&r, b"f"), 0);
    assert_eq!(c.getattr(&f), Err(STALE));
    assert_eq!(c.read(&f, 0, 10), Err(STALE));
    assert_eq!(c.write(&f, 0, b"x", FILE_SYNC), Err(STALE));
    // A new file, even on the same inode number, does not revive it.
    let g = c.create(&r, b"g", 1).unwrap();
    let new_id = c.getattr(&g).unwrap().fileid;
    eprintln!("old inode {old_id}, new inode {new_id}");
    assert_eq!(c.getattr(&f), Err(STALE));
    // Directories too; and a stale directory refuses lookups and creates.
    let d = c.mkdir(&r, b"d").unwrap();
    assert_eq!(c.lookup(&r, b"d").unwrap(), d);
    assert_eq!(c.rmdir(&r, b"d"), 0);
    assert_eq!(c.lookup(&d, b"x"), Err(STALE));
    assert_eq!(c.create(&d, b"x", 1), Err(STALE));
    // fileid is the inode number.
    let other = OtherHost::join(&img, "checker");
    assert_eq!(other.ino("g"), new_id);
    other.leave();
    gw.stop();
    all_left_cleanly(&img);
}

#[test]
fn handles_survive_restarts_and_the_verifier_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let img = make_image(tmp.path(), 512 << 20, "rs");
    let gw = VmfsGateway::start(&img, "rs", &[]);
    let mut c = Client::connect(gw.addr());
    let r = root(&mut c, "rs");
    let (rtmax, wtmax, maxsize) = c.fsinfo(&r);
    assert_eq!((rtmax, wtmax), (1 << 20, 1 << 20));
    assert!(maxsize >= 62 << 40, "max file size {maxsize}");
    let d = c.mkdir(&r, b"dir").unwrap();
    let f = c.create(&d, b"file", 1).unwrap();
    let (_, committed, v1) = c.write(&f, 0, b"hello", UNSTABLE).unwrap();
    assert_eq!(
        committed, UNSTABLE,
        "an UNSTABLE write is answered UNSTABLE"
    );
    assert_eq!(c.commit(&f).unwrap(), v1);
    let (_, committed, _) = c.write(&f, 5, b" world", FILE_SYNC).unwrap();
    assert_eq!(committed, FILE_SYNC);

    // Honest free space: FSSTAT matches the volume, a sparse write at
    // 200 MiB costs about one block, 64 MiB of data 64 MiB.
    let (total, free0) = fsstat(&mut c, &r);
    assert!(total > 300 << 20 && free0 <= total, "{total} {free0}");
    let sp = c.create(&r, b"sparse", 1).unwrap();
    c.write(&sp, 200 << 20, b"end", FILE_SYNC).unwrap();
    assert_eq!(c.getattr(&sp).unwrap().size, (200 << 20) + 3);
    let (_, free1) = fsstat(&mut c, &r);
    assert!(
        free0 - free1 <= 2 << 20,
        "sparse write used {}",
        free0 - free1
    );
    let chunk = vec![7u8; 1 << 20];
    for i in 0..64u64 {
        c.write(&sp, i << 20, &chunk, UNSTABLE).unwrap();
    }
    c.commit(&sp).unwrap();
    let (_, free2) = fsstat(&mut c, &r);
    let used = free1 - free2;
    assert!(
        (64 << 20..=66 << 20).contains(&used),
        "64 MiB of writes used {used}"
    );

    gw.stop();
    all_left_cleanly(&img);

    // Clean restart: same handles, new verifier.
    let gw = VmfsGateway::start(&img, "rs", &[]);
    let mut c = Client::connect(gw.addr());
    assert_eq!(c.read(&f, 0, 100).unwrap(), (b"hello world".to_vec(), true));
    assert_eq!(c.lookup(&d, b"file").unwrap(), f);
    let v2 = c.commit(&f).unwrap();
    assert_ne!(v1, v2, "the write verifier must change on restart");
    c.write(&f, 11, b"!", FILE_SYNC).unwrap();

    // After a crash (SIGKILL) the restarted gateway rejoins (its old slot
    // is recovered) and the handles still work.
    gw.kill();
    let gw = VmfsGateway::start(&img, "rs", &[]);
    let mut c = Client::connect(gw.addr());
    assert_eq!(
        c.read(&f, 0, 100).unwrap(),
        (b"hello world!".to_vec(), true)
    );
    assert_ne!(c.commit(&f).unwrap(), v2);
    assert_eq!(c.getattr(&r).unwrap().ftype, 2);
    gw.stop();
    all_left_cleanly(&img);
}

/// Another host rewriting the root directory's inode in place while NFS
/// clients read it: no call may fail (an unlocked read can catch an inode
/// body half-written and must be retried, not reported as an error).
#[test]
fn reads_while_another_host_changes_the_directory() {
    let tmp = common::vmfs::memory_tempdir();
    let img = make_image(tmp.path(), 256 << 20, "busy");
    let gw = VmfsGateway::start(&img, "busy", &[]);
    let other = OtherHost::join(&img, "churner");
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let root = other.fs.root();
            for i in 0..1500 {
                let n = format!("churn-{i}");
                other.fs.create(root, n.as_bytes(), 0o644, 0, 0).unwrap();
                other.fs.unlink(root, n.as_bytes()).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut c = Client::connect(gw.addr());
        let r = root(&mut c, "busy");
        let (mut calls, mut retry) = (0, 0);
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            c.getattr(&r).expect("getattr of the root");
            // A directory that keeps changing under the other host's lock
            // past the wait is "try again" (JUKEBOX, which clients retry),
            // never a refusal or a torn read.
            match c.readdir(&r, 0, [0; 8], 4096, true) {
                Ok(_) => {}
                Err(NFS3ERR_JUKEBOX) => retry += 1,
                Err(e) => panic!("readdir: {e}"),
            }
            calls += 2;
        }
        eprintln!("{calls} calls during the churn, {retry} READDIR answered JUKEBOX");
    });
    other.leave();
    gw.stop();
}

/// Procedure semantics on vmfs: exclusive create and its retransmission,
/// symlinks, hard links, rename over a file, truncate, READ of what is not
/// a regular file, MKNOD, over-long names.
#[test]
fn procedure_semantics_on_vmfs() {
    const EXIST: u32 = 17;
    const ISDIR: u32 = 21;
    const INVAL: u32 = 22;
    const NAMETOOLONG: u32 = 63;
    let tmp = common::vmfs::memory_tempdir();
    let img = make_image(tmp.path(), 256 << 20, "sem");
    let gw = VmfsGateway::start(&img, "sem", &[]);
    let mut c = Client::connect(gw.addr());
    let r = root(&mut c, "sem");
    // EXCLUSIVE create: a retransmission (same verifier) finds its file.
    let x1 = c.create(&r, b"excl", 2).unwrap();
    assert_eq!(c.create(&r, b"excl", 2).unwrap(), x1);
    assert_eq!(c.create(&r, b"excl", 1), Err(EXIST));
    // UNCHECKED create of an existing file opens it.
    assert_eq!(c.create(&r, b"excl", 0).unwrap(), x1);
    // Symlinks.
    let l = c.symlink(&r, b"link", b"target/path").unwrap();
    assert_eq!(c.readlink(&l).unwrap(), b"target/path");
    assert_eq!(c.read(&l, 0, 10), Err(INVAL));
    assert_eq!(c.read(&r, 0, 10), Err(ISDIR));
    // Hard links share the inode; the file lives until the last name goes.
    let f = c.create(&r, b"f", 1).unwrap();
    c.write(&f, 0, b"0123456789", FILE_SYNC).unwrap();
    assert_eq!(c.link(&f, &r, b"f2"), 0);
    assert_eq!(c.getattr(&f).unwrap().nlink, 2);
    assert_eq!(c.lookup(&r, b"f2").unwrap(), f);
    assert_eq!(c.remove(&r, b"f"), 0);
    assert_eq!(c.read(&f, 0, 100).unwrap().0, b"0123456789");
    // Truncate, then rename over another file (whose handle goes stale).
    assert_eq!(c.set_size(&f, 4), 0);
    assert_eq!(c.read(&f, 0, 100).unwrap(), (b"0123".to_vec(), true));
    assert_eq!(c.rename(&r, b"f2", &r, b"excl"), 0);
    assert_eq!(c.getattr(&x1), Err(STALE));
    assert_eq!(c.lookup(&r, b"excl").unwrap(), f);
    // Names.
    assert_eq!(c.create(&r, &[b'n'; 256], 1), Err(NAMETOOLONG));
    let long = vec![b'n'; 255];
    c.create(&r, &long, 1).unwrap();
    // MKNOD (FIFO) is not supported on vmfs.
    let mut e = Encoder::new();
    e.opaque(&r);
    e.string(b"fifo");
    e.u32(7); // NF3FIFO
    for _ in 0..6 {
        e.u32(0); // sattr3: nothing set
    }
    let b = c.call(NFS, 3, 11, e.as_slice()).ok();
    assert_eq!(Decoder::new(&b).u32("status").unwrap(), 10004); // NOTSUPP
    gw.stop();
    let report = vmfs::fs::check::check(&common::vmfs::open_volume(&img, true)).unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
}

/// A gateway SIGKILLed while it holds a file open for write (an NFS client
/// was writing it): its heartbeat stops, and another host takes the file
/// over once the gateway is judged dead — with every FILE_SYNC write there.
#[test]
fn a_killed_gateways_write_lock_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let img = make_image(tmp.path(), 256 << 20, "kill");
    let gw = VmfsGateway::start(&img, "kill", &["--idle-close-ms", "600000"]);
    let mut c = Client::connect(gw.addr());
    let r = root(&mut c, "kill");
    let f = c.create(&r, b"disk.vmdk", 1).unwrap();
    let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        c.write(&f, (i as u64) << 20, chunk, FILE_SYNC).unwrap();
    }
    let other = OtherHost::join(&img, "survivor");
    let ino = other.ino("disk.vmdk");
    let e = other.fs.open(ino, true).unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY, "{e}");
    gw.kill();
    let t = Instant::now();
    let fh = loop {
        match other.fs.open(ino, true) {
            Ok(fh) => break fh,
            Err(e) if e.errno() == libc::EBUSY && t.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("no takeover after {:?}: {e}", t.elapsed()),
        }
    };
    eprintln!("took the file over {:?} after the SIGKILL", t.elapsed());
    other.fs.close(fh).unwrap();
    assert!(
        other.read_all("disk.vmdk") == data,
        "synced NFS writes lost"
    );
    other.leave();
}

#[test]
fn small_files_written_over_nfs_stay_in_small_blocks() {
    let tmp = common::vmfs::memory_tempdir();
    let img = make_image(tmp.path(), 256 << 20, "small");
    let gw = VmfsGateway::start(&img, "small", &[]);
    let mut c = Client::connect(gw.addr());
    let r = root(&mut c, "small");
    let f = c.create(&r, b"f", 1).unwrap();
    let d = vec![0x42u8; 4096];
    c.write(&f, 0, &d, FILE_SYNC).unwrap();
    c.write(&f, 4096, &d, FILE_SYNC).unwrap();
    let a = c.getattr(&f).unwrap();
    // Appending inside the first file block preallocates nothing: one
    // 64 KiB small block, not 32 MiB of file blocks.
    assert_eq!((a.size, a.used), (8192, 64 << 10));
    // Past the first file block: promoted, and appends preallocate again.
    c.write(&f, 1 << 20, &d, FILE_SYNC).unwrap();
    let a = c.getattr(&f).unwrap();
    assert_eq!(a.size, (1 << 20) + 4096);
    assert!(
        a.used >= 2 << 20,
        "promoted to file blocks: {} bytes",
        a.used
    );
    let (got, _) = c.read(&f, 0, 8192).unwrap();
    assert_eq!(got, [d.clone(), d.clone()].concat());
    let (got, _) = c.read(&f, 1 << 20, 4096).unwrap();
    assert_eq!(got, d);
    drop(c);
    gw.stop();
    let report = vmfs::fs::check::check(&open_volume(&img, true)).unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
}

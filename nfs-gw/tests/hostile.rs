//! Hostile input against the running gateway: malformed XDR, oversized
//! counts, bad record marks, bad names, path escapes and foreign handles
//! must produce errors — never a crash, never access outside the export.

mod common;

use common::client::{cred, Client, Reply, MOUNT, NFS};
use common::{run_ok, Gateway};
use nfs_gw::rpc::Credential;
use nfs_gw::xdr::Encoder;
use std::fs;

fn garbage(r: Reply) -> bool {
    matches!(r, Reply::Accepted { stat: 4, .. })
}

/// A gateway whose export sits in a parent directory holding a file the
/// client must never reach.
fn setup() -> (Gateway, tempfile::TempDir) {
    let outer = tempfile::Builder::new()
        .prefix("nfsgw-outer")
        .tempdir()
        .unwrap();
    fs::write(outer.path().join("outside-secret"), b"secret").unwrap();
    let inner = tempfile::Builder::new()
        .prefix("export")
        .tempdir_in(outer.path())
        .unwrap();
    fs::write(inner.path().join("inside"), b"inside").unwrap();
    // Symlinks inside the export pointing out of it.
    std::os::unix::fs::symlink("..", inner.path().join("up")).unwrap();
    std::os::unix::fs::symlink("/etc", inner.path().join("etc")).unwrap();
    let gw = Gateway::start_in(inner, "h", &["--no-root-squash"]);
    (gw, outer)
}

#[test]
fn bad_record_marks_drop_only_that_connection() {
    let (mut gw, _outer) = setup();
    // Fragment length far above the record limit.
    let mut c = Client::connect(gw.addr());
    c.send_raw(&0xffff_ffffu32.to_be_bytes()).unwrap();
    assert!(c.recv_record().is_none(), "oversized record not refused");
    // Many non-last fragments adding up past the limit.
    let mut c = Client::connect(gw.addr());
    let chunk = vec![0u8; 1 << 16];
    let mut refused = false;
    for _ in 0..40 {
        let mut v = (chunk.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&chunk);
        if c.send_raw(&v).is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused || c.recv_record().is_none());
    // A record too short to hold an xid.
    let mut c = Client::connect(gw.addr());
    c.send_raw(&[0x80, 0, 0, 2, 1, 2]).unwrap();
    assert!(c.recv_record().is_none());
    // Truncated record then close.
    let mut c = Client::connect(gw.addr());
    c.send_raw(&[0x80, 0, 0, 100, 1, 2, 3]).unwrap();
    c.shutdown_write();
    assert!(c.recv_record().is_none());
    // The server is still serving.
    assert!(gw.alive());
    assert!(Client::connect(gw.addr()).null());
}

#[test]
fn malformed_rpc_and_xdr_get_rpc_errors() {
    let (mut gw, _outer) = setup();
    let mut c = Client::connect(gw.addr());
    let root = c.mnt("/h").unwrap();

    // Truncated arguments.
    assert!(garbage(c.call(NFS, 3, 1, &[0, 0, 0, 5])));
    // Handle length over NFS3_FHSIZE.
    let mut e = Encoder::new();
    e.u32(65);
    e.opaque_fixed(&[0u8; 65]);
    assert!(garbage(c.call(NFS, 3, 1, e.as_slice())));
    // Name length 4 GiB.
    let mut e = Encoder::new();
    e.opaque(&root);
    e.u32(u32::MAX);
    assert!(garbage(c.call(NFS, 3, 3, e.as_slice())));
    // WRITE claiming 2 MiB of data.
    let mut e = Encoder::new();
    e.opaque(&root);
    e.u64(0);
    e.u32(2 << 20);
    e.u32(0);
    e.u32(2 << 20);
    assert!(garbage(c.call(NFS, 3, 7, e.as_slice())));
    // Bad enum values: stable_how 9, createmode 7, bool 2 in sattr3.
    let mut e = Encoder::new();
    e.opaque(&root);
    e.u64(0);
    e.u32(1);
    e.u32(9);
    e.opaque(b"x");
    assert!(garbage(c.call(NFS, 3, 7, e.as_slice())));
    let mut e = Encoder::new();
    e.opaque(&root);
    e.string(b"n");
    e.u32(7);
    assert!(garbage(c.call(NFS, 3, 8, e.as_slice())));
    let mut e = Encoder::new();
    e.opaque(&root);
    e.u32(2);
    assert!(garbage(c.call(NFS, 3, 2, e.as_slice())));
    // MOUNT path over MNTPATHLEN.
    let mut e = Encoder::new();
    e.string(&[b'a'; 2000]);
    assert!(garbage(c.call(MOUNT, 3, 1, e.as_slice())));

    // RPC-level refusals.
    assert!(matches!(
        c.call(NFS, 2, 0, &[]),
        Reply::Accepted { stat: 2, .. }
    ));
    assert!(matches!(
        c.call(MOUNT, 1, 0, &[]),
        Reply::Accepted { stat: 2, .. }
    ));
    assert!(matches!(
        c.call(123456, 1, 0, &[]),
        Reply::Accepted { stat: 1, .. }
    ));
    assert!(matches!(
        c.call(NFS, 3, 22, &[]),
        Reply::Accepted { stat: 3, .. }
    ));
    assert!(matches!(
        c.call(MOUNT, 3, 9, &[]),
        Reply::Accepted { stat: 3, .. }
    ));
    // AUTH_NONE may only ping NFS.
    c.cred = Credential::None;
    assert!(c.null());
    let mut e = Encoder::new();
    e.opaque(&root);
    assert!(matches!(
        c.call(NFS, 3, 1, e.as_slice()),
        Reply::Denied { stat: 1 }
    ));
    c.cred = cred(0, 0);
    // RPC version 3: RPC_MISMATCH.
    let mut e = Encoder::new();
    for v in [77u32, 0, 3, NFS, 3, 0, 0, 0, 0, 0] {
        e.u32(v);
    }
    c.send_record(e.as_slice()).unwrap();
    let r = c.recv_record().unwrap();
    assert_eq!(&r[..12], &[0, 0, 0, 77, 0, 0, 0, 1, 0, 0, 0, 1]);
    // Too many AUTH_SYS gids: AUTH_ERROR.
    let mut body = Encoder::new();
    body.u32(0);
    body.string(b"m");
    body.u32(0);
    body.u32(0);
    body.u32(100);
    for _ in 0..100 {
        body.u32(0);
    }
    let mut e = Encoder::new();
    for v in [78u32, 0, 2, NFS, 3, 0, 1] {
        e.u32(v);
    }
    e.opaque(body.as_slice());
    e.u32(0);
    e.u32(0);
    c.send_record(e.as_slice()).unwrap();
    let r = c.recv_record().unwrap();
    assert_eq!(&r[8..12], &[0, 0, 0, 1], "not MSG_DENIED");
    // A REPLY sent to the server is ignored; the connection keeps working.
    let mut e = Encoder::new();
    e.u32(79);
    e.u32(1);
    c.send_record(e.as_slice()).unwrap();
    assert!(c.null());
    assert!(gw.alive());
}

#[test]
fn names_and_dot_dot_cannot_escape() {
    let (mut gw, outer) = setup();
    let mut c = Client::connect(gw.addr());
    let root = c.mnt("/h").unwrap();
    let root_id = c.getattr(&root).unwrap().fileid;

    // `..` of the export root is the root itself.
    let up = c.lookup(&root, b"..").unwrap();
    assert_eq!(c.getattr(&up).unwrap().fileid, root_id);
    let upup = c.lookup(&up, b"..").unwrap();
    assert_eq!(c.getattr(&upup).unwrap().fileid, root_id);
    // Names with '/' or NUL never resolve or create.
    assert!(c.lookup(&root, b"../outside-secret").is_err());
    assert!(c.lookup(&root, b"../../etc/passwd").is_err());
    assert!(c.lookup(&root, b"inside\0").is_err());
    assert_eq!(c.create(&root, b"../escaped", 1), Err(13));
    assert_eq!(c.create(&root, b"a\0b", 1), Err(13));
    assert_eq!(c.mkdir(&root, b"x/y"), Err(13));
    assert_eq!(c.create(&root, b"..", 1), Err(17));
    assert_eq!(c.create(&root, b".", 1), Err(17));
    assert_eq!(c.create(&root, b"", 1), Err(13));
    assert_ne!(c.remove(&root, b".."), 0);
    assert_ne!(c.rmdir(&root, b"."), 0);
    assert_ne!(c.rename(&root, b"inside", &root, b"../moved"), 0);
    assert_ne!(c.rename(&root, b"..", &root, b"x"), 0);
    assert_ne!(c.link(&root, &root, b"../l"), 0);
    assert!(!outer.path().join("escaped").exists());
    assert!(!outer.path().join("moved").exists());
    assert!(!outer.path().join("l").exists());

    // Symlinks are objects, not paths: the gateway never follows them.
    let up_link = c.lookup(&root, b"up").unwrap();
    assert_eq!(c.getattr(&up_link).unwrap().ftype, 5);
    assert_eq!(c.lookup(&up_link, b"outside-secret"), Err(20)); // NOTDIR
    assert!(c.read(&up_link, 0, 100).is_err());
    let etc = c.lookup(&root, b"etc").unwrap();
    assert_eq!(c.lookup(&etc, b"passwd"), Err(20));
    assert_ne!(c.create(&etc, b"evil", 1).map(|_| ()), Ok(()));
    assert!(!std::path::Path::new("/etc/evil").exists());
    // MOUNT paths cannot climb either.
    assert!(c.mnt("/h/..").is_err());
    assert!(c.mnt("/h/../..").is_err());
    assert!(c.mnt("/h/up").is_err());
    assert!(c.mnt("/").is_err());
    assert!(c.mnt("/hh").is_err());
    // libnfs going through `..` stays inside too.
    let out = common::run_tool("nfs-cat", &[&gw.url("/../outside-secret")]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret"));
    assert_eq!(run_ok("nfs-cat", &[&gw.url("/inside")]), "inside");
    assert!(gw.alive());
}

#[test]
fn foreign_and_forged_handles_are_refused() {
    let (mut gw, _outer) = setup();
    let mut c = Client::connect(gw.addr());
    let root = c.mnt("/h").unwrap();
    let inside = c.lookup(&root, b"inside").unwrap();

    // Garbage of every length up to 64: BADHANDLE.
    for len in [0usize, 1, 16, 31, 33, 64] {
        assert_eq!(c.getattr(&vec![0xab; len]), Err(10001), "len {len}");
    }
    // Right layout, another export's id: STALE.
    let mut foreign = root.clone();
    foreign[8..16].copy_from_slice(&nfs_gw::fhandle::export_id("/other").to_be_bytes());
    assert_eq!(c.getattr(&foreign), Err(70));
    // Our export, forged inode / generation: STALE.
    let mut forged = inside.clone();
    forged[16..24].copy_from_slice(&1u64.to_be_bytes());
    assert_eq!(c.getattr(&forged), Err(70));
    let mut forged = inside.clone();
    forged[31] ^= 1;
    assert_eq!(c.getattr(&forged), Err(70));
    assert_eq!(c.read(&forged, 0, 10), Err(70));
    // The outer directory's inode with a guessed generation: STALE.
    let outer_ino = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(gw.path().parent().unwrap()).unwrap().ino()
    };
    let mut guess = inside.clone();
    guess[16..24].copy_from_slice(&outer_ino.to_be_bytes());
    guess[24..32].copy_from_slice(&0u64.to_be_bytes());
    assert_eq!(c.getattr(&guess), Err(70));
    assert_eq!(c.lookup(&guess, b"outside-secret"), Err(70));
    // Corrupted magic / version / reserved: BADHANDLE.
    for at in [0usize, 4, 5] {
        let mut h = inside.clone();
        h[at] ^= 0x40;
        assert_eq!(c.getattr(&h), Err(10001), "byte {at}");
    }
    assert!(gw.alive());
}

#[test]
fn server_survives_random_garbage_connections() {
    use rand::{Rng, RngCore, SeedableRng};
    let (mut gw, _outer) = setup();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6e66_7367);
    for i in 0..200 {
        let mut c = Client::connect(gw.addr());
        let len = rng.gen_range(0..512);
        let mut body = vec![0u8; len];
        rng.fill_bytes(&mut body);
        if i % 2 == 0 && len >= 24 {
            // A valid-looking call header with random program data.
            body[4..8].copy_from_slice(&0u32.to_be_bytes());
            body[8..12].copy_from_slice(&2u32.to_be_bytes());
            let prog = if i % 4 == 0 { NFS } else { MOUNT };
            body[12..16].copy_from_slice(&prog.to_be_bytes());
            body[16..20].copy_from_slice(&3u32.to_be_bytes());
            body[20..24].copy_from_slice(&rng.gen_range(0u32..24).to_be_bytes());
        }
        c.set_timeout(std::time::Duration::from_secs(5));
        let _ = c.send_record(&body);
        c.shutdown_write();
        let _ = c.recv_record();
    }
    assert!(gw.alive());
    assert!(Client::connect(gw.addr()).null());
}

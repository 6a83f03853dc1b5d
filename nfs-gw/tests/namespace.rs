//! Directory operations at scale and protocol semantics the libnfs tools
//! cannot drive, through the test client (the crate's own XDR), with
//! `nfs-ls` listing the result where it can.

mod common;

use common::client::Client;
use common::{run_ok, Gateway};
use std::collections::BTreeSet;
use std::fs;

const N: usize = 10_000;

#[test]
fn ten_thousand_entries_create_list_rename_remove() {
    let gw = Gateway::start("many", &["--no-root-squash"]);
    let mut c = Client::connect(gw.addr());
    let root = c.mnt("/many").expect("mnt");
    let dir = c.mkdir(&root, b"big").expect("mkdir");
    let t = std::time::Instant::now();
    for i in 0..N {
        let name = format!("file-{i:05}");
        if i % 10 == 0 {
            c.mkdir(&dir, name.as_bytes()).expect("mkdir entry");
        } else {
            c.create(&dir, name.as_bytes(), 1).expect("create entry");
        }
    }
    eprintln!("{N} creates: {:?}", t.elapsed());
    let want: BTreeSet<Vec<u8>> = (0..N)
        .map(|i| format!("file-{i:05}").into_bytes())
        .collect();

    // libnfs lists every entry (it pages through READDIRPLUS with cookies).
    let t = std::time::Instant::now();
    let ls = run_ok("nfs-ls", &[&gw.url("/big")]);
    eprintln!("nfs-ls of {N} entries: {:?}", t.elapsed());
    let listed: BTreeSet<Vec<u8>> = ls
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|n| *n != "." && *n != "..")
        .map(|n| n.as_bytes().to_vec())
        .collect();
    assert_eq!(listed, want, "nfs-ls listing differs");

    // Our client, with small pages, both READDIR and READDIRPLUS: every
    // name exactly once.
    for plus in [false, true] {
        let names = c.list_all(&dir, 4096, plus);
        assert_eq!(names.len(), N, "plus={plus}: duplicates or gaps");
        let set: BTreeSet<Vec<u8>> = names.into_iter().collect();
        assert_eq!(set, want, "plus={plus}");
    }

    // Rename every entry (half into a second directory).
    let other = c.mkdir(&root, b"other").expect("mkdir other");
    let t = std::time::Instant::now();
    for i in 0..N {
        let from = format!("file-{i:05}");
        let to = format!("moved-{i:05}");
        let target = if i % 2 == 0 { &dir } else { &other };
        assert_eq!(c.rename(&dir, from.as_bytes(), target, to.as_bytes()), 0);
    }
    eprintln!("{N} renames: {:?}", t.elapsed());
    assert_eq!(fs::read_dir(gw.path().join("big")).unwrap().count(), N / 2);
    assert_eq!(
        fs::read_dir(gw.path().join("other")).unwrap().count(),
        N / 2
    );
    assert!(gw.path().join("other/moved-00001").is_file());
    assert!(gw.path().join("big/moved-00010").is_dir());

    // Listing while removing: cookies stay valid as entries disappear.
    let mut removed = 0;
    let (mut cookie, mut verf) = (0u64, [0u8; 8]);
    loop {
        let page = c.readdir(&dir, cookie, verf, 8192, false).expect("readdir");
        for (_, name, ck) in &page.entries {
            cookie = *ck;
            if name == b"." || name == b".." {
                continue;
            }
            let idx: usize = std::str::from_utf8(&name[6..]).unwrap().parse().unwrap();
            let st = if idx % 10 == 0 {
                c.rmdir(&dir, name)
            } else {
                c.remove(&dir, name)
            };
            assert_eq!(st, 0, "removing {}", String::from_utf8_lossy(name));
            removed += 1;
        }
        verf = page.verf;
        if page.eof {
            break;
        }
    }
    assert_eq!(removed, N / 2);
    for i in (1..N).step_by(2) {
        let name = format!("moved-{i:05}");
        let st = if i % 10 == 0 {
            c.rmdir(&other, name.as_bytes())
        } else {
            c.remove(&other, name.as_bytes())
        };
        assert_eq!(st, 0);
    }
    assert_eq!(c.rmdir(&root, b"big"), 0);
    assert_eq!(c.rmdir(&root, b"other"), 0);
    assert_eq!(fs::read_dir(gw.path()).unwrap().count(), 0);
}

#[test]
fn semantics_of_write_commit_create_link_and_errors() {
    let gw = Gateway::start("sem", &["--no-root-squash"]);
    let mut c = Client::connect(gw.addr());
    let root = c.mnt("/sem").unwrap();

    let (rtmax, wtmax, maxfile) = c.fsinfo(&root);
    assert_eq!((rtmax, wtmax), (1 << 20, 1 << 20));
    assert!(maxfile >= 62 << 40);

    // UNSTABLE write, then COMMIT with the same verifier.
    let f = c.create(&root, b"w", 1).unwrap();
    let (n, committed, v1) = c.write(&f, 0, &[7u8; 1 << 20], 0).unwrap();
    assert_eq!((n, committed), (1 << 20, 0));
    let (_, committed, v2) = c.write(&f, 1 << 20, b"tail", 2).unwrap();
    assert_eq!(committed, 2);
    assert_eq!(v1, v2);
    assert_eq!(c.commit(&f).unwrap(), v1);
    let (data, eof) = c.read(&f, (1 << 20) - 2, 100).unwrap();
    assert_eq!(data, [7, 7, b't', b'a', b'i', b'l']);
    assert!(eof);
    // An oversized READ is clamped to rtmax.
    let (data, _) = c.read(&f, 0, u32::MAX).unwrap();
    assert_eq!(data.len(), 1 << 20);
    // Truncate through SETATTR.
    assert_eq!(c.set_size(&f, 10), 0);
    assert_eq!(c.getattr(&f).unwrap().size, 10);
    assert_eq!(fs::metadata(gw.path().join("w")).unwrap().len(), 10);

    // GUARDED on an existing name: EXIST. UNCHECKED: fine.
    assert_eq!(c.create(&root, b"w", 1), Err(17));
    assert!(c.create(&root, b"w", 0).is_ok());
    // EXCLUSIVE: a retransmission (same verifier) succeeds, a new one not.
    let x1 = c.create(&root, b"x", 2).unwrap();
    let x2 = c.create(&root, b"x", 2).unwrap();
    assert_eq!(x1, x2);
    assert_eq!(c.create(&root, b"w", 2), Err(17));

    // Hard link and symlink.
    assert_eq!(c.link(&f, &root, b"w-link"), 0);
    assert_eq!(c.getattr(&f).unwrap().nlink, 2);
    let l = c.symlink(&root, b"sl", b"w").unwrap();
    assert_eq!(c.readlink(&l).unwrap(), b"w");
    assert_eq!(c.getattr(&l).unwrap().ftype, 5);

    // Error mapping.
    assert_eq!(c.lookup(&root, b"missing"), Err(2)); // NOENT
    assert_eq!(c.mkdir(&root, b"w"), Err(17)); // EXIST
    let d = c.mkdir(&root, b"d").unwrap();
    c.create(&d, b"inner", 1).unwrap();
    assert_eq!(c.rmdir(&root, b"d"), 66); // NOTEMPTY
    assert_eq!(c.remove(&root, b"d"), 21); // ISDIR
    assert_eq!(c.rmdir(&root, b"w"), 20); // NOTDIR
    assert_eq!(c.lookup(&f, b"x"), Err(20)); // NOTDIR
    assert_eq!(c.read(&d, 0, 10).unwrap_err(), 21); // ISDIR
    let long = vec![b'n'; 256];
    assert_eq!(c.create(&root, &long, 1), Err(63)); // NAMETOOLONG
    assert!(c.create(&root, &[b'n'; 255], 1).is_ok());
    assert_eq!(c.rename(&root, b"d", &d, b"sub"), 22); // into itself: INVAL

    // A removed file's handle is STALE, even if the inode is reused.
    assert_eq!(c.remove(&root, b"x"), 0);
    assert_eq!(c.getattr(&x1), Err(70));
    assert_eq!(c.write(&x1, 0, b"z", 2), Err(70));
    let _reuse = c.create(&root, b"y", 1).unwrap();
    assert_eq!(c.getattr(&x1), Err(70));

    // Rename keeps the handle valid (identity is the inode).
    assert_eq!(c.rename(&root, b"w", &d, b"w2"), 0);
    assert_eq!(c.getattr(&f).unwrap().size, 10);
    assert_eq!(c.read(&f, 0, 4).unwrap().0, vec![7u8; 4]);
}

#[test]
fn handles_survive_restart_and_write_verifier_changes() {
    let dir = tempfile::Builder::new()
        .prefix("nfsgw-rs")
        .tempdir()
        .unwrap();
    let path = dir.path().to_path_buf();
    let gw = Gateway::start_in(dir, "keep", &["--no-root-squash"]);
    let mut c = Client::connect(gw.addr());
    let root = c.mnt("/keep").unwrap();
    let d = c.mkdir(&root, b"a").unwrap();
    let d2 = c.mkdir(&d, b"b").unwrap();
    let f = c.create(&d2, b"f", 1).unwrap();
    let (_, _, v1) = c.write(&f, 0, b"persist", 0).unwrap();
    // Restart over the same directory: the TempDir moves to the new process.
    let Gateway { .. } = &gw;
    let dir = {
        let mut gw = gw;
        let dir = std::mem::replace(&mut gw.dir, tempfile::tempdir().unwrap());
        drop(gw);
        dir
    };
    assert_eq!(dir.path(), path);
    let gw = Gateway::start_in(dir, "keep", &["--no-root-squash"]);
    let mut c = Client::connect(gw.addr());
    // No MNT, no LOOKUP: the old handles still work (name map rebuilt).
    assert_eq!(c.read(&f, 0, 100).unwrap().0, b"persist");
    assert_eq!(c.getattr(&d).unwrap().ftype, 2);
    let (_, _, v2) = c.write(&f, 0, b"P", 0).unwrap();
    assert_ne!(v1, v2, "write verifier must change across restarts");
    assert_eq!(c.commit(&f).unwrap(), v2);
}

#[test]
fn nfs_ls_sees_client_made_tree() {
    let gw = Gateway::start("tree", &["--no-root-squash"]);
    let mut c = Client::connect(gw.addr());
    let root = c.mnt("/tree").unwrap();
    let a = c.mkdir(&root, b"a").unwrap();
    let b = c.mkdir(&a, b"b").unwrap();
    let f = c.create(&b, b"leaf", 1).unwrap();
    c.write(&f, 0, b"leaf data\n", 2).unwrap();
    let ls = run_ok("nfs-ls", &["-R", &gw.url("")]);
    assert!(ls.contains("a/b/leaf"), "{ls}");
    assert_eq!(run_ok("nfs-cat", &[&gw.url("/a/b/leaf")]), "leaf data\n");
}

//! Two hosts on one device.

use super::tests::{stop, Rig};
use super::{Falloc, FsResult, SetAttr};

#[test]
fn a_file_written_on_one_host_is_read_on_the_other() {
    let r = Rig::new(256 << 20, None);
    let (a, b) = (r.fs("a"), r.fs("b"));
    let root = a.root();
    let f = a.create(root, b"shared", 0o644, 0, 0).unwrap();
    let fh = a.open(f.ino, true).unwrap();
    a.write(fh, 0, b"first version").unwrap();
    a.write(fh, 3 << 20, b"far away").unwrap();
    a.fsync(fh).unwrap();
    // B sees the name and the data while A still has it open for write.
    let seen = b.lookup(root, b"shared").unwrap();
    assert_eq!(seen.ino, f.ino);
    assert_eq!(seen.size, (3 << 20) + 8);
    let rb = b.open(f.ino, false).unwrap();
    assert_eq!(b.read(rb, 0, 13).unwrap(), b"first version");
    assert_eq!(b.read(rb, 3 << 20, 8).unwrap(), b"far away");
    // A writes more; B's next read follows the committed map.
    a.write(fh, 5 << 20, b"later").unwrap();
    a.fsync(fh).unwrap();
    assert_eq!(b.read(rb, 5 << 20, 5).unwrap(), b"later");
    // A second write-open elsewhere is refused.
    let e = b.open(f.ino, true).unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY, "{e}");
    // So is unlinking it from B while A has it open.
    assert_eq!(b.unlink(root, b"shared").unwrap_err().errno(), libc::EBUSY);
    a.close(fh).unwrap();
    b.close(rb).unwrap();
    // Now B may write, and A's read-only open then sees B's data.
    let wb = b.open(f.ino, true).unwrap();
    b.write(wb, 0, b"SECOND").unwrap();
    b.close(wb).unwrap();
    let ra = a.open(f.ino, false).unwrap();
    assert_eq!(a.read(ra, 0, 13).unwrap(), b"SECONDversion");
    assert_eq!(
        b.open(f.ino, true).unwrap_err().errno(),
        libc::EBUSY,
        "A reads it"
    );
    a.close(ra).unwrap();
    stop(a);
    stop(b);
    r.check();
}

#[test]
fn two_hosts_share_directories_and_space() {
    let r = Rig::new(256 << 20, Some(8192));
    let (a, b) = (r.fs("a"), r.fs("b"));
    let root = a.root();
    let da = a.mkdir(root, b"from-a", 0o755, 0, 0).unwrap();
    let db = b.mkdir(root, b"from-b", 0o755, 0, 0).unwrap();
    for i in 0..150 {
        a.create(da.ino, format!("a{i}").as_bytes(), 0o644, 0, 0)
            .unwrap();
        b.create(db.ino, format!("b{i}").as_bytes(), 0o644, 0, 0)
            .unwrap();
        // Both into the root as well: the root lock moves between hosts.
        if i % 10 == 0 {
            a.create(root, format!("ra{i}").as_bytes(), 0o644, 0, 0)
                .unwrap();
            b.create(root, format!("rb{i}").as_bytes(), 0o644, 0, 0)
                .unwrap();
        }
    }
    assert_eq!(b.lookup(da.ino, b"a77").unwrap().nlink, 1);
    assert_eq!(a.lookup(db.ino, b"b149").unwrap().nlink, 1);
    assert_eq!(b.readdir(root, 0, 1000).unwrap().len(), 2 + 2 + 30);
    // Each allocates data in its own home cluster; statfs agrees on both.
    for (fs, d, name) in [(&a, da.ino, b"a1"), (&b, db.ino, b"b1")] {
        let f = fs.lookup(d, name).unwrap();
        let fh = fs.open(f.ino, true).unwrap();
        fs.write(fh, 0, &vec![7u8; 3 << 20]).unwrap();
        fs.close(fh).unwrap();
    }
    assert_eq!(a.statfs().unwrap(), b.statfs().unwrap());
    // B renames A's directory into its own.
    b.rename(root, b"from-a", db.ino, b"moved").unwrap();
    assert_eq!(a.lookup(db.ino, b"moved").unwrap().ino, da.ino);
    assert_eq!(a.lookup(da.ino, b"..").unwrap().ino, db.ino);
    // Freeing blocks another host allocated waits for its cluster (released when idle).
    let f = a.lookup(db.ino, b"b1").unwrap();
    a.unlink(db.ino, b"b1").unwrap();
    assert_eq!(b.lookup(db.ino, b"b1").unwrap_err().errno(), libc::ENOENT);
    let _ = f;
    stop(a);
    stop(b);
    r.check();
}

#[test]
fn a_dead_hosts_orphan_is_reclaimed_by_a_survivor() {
    let r = Rig::new(256 << 20, None);
    let (a, b) = (r.fs("a"), r.fs("b"));
    let root = a.root();
    let before = b.statfs().unwrap();
    let f = a.create(root, b"doomed", 0o644, 0, 0).unwrap();
    let fh = a.open(f.ino, true).unwrap();
    a.write(fh, 0, &vec![3u8; 3 << 20]).unwrap();
    a.fsync(fh).unwrap();
    // Unlinked while open: on the orphan table, its space still held.
    a.unlink(root, b"doomed").unwrap();
    assert_eq!(b.statfs().unwrap().blocks_free, before.blocks_free - 3);
    assert_eq!(r.check().inodes, 2, "root and the pending orphan");
    // A crashes with it open.
    let ha = a.host().clone();
    drop(a);
    ha.abandon();
    // B's housekeeping finishes the free once A's lock can be broken.
    let t = super::tests::timeouts();
    let deadline = std::time::Instant::now() + t.dead_after * 3 + std::time::Duration::from_secs(5);
    while b.statfs().unwrap().blocks_free != before.blocks_free {
        assert!(
            std::time::Instant::now() < deadline,
            "the orphan's blocks were not freed: {:?}",
            b.statfs().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(b.statfs().unwrap().inodes_free, before.inodes_free);
    assert_eq!(
        b.getattr(root).unwrap().ino,
        root,
        "the root (and its orphan table) still reads"
    );
    stop(b);
    let rep = r.check();
    assert_eq!(rep.inodes, 1, "only the root is left: {rep:?}");
}

#[test]
fn truncating_and_deleting_a_large_file_leaves_no_orphan_entry() {
    let r = Rig::new(512 << 20, None);
    let a = r.fs("a");
    let root = a.root();
    let before = a.statfs().unwrap();
    let f = a.create(root, b"big", 0o644, 0, 0).unwrap();
    let root_held = a.getattr(root).unwrap().allocated;
    let fh = a.open(f.ino, true).unwrap();
    a.fallocate(fh, 0, 100 << 20, Falloc::AllocateLazy { keep_size: false })
        .unwrap();
    a.close(fh).unwrap();
    assert_eq!(a.statfs().unwrap().blocks_free, before.blocks_free - 100);
    a.setattr(
        f.ino,
        &SetAttr {
            size: Some(1 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(a.statfs().unwrap().blocks_free, before.blocks_free - 1);
    let fh = a.open(f.ino, true).unwrap();
    a.fallocate(fh, 0, 90 << 20, Falloc::AllocateLazy { keep_size: false })
        .unwrap();
    a.close(fh).unwrap();
    a.unlink(root, b"big").unwrap();
    assert_eq!(a.statfs().unwrap().blocks_free, before.blocks_free);
    assert_eq!(
        a.getattr(root).unwrap().allocated,
        root_held,
        "the orphan table went with its last entry"
    );
    stop(a);
    r.check();
}

/// A host that keeps allocating from its home cluster must not starve
/// another host that frees blocks into it: clusters are let go after at
/// most the idle time even while busy (found by `fuse_multihost_soak`).
#[test]
fn freeing_into_a_busy_hosts_cluster_does_not_starve() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let r = Rig::new(256 << 20, None);
    let (a, b) = (r.fs("a"), r.fs("b"));
    let root = a.root();
    // B allocates the file's blocks (from B's home cluster) and closes it.
    let f = b.create(root, b"x", 0o644, 0, 0).unwrap();
    let fh = b.open(f.ino, true).unwrap();
    b.write(fh, 0, &vec![0x5a; 8 << 20]).unwrap();
    b.close(fh).unwrap();
    // B keeps allocating and freeing, so its cluster is never idle.
    let stop_churn = Arc::new(AtomicBool::new(false));
    let churn = {
        let (b, stop_churn) = (b.clone(), stop_churn.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop_churn.load(Ordering::SeqCst) {
                let name = format!("churn{}", i % 4);
                let c = b.create(root, name.as_bytes(), 0o644, 0, 0).unwrap();
                let fh = b.open(c.ino, true).unwrap();
                b.write(fh, 0, &vec![i as u8; 2 << 20]).unwrap();
                b.close(fh).unwrap();
                b.unlink(root, name.as_bytes()).unwrap();
                i += 1;
            }
            i
        })
    };
    std::thread::sleep(super::tests::timeouts().dead_after);
    let wa = a.open(f.ino, true).unwrap();
    let shrink = SetAttr {
        size: Some(4096),
        ..SetAttr::default()
    };
    let truncated = a.setattr(f.ino, &shrink);
    a.close(wa).unwrap();
    let unlinked = a.unlink(root, b"x");
    stop_churn.store(true, Ordering::SeqCst);
    let rounds = churn.join().unwrap();
    assert!(rounds > 10, "B churned only {rounds} times");
    truncated.unwrap();
    unlinked.unwrap();
    stop(a);
    stop(b);
    r.check();
}

/// A directory another host removed must take no new entries through its
/// old inode number (a stale handle): they would name inodes no reachable
/// directory names (found by `fuse_multihost_soak`: fsck then reported an
/// allocated inode nobody names and unreferenced small blocks).
#[test]
fn a_directory_removed_on_another_host_takes_no_entries() {
    let r = Rig::new(256 << 20, None);
    let (a, b) = (r.fs("a"), r.fs("b"));
    let root = a.root();
    let d = a.mkdir(root, b"vm1", 0o755, 0, 0).unwrap();
    b.rmdir(root, b"vm1").unwrap();
    for e in [
        a.create(d.ino, b"x", 0o644, 0, 0).unwrap_err(),
        a.mkdir(d.ino, b"y", 0o755, 0, 0).unwrap_err(),
        a.symlink(d.ino, b"z", b"target", 0, 0).unwrap_err(),
    ] {
        assert_eq!(e.errno(), libc::ENOENT, "{e}");
    }
    stop(a);
    stop(b);
    r.check();
}

#[test]
fn a_file_removed_on_another_host_opens_stale_not_empty() {
    let r = Rig::new(256 << 20, None);
    let (a, b) = (r.fs("a"), r.fs("b"));
    let root = a.root();
    let f = a.create(root, b"doomed", 0o644, 0, 0).unwrap();
    let fh = a.open(f.ino, true).unwrap();
    a.write(fh, 0, b"contents").unwrap();
    a.close(fh).unwrap();
    // B found the name (as a kernel dentry or an NFS handle would keep
    // it); A then replaces it and the old inode is reclaimed.
    let seen = b.lookup(root, b"doomed").unwrap();
    let g = a.create(root, b"newer", 0o644, 0, 0).unwrap();
    a.rename(root, b"newer", root, b"doomed").unwrap();
    assert_eq!(a.lookup(root, b"doomed").unwrap().ino, g.ino);
    // Opening the old inode is stale, for reading and for writing; it is
    // never an empty file.
    for write in [false, true] {
        let e = b.open(seen.ino, write).unwrap_err();
        assert_eq!(e.errno(), libc::ESTALE, "write={write}: {e}");
    }
    // A reader following another host's writer without a lock learns the
    // same once that host removes and reclaims the file.
    let w = a.open(g.ino, true).unwrap();
    a.write(w, 0, b"abc").unwrap();
    a.fsync(w).unwrap();
    let rb = b.open(g.ino, false).unwrap();
    assert_eq!(b.read(rb, 0, 3).unwrap(), b"abc");
    a.close(w).unwrap();
    a.unlink(root, b"doomed").unwrap();
    assert_eq!(b.read(rb, 0, 3).unwrap_err().errno(), libc::ESTALE);
    b.close(rb).unwrap();
    stop(a);
    stop(b);
    r.check();
}

#[test]
fn create_and_open_leaves_no_window_for_another_host() {
    let r = Rig::new(256 << 20, None);
    let (a, b) = (r.fs("a"), r.fs("b"));
    let root = a.root();
    let (f, fh) = a.create_open(root, b"new", 0o644, (0, 0), true).unwrap();
    // The moment the name exists the file is A's, open for write: B can
    // neither open it for write nor hold it shared-read.
    let seen = b.lookup(root, b"new").unwrap();
    assert_eq!(seen.ino, f.ino);
    assert_eq!(b.open(f.ino, true).unwrap_err().errno(), libc::EBUSY);
    let e = b.open_shared_read(f.ino).unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY, "{e}");
    a.write(fh, 0, b"data").unwrap();
    a.close(fh).unwrap();
    // A read-only create-and-open holds SHARED_READ: B may read, not write.
    let (g, rh) = a.create_open(root, b"ro", 0o644, (0, 0), false).unwrap();
    assert_eq!(b.open(g.ino, true).unwrap_err().errno(), libc::EBUSY);
    let bh = b.open(g.ino, false).unwrap();
    b.close(bh).unwrap();
    a.close(rh).unwrap();
    let wb = b.open(g.ino, true).unwrap();
    b.close(wb).unwrap();
    // A name that exists is refused, and nothing stays open or locked.
    let e = a
        .create_open(root, b"new", 0o644, (0, 0), true)
        .unwrap_err();
    assert_eq!(e.errno(), libc::EEXIST);
    let wb = b.open(f.ino, true).unwrap();
    b.close(wb).unwrap();
    stop(a);
    stop(b);
    r.check();
}

/// A change waiting for a directory another host holds does so without
/// the filesystem mutex: this host's getattr and reads of other files go
/// on meanwhile, and the change is made once the other host lets go. The
/// same for an unlink waiting for a file open on another host (EBUSY at
/// D + T, as before, but nothing else stalls).
#[test]
fn a_change_waiting_for_another_hosts_lock_does_not_stall_this_host() {
    use crate::format::LockMode;
    use std::time::{Duration, Instant};
    let r = Rig::new(256 << 20, None);
    let (a, b) = (r.fs("a"), r.fs("b"));
    let root = a.root();
    let d = a.mkdir(root, b"busy", 0o755, 0, 0).unwrap();
    let f = a.create(root, b"other", 0o644, 0, 0).unwrap();
    let fh = a.open(f.ino, true).unwrap();
    a.write(fh, 0, b"still served").unwrap();
    let v = b.create(root, b"victim", 0o644, 0, 0).unwrap();
    let vh = b.open(v.ino, true).unwrap();
    // Host B holds the directory, as a change of its own there would.
    let addr = b.inner.ctx.lock_addr(d.ino);
    let hold = Duration::from_millis(800);
    b.host()
        .lock(addr, d.ino, LockMode::Exclusive, Duration::from_secs(5))
        .unwrap();
    // Prompt: well under B's hold and A's wait, with room for a loaded machine.
    let prompt = Duration::from_millis(500);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let create = s.spawn(|| {
            let t = Instant::now();
            let r = a.create(d.ino, b"new", 0o644, 0, 0);
            (r, t.elapsed())
        });
        let unlink = s.spawn(|| {
            let t = Instant::now();
            let r = a.unlink(root, b"victim");
            (r, t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(100));
        for _ in 0..3 {
            let t = Instant::now();
            assert_eq!(a.getattr(f.ino).unwrap().size, 12);
            assert_eq!(a.read(fh, 0, 12).unwrap(), b"still served");
            assert!(t.elapsed() < prompt, "stalled {:?}", t.elapsed());
            std::thread::sleep(Duration::from_millis(100));
        }
        // B lets go at `hold`, well inside A's wait (D + T).
        std::thread::sleep(hold.saturating_sub(t0.elapsed()));
        b.host().unlock(addr).unwrap();
        let (r, took) = create.join().unwrap();
        r.unwrap();
        assert!(took >= hold / 2, "the create waited for B: {took:?}");
        let (r, _) = unlink.join().unwrap();
        assert_eq!(r.unwrap_err().errno(), libc::EBUSY, "B has the victim open");
    });
    assert!(a.lookup(d.ino, b"new").is_ok());
    b.close(vh).unwrap();
    a.unlink(root, b"victim").unwrap();
    a.close(fh).unwrap();
    stop(a);
    stop(b);
    r.check();
}

/// Attribute, xattr, link and rename changes of a file another host holds
/// wait for it with the filesystem mutex let go, as namespace changes do:
/// this host's getattr and reads go on meanwhile, and each change is made
/// once the other host closes the file.
#[test]
fn an_inode_change_waiting_for_another_host_does_not_stall_this_host() {
    use crate::fs::XattrSet;
    use std::time::{Duration, Instant};
    let r = Rig::new(256 << 20, None);
    let (a, b) = (r.fs("a"), r.fs("b"));
    let root = a.root();
    let d = a.mkdir(root, b"d", 0o755, 0, 0).unwrap();
    let f = a.create(root, b"other", 0o644, 0, 0).unwrap();
    let fh = a.open(f.ino, true).unwrap();
    a.write(fh, 0, b"still served").unwrap();
    let g = a.create(root, b"g", 0o644, 0, 0).unwrap();
    let h = a.create(root, b"h", 0o644, 0, 0).unwrap();
    let moved = a.mkdir(root, b"moved", 0o755, 0, 0).unwrap();
    a.create(root, b"x", 0o644, 0, 0).unwrap();
    // Host B holds g and h open for write and the directory `moved` locked.
    let gh = b.open(g.ino, true).unwrap();
    let hh = b.open(h.ino, true).unwrap();
    let maddr = b.inner.ctx.lock_addr(moved.ino);
    b.host()
        .lock(
            maddr,
            moved.ino,
            crate::format::LockMode::Exclusive,
            Duration::from_secs(5),
        )
        .unwrap();
    let chmod = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    let hold = Duration::from_millis(800);
    let prompt = Duration::from_millis(500);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        macro_rules! timed {
            ($op:expr, $body:expr) => {
                s.spawn(|| {
                    let t = Instant::now();
                    let r: FsResult<()> = $body;
                    ($op, r, t.elapsed())
                })
            };
        }
        let ops = vec![
            timed!("chmod", a.setattr(g.ino, &chmod).map(drop)),
            timed!(
                "setxattr",
                a.setxattr(g.ino, b"user.k", b"v", XattrSet::Any)
            ),
            timed!("link", a.link(g.ino, root, b"g2").map(drop)),
            timed!("rename over", a.rename(root, b"x", root, b"h")),
            timed!("move dir", a.rename(root, b"moved", d.ino, b"moved")),
        ];
        std::thread::sleep(Duration::from_millis(100));
        for _ in 0..3 {
            let t = Instant::now();
            assert_eq!(a.getattr(f.ino).unwrap().size, 12);
            assert_eq!(a.read(fh, 0, 12).unwrap(), b"still served");
            assert!(t.elapsed() < prompt, "stalled {:?}", t.elapsed());
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(hold.saturating_sub(t0.elapsed()));
        b.close(gh).unwrap();
        b.close(hh).unwrap();
        b.host().unlock(maddr).unwrap();
        for h in ops {
            let (op, r, took) = h.join().unwrap();
            r.unwrap_or_else(|e| panic!("{op}: {e}"));
            assert!(took >= hold / 2, "{op} waited for B: {took:?}");
        }
    });
    assert_eq!(a.lookup(d.ino, b"moved").unwrap().ino, moved.ino);
    assert!(a.lookup(root, b"x").is_err());
    assert_ne!(a.lookup(root, b"h").unwrap().ino, h.ino);
    let g2 = a.lookup(root, b"g2").unwrap();
    assert_eq!((g2.ino, g2.nlink), (g.ino, 2));
    assert_eq!(g2.mode & 0o777, 0o600);
    assert_eq!(a.getxattr(g.ino, b"user.k").unwrap(), b"v");
    a.close(fh).unwrap();
    stop(a);
    stop(b);
    r.check();
}

//! Freeing into a cluster another busy host keeps (issue 4, found by
//! `fuse_multihost_soak`): host A shrinks and then unlinks a file whose
//! blocks host B allocated, while B keeps creating, writing and unlinking
//! files in the same directory, so B's home clusters are never idle. Freeing
//! needs the resource cluster the blocks live in (docs/filesystem.md
//! "Allocation"). It used to wait D + T and fail with EBUSY — even
//! `ftruncate` by the host holding the file open for write — and, after the
//! first half of the fix, B's own unlink did. Now a waiter announces the lock
//! it wants in its heartbeat slot and holders let go of wanted clusters on
//! their next allocation or free, while they wait for a lock, while a lookup
//! waits for a busy directory, and in housekeeping: every call must succeed.

mod fuse_util;

use std::fs::OpenOptions;
use std::io::Write;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuse_util::{fuse_or_skip, make_image, mount};

#[test]
fn shrinking_a_file_whose_blocks_another_busy_host_allocated() {
    if !fuse_or_skip("fuse_cross_host_free") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 1 << 30);
    let a = mount(&img, &dir.path().join("a"), "host-a");
    let b = mount(&img, &dir.path().join("b"), "host-b");

    // B allocates the file's blocks (from B's home cluster) and closes it.
    {
        let mut f = std::fs::File::create(b.mountpoint.join("x")).unwrap();
        f.write_all(&vec![0x5a; 8 << 20]).unwrap();
        f.sync_all().unwrap();
    }
    // B keeps allocating and freeing, so its home cluster never idles. Its
    // own calls must not fail either: the first error ends the churn.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        let root = b.mountpoint.clone();
        std::thread::spawn(move || -> Result<u64, String> {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let p = root.join(format!("churn{}", i % 4));
                let t = Instant::now();
                let step = std::fs::File::create(&p)
                    .and_then(|mut f| {
                        f.write_all(&vec![i as u8; 1 << 20])?;
                        f.sync_all()
                    })
                    .map_err(|e| ("create+write+fsync", e))
                    .and_then(|()| std::fs::remove_file(&p).map_err(|e| ("unlink", e)));
                if let Err((what, e)) = step {
                    return Err(format!(
                        "B's own {what} of churn{} (round {i}): {e} after {:?}",
                        i % 4,
                        t.elapsed()
                    ));
                }
                i += 1;
            }
            Ok(i)
        })
    };
    std::thread::sleep(Duration::from_millis(1500)); // past A's attribute cache

    let f = OpenOptions::new()
        .write(true)
        .open(a.mountpoint.join("x"))
        .unwrap();
    let t = Instant::now();
    let truncated = f.set_len(4096);
    let truncate_took = t.elapsed();
    drop(f);
    let t = Instant::now();
    let unlinked = std::fs::remove_file(a.mountpoint.join("x"));
    let unlink_took = t.elapsed();
    stop.store(true, Ordering::SeqCst);
    let churned = busy.join().unwrap();
    eprintln!(
        "fuse_cross_host_free: through A: ftruncate {truncated:?} after {truncate_took:?}; \
         unlink {unlinked:?} after {unlink_took:?}; B: {churned:?}"
    );
    assert!(
        truncated.is_ok() && unlinked.is_ok() && churned.is_ok(),
        "A holds x open for write, yet ftruncate gave {truncated:?} after {truncate_took:?}; \
         then unlink gave {unlinked:?} after {unlink_took:?}; B's churn: {churned:?}"
    );
    a.stop();
    b.stop();
}

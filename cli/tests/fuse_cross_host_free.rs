//! Reproduction (issue 4, found by `fuse_multihost_soak`): a host that
//! holds a file open for write cannot shrink it while the host that
//! allocated the file's blocks keeps allocating. Freeing a block needs the
//! resource cluster it lives in (docs/filesystem.md "Allocation"); the
//! other host keeps that cluster as its home cluster until it has been
//! idle for 2 s, so the truncate waits `lock_wait` (D + T) and fails with
//! EBUSY — an errno `ftruncate(2)` on a file this host has open for write
//! is not documented to return (docs/fuse.md: setattr is EBUSY only "if
//! another host has the file open"). Unlink and a replacing rename free
//! blocks the same way.
//!
//! B's own create/write/unlink loop must not fail meanwhile either. With
//! main's ac9b6a1 (holders let go of a cluster another host waits for) A's
//! calls succeed, but B's unlink of its own file now fails with EBUSY about
//! one run in two: A keeps the cluster it took. Fails until both sides work.

mod fuse_util;

use std::fs::OpenOptions;
use std::io::Write;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuse_util::{fuse_or_skip, make_image, mount};

#[test]
#[ignore = "known limit (docs/fuse.md): fails about one run in two; run with --ignored"]
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

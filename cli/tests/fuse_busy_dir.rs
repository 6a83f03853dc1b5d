//! A lookup waiting for a directory another host holds busy must not hold
//! up the rest of the mount: while it waits (up to D + T), reads and
//! overwrites of another file, and a stat of another name, complete
//! promptly. The other host is joined in this process and holds the
//! directory's inode lock EXCLUSIVE, as a create or rename there would.

mod fuse_util;

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuse_util::{check_image, fuse_ready, make_image, mount, timeouts};
use vmfs::cluster::{Host, HostConfig};
use vmfs::dev::{FileDev, FileDevOptions, SharedDev};
use vmfs::format::LockMode;
use vmfs::volume::Volume;

/// Well under the lookup's wait (D + T, about 1.2 s with test timeouts),
/// with room for a loaded 2-core machine.
const PROMPT: Duration = Duration::from_millis(600);

#[test]
fn a_lookup_waiting_for_a_busy_directory_does_not_stall_other_files() {
    if !fuse_ready("fuse_busy_dir") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 1 << 30);
    let a = mount(&img, &dir.path().join("a"), "host-a");
    let busy = a.mountpoint.join("busy");
    std::fs::create_dir(&busy).unwrap();
    let other = a.mountpoint.join("other.bin");
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    {
        let mut f = std::fs::File::create(&other).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
    }
    let dir_ino = std::fs::metadata(&busy).unwrap().ino();

    // Host B, in this process, holds the directory busy.
    let dev: SharedDev = Arc::new(FileDev::open(&img, FileDevOptions::default()).unwrap());
    let vol = Volume::open(dev.clone()).unwrap();
    let addr = vol.inode_addr(dir_ino);
    let b = Host::join(vol, HostConfig::new("host-b")).unwrap();
    b.start();
    b.lock(addr, dir_ino, LockMode::Exclusive, Duration::from_secs(5))
        .unwrap();

    // A looks up a name in it: that waits for B (or gives up after D + T).
    let waiting = Arc::new(AtomicBool::new(true));
    let lookup = {
        let waiting = waiting.clone();
        let path = busy.join("not-there");
        std::thread::spawn(move || {
            let start = Instant::now();
            let r = std::fs::metadata(&path);
            waiting.store(false, Ordering::SeqCst);
            (start.elapsed(), r.err().and_then(|e| e.raw_os_error()))
        })
    };
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        waiting.load(Ordering::SeqCst),
        "the lookup in the busy directory did not wait at all"
    );

    // Meanwhile everything about another file goes on.
    let start = Instant::now();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&other)
        .unwrap();
    let mut seen = Vec::new();
    f.read_to_end(&mut seen).unwrap();
    assert!(
        seen == data,
        "read {} bytes, not what was written",
        seen.len()
    );
    f.seek(SeekFrom::Start(8192)).unwrap();
    f.write_all(&[7u8; 4096]).unwrap();
    drop(f);
    let md = std::fs::metadata(a.mountpoint.join("other.bin")).unwrap();
    assert_eq!(md.len(), data.len() as u64);
    let took = start.elapsed();
    let still_waiting = waiting.load(Ordering::SeqCst);
    assert!(
        took < PROMPT,
        "open, 4 MiB read, overwrite and stat of another file took {took:?} \
         while a lookup waited for a busy directory"
    );
    assert!(
        still_waiting,
        "the lookup finished before the other file's I/O did ({took:?}): nothing was shown"
    );

    b.unlock(addr).unwrap();
    let (waited, errno) = lookup.join().unwrap();
    assert!(
        errno == Some(libc::ENOENT) || errno == Some(libc::EBUSY),
        "lookup of a missing name in the busy directory: errno {errno:?}"
    );
    assert!(
        waited >= Duration::from_millis(150),
        "the lookup waited only {waited:?}"
    );
    let t = timeouts();
    assert!(
        waited < t.dead_after + t.io_timeout + Duration::from_secs(5),
        "the lookup waited {waited:?}"
    );
    b.leave().unwrap();
    let (status, out) = a.stop();
    assert!(status.success(), "vmfs mount exited with {status}: {out}");
    check_image(&img);
}

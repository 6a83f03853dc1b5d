//! Two `vmfs mount` processes of one image: data written through one is
//! read through the other, a write-open excludes the other host (EBUSY),
//! and after one is SIGKILLed the other takes the file over within D + 2H.

mod fuse_util;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use fuse_util::{check_image, errno_of, fuse_ready, make_image, mount, timeouts};

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

#[test]
fn two_mounts_share_exclude_and_take_over_after_a_crash() {
    if !fuse_ready("fuse_two_hosts") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 1 << 30);
    let mut a = mount(&img, &dir.path().join("a"), "host-a");
    let b = mount(&img, &dir.path().join("b"), "host-b");
    let pa = a.mountpoint.join("shared.bin");
    let pb = b.mountpoint.join("shared.bin");

    // Written and fsynced through A, read byte-identical through B.
    let data = pattern(3 * (1 << 20) + 12_345, 7);
    {
        let mut f = std::fs::File::create(&pa).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
    }
    let mut seen = Vec::new();
    std::fs::File::open(&pb)
        .unwrap()
        .read_to_end(&mut seen)
        .unwrap();
    assert!(
        seen == data,
        "B read {} bytes, different from A's",
        seen.len()
    );

    // A holds it open for write: B's write-open is refused, reads still work.
    let mut held = OpenOptions::new().write(true).open(&pa).unwrap();
    held.write_all(b"A was here").unwrap();
    let e = errno_of(
        OpenOptions::new().write(true).open(&pb),
        "write-open through B",
    );
    assert_eq!(e, libc::EBUSY, "write-open through B while A writes");
    let e = errno_of(
        OpenOptions::new().append(true).open(&pb),
        "append-open through B",
    );
    assert_eq!(e, libc::EBUSY);
    let mut head = [0u8; 10];
    std::fs::File::open(&pb)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert_eq!(&head, b"A was here");

    // A crashes holding the lock; B gets the file within D + 2H.
    a.kill();
    let killed = Instant::now();
    drop(held);
    let t = timeouts();
    let limit = t.dead_after + 2 * t.heartbeat;
    let mut attempts = 0;
    let mut f = loop {
        attempts += 1;
        match OpenOptions::new().write(true).open(&pb) {
            Ok(f) => break f,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                assert!(
                    killed.elapsed() < limit + Duration::from_secs(5),
                    "B still refused after {:?}",
                    killed.elapsed()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("write-open through B after A died: {e}"),
        }
    };
    let took = killed.elapsed();
    eprintln!(
        "fuse_two_hosts: B write-opened the file {took:?} after A was killed \
         ({attempts} attempts; limit D + 2H = {limit:?})"
    );
    assert!(
        took <= limit,
        "takeover took {took:?}, more than D + 2H = {limit:?}"
    );
    f.write_all(b"B took over").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut now = Vec::new();
    std::fs::File::open(&pb)
        .unwrap()
        .read_to_end(&mut now)
        .unwrap();
    assert_eq!(&now[..11], b"B took over");
    assert_eq!(now.len(), data.len());
    assert_eq!(&now[11..], &data[11..]);

    let (st, out) = b.stop();
    assert!(st.success(), "vmfs mount B exited {st}:\n{out}");
    assert!(out.contains("left the volume cleanly"), "{out}");
    assert!(out.contains("recovered dead host slot"), "{out}");
    let r = check_image(&img);
    eprintln!("fuse_two_hosts: check clean: {r:?}");
}

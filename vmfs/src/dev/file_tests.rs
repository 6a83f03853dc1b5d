//! Tests of `FileDev` on temporary image files, with both engines.

use std::os::unix::fs::MetadataExt;

use super::{BlockDev, CasOutcome, DevError, FileDev, FileDevOptions};

fn open(dir: &tempfile::TempDir, no_uring: bool) -> FileDev {
    FileDev::open(
        dir.path().join("img"),
        FileDevOptions {
            create_size: Some(64 << 20),
            no_uring,
            ..Default::default()
        },
    )
    .unwrap()
}

fn both_engines(f: impl Fn(FileDev)) {
    for no_uring in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        f(open(&dir, no_uring));
    }
}

#[test]
fn creates_sparse_image_of_requested_size() {
    both_engines(|d| {
        assert_eq!(d.size(), 64 << 20);
        assert_eq!(d.logical_block_size(), 512);
        let blocks = std::fs::metadata(d.path()).unwrap().blocks();
        assert!(
            blocks < 64,
            "fresh image should be sparse, has {blocks} blocks"
        );
    });
}

#[test]
fn read_write_round_trip_and_flush() {
    both_engines(|d| {
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
        d.write_at(&data, 1 << 20).unwrap();
        d.flush().unwrap();
        let mut back = vec![0u8; data.len()];
        d.read_at(&mut back, 1 << 20).unwrap();
        assert_eq!(back, data);
    });
}

#[test]
fn unmap_punches_a_hole_and_reads_zero() {
    both_engines(|d| {
        let data = vec![0xabu8; 4 << 20];
        d.write_at(&data, 8 << 20).unwrap();
        d.flush().unwrap();
        let before = std::fs::metadata(d.path()).unwrap().blocks();
        d.unmap(8 << 20, 4 << 20).unwrap();
        let after = std::fs::metadata(d.path()).unwrap().blocks();
        assert!(after + 4 * 2048 <= before, "blocks {before} -> {after}");
        let mut back = vec![1u8; 4 << 20];
        d.read_at(&mut back, 8 << 20).unwrap();
        assert!(back.iter().all(|&b| b == 0));
        assert!(d.capabilities().unmap_zeroes);
    });
}

#[test]
fn write_zeroes_zeroes() {
    both_engines(|d| {
        d.write_at(&[9u8; 4096], 0).unwrap();
        d.write_zeroes(512, 1024).unwrap();
        let mut back = vec![0u8; 4096];
        d.read_at(&mut back, 0).unwrap();
        assert!(back[..512].iter().all(|&b| b == 9));
        assert!(back[512..1536].iter().all(|&b| b == 0));
        assert!(back[1536..].iter().all(|&b| b == 9));
    });
}

#[test]
fn compare_and_write_semantics() {
    both_engines(|d| {
        let zero = [0u8; 512];
        let one = [1u8; 512];
        assert_eq!(
            d.compare_and_write(4096, &zero, &one).unwrap(),
            CasOutcome::Done
        );
        assert_eq!(
            d.compare_and_write(4096, &zero, &one).unwrap(),
            CasOutcome::Miscompare(one.to_vec())
        );
        assert!(matches!(
            d.compare_and_write(4096, &zero, &one[..100]),
            Err(DevError::CasLength { .. })
        ));
    });
}

#[test]
fn bad_requests_are_typed_errors() {
    both_engines(|d| {
        let mut b = vec![0u8; 100];
        assert!(matches!(
            d.read_at(&mut b, 0),
            Err(DevError::Misaligned { .. })
        ));
        let mut b = vec![0u8; 512];
        assert!(matches!(
            d.read_at(&mut b, 64 << 20),
            Err(DevError::OutOfRange { .. })
        ));
        assert!(matches!(
            d.unmap(0, u64::MAX - 511),
            Err(DevError::OutOfRange { .. })
        ));
        let msg = d.read_at(&mut b, 64 << 20).unwrap_err().to_string();
        assert!(msg.contains("img") && msg.contains("read"), "{msg}");
    });
}

#[test]
fn read_only_refuses_writes_and_missing_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir, false));
    let ro = FileDev::open(
        dir.path().join("img"),
        FileDevOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(ro.write_at(&[0u8; 512], 0).is_err());
    let mut b = [0u8; 512];
    ro.read_at(&mut b, 0).unwrap();
    let missing = FileDev::open(dir.path().join("nope"), FileDevOptions::default()).unwrap_err();
    assert!(missing.to_string().contains("nope"), "{missing}");
}

#[test]
fn concurrent_threads_cas_exactly() {
    both_engines(|d| {
        let d = std::sync::Arc::new(d);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let d = d.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let mut cur = [0u8; 512];
                        d.read_at(&mut cur, 0).unwrap();
                        loop {
                            let mut next = cur;
                            let v = u64::from_le_bytes(cur[..8].try_into().unwrap()) + 1;
                            next[..8].copy_from_slice(&v.to_le_bytes());
                            match d.compare_and_write(0, &cur, &next).unwrap() {
                                CasOutcome::Done => break,
                                CasOutcome::Miscompare(now) => cur.copy_from_slice(&now),
                                CasOutcome::Indeterminate => unreachable!("FileDev never"),
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut b = [0u8; 512];
        d.read_at(&mut b, 0).unwrap();
        assert_eq!(u64::from_le_bytes(b[..8].try_into().unwrap()), 800);
    });
}

/// Drop the image's clean pages from the page cache (after a sync).
fn evict(d: &FileDev) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(d.path()).unwrap();
    f.sync_all().unwrap();
    // SAFETY: plain syscall on a descriptor we hold; no pointers.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0);
}

#[test]
fn cached_view_shows_the_cached_bytes_and_their_later_changes() {
    if std::env::var_os("VMFS_NO_MMAP_READ").is_some_and(|v| v == "1") {
        println!("SKIP: cached_view_shows_the_cached_bytes: VMFS_NO_MMAP_READ=1");
        return;
    }
    both_engines(|d| {
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 13 % 251) as u8).collect();
        d.write_at(&data, 4 << 20).unwrap();
        // Unaligned ranges are fine: it is memory, not I/O.
        let v = d.cached_view((4 << 20) + 7, 1000).unwrap().expect("cached");
        assert_eq!(v, &data[7..1007]);
        let v = d.cached_view(4 << 20, 1 << 20).unwrap().expect("cached");
        assert_eq!(v, &data[..]);
        // A later write through the device shows through the mapping
        // (one page cache), as it would through a read.
        d.write_at(&[0xeeu8; 4096], (4 << 20) + 8192).unwrap();
        let v = d.cached_view((4 << 20) + 8192, 4096).unwrap().unwrap();
        assert!(v.iter().all(|&b| b == 0xee));
        // So does a write by another open of the image (another host
        // process on this machine).
        {
            use std::os::unix::fs::FileExt;
            let other = std::fs::OpenOptions::new()
                .write(true)
                .open(d.path())
                .unwrap();
            other.write_all_at(&[0x5au8; 512], 4 << 20).unwrap();
        }
        let v = d.cached_view(4 << 20, 512).unwrap().unwrap();
        assert!(v.iter().all(|&b| b == 0x5a));
        // And a punched hole reads as zeros.
        d.unmap(4 << 20, 4096).unwrap();
        d.read_at(&mut [0u8; 4096], 4 << 20).unwrap();
        let v = d.cached_view(4 << 20, 4096).unwrap().unwrap();
        assert!(v.iter().all(|&b| b == 0));
    });
}

#[test]
fn cached_view_declines_uncached_bytes_and_refuses_ranges_outside() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(&dir, true);
    d.write_at(&vec![3u8; 1 << 20], 8 << 20).unwrap();
    d.flush().unwrap();
    evict(&d);
    // Not in the page cache: copying from the mapping would wait for
    // the disk, so no view.
    assert_eq!(d.cached_view(8 << 20, 1 << 20).unwrap(), None);
    assert!(matches!(
        d.cached_view((64 << 20) - 512, 1024),
        Err(DevError::OutOfRange { .. })
    ));
    assert!(matches!(
        d.cached_view(u64::MAX - 10, 100),
        Err(DevError::OutOfRange { .. })
    ));
}

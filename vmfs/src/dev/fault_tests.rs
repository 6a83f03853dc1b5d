//! Tests of `FaultDev`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::dev::MemDev;

fn dev(seed: u64) -> (Arc<MemDev>, FaultDev) {
    let mem = Arc::new(MemDev::new(1 << 20, 512));
    let f = FaultDev::new(mem.clone(), seed);
    (mem, f)
}

fn read(d: &dyn BlockDev, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    d.read_at(&mut b, off).unwrap();
    b
}

#[test]
fn crash_loses_unflushed_and_keeps_flushed() {
    let (mem, f) = dev(1);
    f.write_at(&[1u8; 512], 0).unwrap();
    f.flush().unwrap();
    f.write_at(&[2u8; 512], 512).unwrap();
    f.write_at(&[3u8; 512], 0).unwrap();
    // The host sees its own cached writes.
    assert_eq!(read(&f, 0, 512), vec![3u8; 512]);
    assert_eq!(read(mem.as_ref(), 0, 512), vec![1u8; 512]);
    assert_eq!(f.unflushed_writes(), 2);
    f.crash(CrashMode::DropAll).unwrap();
    assert_eq!(f.unflushed_writes(), 0);
    assert_eq!(read(&f, 0, 512), vec![1u8; 512]);
    assert_eq!(read(&f, 512, 512), vec![0u8; 512]);
    assert_eq!(f.flush_count(), 1);
}

#[test]
fn keep_prefix_lands_exactly_the_prefix() {
    let (_mem, f) = dev(2);
    for i in 0..4u8 {
        f.write_at(&[i + 1; 512], u64::from(i) * 512).unwrap();
    }
    f.crash(CrashMode::KeepPrefix(2)).unwrap();
    assert_eq!(read(&f, 0, 512), vec![1u8; 512]);
    assert_eq!(read(&f, 512, 512), vec![2u8; 512]);
    assert_eq!(read(&f, 1024, 512), vec![0u8; 512]);
    assert_eq!(read(&f, 1536, 512), vec![0u8; 512]);
}

#[test]
fn random_subset_replays_with_the_same_seed() {
    let outcome = |seed| {
        let (mem, f) = dev(seed);
        for i in 0..32u64 {
            f.write_at(&[0xee; 512], i * 512).unwrap();
        }
        f.crash(CrashMode::RandomSubset).unwrap();
        mem.snapshot()
    };
    assert_eq!(outcome(7), outcome(7));
    let landed = outcome(7)[..32 * 512]
        .chunks(512)
        .filter(|c| c[0] == 0xee)
        .count();
    assert!(landed > 0 && landed < 32, "{landed} of 32 landed");
}

#[test]
fn torn_writes_land_sector_prefixes_and_torn_sectors() {
    let mut saw_partial = false;
    let mut saw_torn_sector = false;
    for seed in 0..64 {
        let (mem, f) = dev(seed);
        f.write_at(&[0x55u8; 4096], 8192).unwrap();
        f.crash(CrashMode::Torn).unwrap();
        let img = mem.snapshot();
        let region = &img[8192..8192 + 4096];
        let new_bytes = region.iter().filter(|&&b| b == 0x55).count();
        if new_bytes > 0 && new_bytes < 4096 {
            saw_partial = true;
        }
        if new_bytes % 512 != 0 {
            saw_torn_sector = true;
        }
        // Whatever landed is a prefix of the write.
        let first_old = region.iter().position(|&b| b != 0x55).unwrap_or(4096);
        assert!(region[first_old..].iter().all(|&b| b == 0));
    }
    assert!(saw_partial && saw_torn_sector);
}

#[test]
fn eio_ranges_and_device_loss() {
    let (_mem, f) = dev(3);
    f.fail_range(4096..8192, FaultOps::WRITES);
    assert!(f.write_at(&[1u8; 512], 4096).is_err());
    f.write_at(&[1u8; 512], 0).unwrap();
    let mut b = [0u8; 512];
    f.read_at(&mut b, 4096).unwrap();
    f.fail_all(true);
    let e = f.read_at(&mut b, 0).unwrap_err();
    assert!(e.to_string().contains("read"), "{e}");
    assert!(f.flush().is_err());
    f.clear_faults();
    f.flush().unwrap();
}

#[test]
fn pause_blocks_until_resume() {
    let (_mem, f) = dev(4);
    let f = Arc::new(f);
    f.pause();
    let g = f.clone();
    let t = std::thread::spawn(move || {
        let start = Instant::now();
        g.write_at(&[1u8; 512], 0).unwrap();
        start.elapsed()
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(!t.is_finished());
    f.resume();
    assert!(t.join().unwrap() >= Duration::from_millis(90));
}

#[test]
fn cas_lands_through_the_cache_and_supersedes_older_cached_writes() {
    let (mem, f) = dev(5);
    f.write_at(&[7u8; 1024], 0).unwrap();
    let out = f.compare_and_write(512, &[7u8; 512], &[9u8; 512]).unwrap();
    assert_eq!(out, CasOutcome::Done);
    assert_eq!(
        read(mem.as_ref(), 512, 512),
        vec![9u8; 512],
        "durable at once"
    );
    f.flush().unwrap();
    assert_eq!(
        read(&f, 512, 512),
        vec![9u8; 512],
        "old cached write must not undo it"
    );
    assert_eq!(read(&f, 0, 512), vec![7u8; 512]);
}

#[test]
fn indeterminate_cas_is_resolved_by_rereading() {
    let (_mem, f) = dev(6);
    f.set_cas_indeterminate(1.0);
    let (mut landed, mut lost) = (0, 0);
    for i in 0..40u64 {
        let mut new = [0u8; 512];
        new[..8].copy_from_slice(&(i + 1).to_le_bytes());
        let cur = read(&f, 0, 512);
        assert_eq!(
            f.compare_and_write(0, &cur, &new).unwrap(),
            CasOutcome::Indeterminate
        );
        if read(&f, 0, 512) == new {
            landed += 1;
        } else {
            assert_eq!(read(&f, 0, 512), cur);
            lost += 1;
        }
    }
    assert!(landed > 0 && lost > 0, "landed {landed}, lost {lost}");
}

#[test]
fn two_hosts_share_one_disk_with_private_caches() {
    let mem: SharedDev = Arc::new(MemDev::new(1 << 20, 512));
    let a = FaultDev::new(mem.clone(), 1);
    let b = FaultDev::new(mem.clone(), 2);
    a.write_at(&[1u8; 512], 0).unwrap();
    assert_eq!(
        read(&b, 0, 512),
        vec![0u8; 512],
        "unflushed: invisible to others"
    );
    a.flush().unwrap();
    assert_eq!(read(&b, 0, 512), vec![1u8; 512]);
    assert_eq!(
        b.compare_and_write(512, &[0u8; 512], &[2u8; 512]).unwrap(),
        CasOutcome::Done
    );
    assert!(matches!(
        a.compare_and_write(512, &[0u8; 512], &[3u8; 512]).unwrap(),
        CasOutcome::Miscompare(_)
    ));
}

#[test]
fn recording_logs_writes_flushes_and_cas() {
    let (_mem, f) = dev(8);
    f.start_recording();
    f.write_at(&[1u8; 512], 0).unwrap();
    f.flush().unwrap();
    f.compare_and_write(512, &[0u8; 512], &[2u8; 512]).unwrap();
    let log = f.take_log();
    assert_eq!(log.len(), 3);
    assert!(matches!(log[1], LogEntry::Flush));
    assert!(matches!(log[2], LogEntry::Cas { offset: 512, .. }));
}

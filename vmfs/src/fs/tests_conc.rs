//! Reads and overwrites run outside the `Fs` mutex under an open file's
//! data guard: blocks freed by truncate or punch while readers are in
//! flight must never show another file's bytes to them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tests::{stop, Rig};
use super::*;

const MIB: u64 = 1 << 20;
/// Blocks of the file being read (and truncated and punched).
const VICTIM_BLOCKS: u64 = 8;
/// How long the threads race.
const RACE: Duration = Duration::from_secs(4);

/// Fill `fh` with `byte` over `blocks` MiB, stopping quietly at ENOSPC.
fn fill(fs: &Fs, fh: u64, byte: u8, blocks: u64) {
    let chunk = vec![byte; MIB as usize];
    for b in 0..blocks {
        match fs.write(fh, b * MIB, &chunk) {
            Ok(_) => {}
            Err(FsError::NoSpace(_)) => return,
            Err(e) => panic!("writing block {b}: {e}"),
        }
    }
}

#[test]
fn readers_never_see_blocks_freed_under_them() {
    let r = Rig::new(160 << 20, None);
    let fs = r.fs("a");
    let root = fs.root();
    // Leave only a few blocks beyond the victim's free, so that the other
    // file's blocks are the victim's freed ones, reused at once.
    let free = fs.statfs().unwrap().blocks_free;
    let spare = 3;
    assert!(free > VICTIM_BLOCKS + spare, "{free} blocks free");
    let filler = fs.create(root, b"filler", 0o644, 0, 0).unwrap();
    let fh = fs.open(filler.ino, true).unwrap();
    fill(&fs, fh, 0x11, free - VICTIM_BLOCKS - spare);
    fs.close(fh).unwrap();

    let victim = fs.create(root, b"victim", 0o644, 0, 0).unwrap().ino;
    let vfh = fs.open(victim, true).unwrap();
    fill(&fs, vfh, 0xAA, VICTIM_BLOCKS);

    let stop_flag = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..4u64 {
        let (fs, stop_flag, reads) = (fs.clone(), stop_flag.clone(), reads.clone());
        threads.push(std::thread::spawn(move || {
            let fh = fs.open(victim, false).unwrap();
            let mut buf = Vec::new();
            let mut i = t;
            while !stop_flag.load(Ordering::Relaxed) {
                let off = (i % VICTIM_BLOCKS) * MIB + (i % 3) * 4096;
                let n = fs.read_into(fh, off, MIB as usize, &mut buf).unwrap();
                if let Some(p) = buf[..n].iter().position(|&b| b != 0xAA && b != 0) {
                    panic!(
                        "reader {t}: byte {:#x} at {} of the victim: another file's data",
                        buf[p],
                        off + p as u64
                    );
                }
                reads.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            fs.close(fh).unwrap();
        }));
    }
    // Another file takes whatever is free, over and over.
    let other = {
        let (fs, stop_flag) = (fs.clone(), stop_flag.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop_flag.load(Ordering::Relaxed) {
                let a = fs.create(root, b"other", 0o644, 0, 0).unwrap();
                let fh = fs.open(a.ino, true).unwrap();
                fill(&fs, fh, 0xBB, VICTIM_BLOCKS);
                fs.close(fh).unwrap();
                fs.unlink(root, b"other").unwrap();
                rounds += 1;
            }
            rounds
        })
    };
    // The victim's blocks are freed and written again, by truncate and by
    // punching holes, while the readers run.
    let start = Instant::now();
    let mut round = 0u64;
    while start.elapsed() < RACE {
        if round % 2 == 0 {
            let sa = SetAttr {
                size: Some(MIB / 2),
                ..SetAttr::default()
            };
            fs.setattr(victim, &sa).unwrap();
        } else {
            fs.fallocate(vfh, MIB, (VICTIM_BLOCKS - 1) * MIB, Falloc::PunchHole)
                .unwrap();
        }
        std::thread::yield_now();
        fill(&fs, vfh, 0xAA, VICTIM_BLOCKS);
        round += 1;
    }
    stop_flag.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a reader saw another file's data");
    }
    let other_rounds = other.join().unwrap();
    assert!(round > 10 && other_rounds > 10 && reads.load(Ordering::Relaxed) > 100);
    fs.close(vfh).unwrap();
    stop(fs);
    r.check();
}

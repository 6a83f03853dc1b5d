//! Reads and overwrites run outside the `Fs` mutex under an open file's
//! data guard: blocks freed by truncate or punch while readers are in
//! flight must never show another file's bytes to them, and overwrites in
//! flight must never land in another file.

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
/// Returns the bytes written.
fn fill(fs: &Fs, fh: u64, byte: u8, blocks: u64) -> u64 {
    let chunk = vec![byte; MIB as usize];
    let mut done = 0;
    for b in 0..blocks {
        match fs.write(fh, b * MIB, &chunk) {
            Ok(n) if n == chunk.len() => done += n as u64,
            Ok(n) => return done + n as u64,
            Err(FsError::NoSpace(_)) => return done,
            Err(e) => panic!("writing block {b}: {e}"),
        }
    }
    done
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
    // The victim is overwritten in place (4 KiB pieces) through a second
    // write handle.
    let overwriter = {
        let (fs, stop_flag) = (fs.clone(), stop_flag.clone());
        std::thread::spawn(move || {
            let fh = fs.open(victim, true).unwrap();
            let piece = vec![0xAAu8; 4096];
            let mut i = 0u64;
            while !stop_flag.load(Ordering::Relaxed) {
                let off = (i * 7919 % (VICTIM_BLOCKS * 256)) * 4096;
                match fs.write(fh, off, &piece) {
                    Ok(_) | Err(FsError::NoSpace(_)) => {}
                    Err(e) => panic!("overwriting the victim at {off}: {e}"),
                }
                i += 1;
            }
            fs.close(fh).unwrap();
        })
    };
    // Another file takes whatever is free, over and over, and must read
    // back only its own bytes.
    let other = {
        let (fs, stop_flag) = (fs.clone(), stop_flag.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            let mut buf = Vec::new();
            while !stop_flag.load(Ordering::Relaxed) {
                let a = fs.create(root, b"other", 0o644, 0, 0).unwrap();
                let fh = fs.open(a.ino, true).unwrap();
                let written = fill(&fs, fh, 0xBB, VICTIM_BLOCKS);
                for b in 0..written.div_ceil(MIB) {
                    let len = (written - b * MIB).min(MIB) as usize;
                    let n = fs.read_into(fh, b * MIB, len, &mut buf).unwrap();
                    assert_eq!(n, len, "other file: short read at block {b}");
                    if let Some(p) = buf[..n].iter().position(|&x| x != 0xBB) {
                        panic!(
                            "other file: byte {:#x} at {}: a write to the victim landed here",
                            buf[p],
                            b * MIB + p as u64
                        );
                    }
                }
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
    overwriter.join().expect("overwriting the victim");
    let other_rounds = other
        .join()
        .expect("another file's blocks were written by the victim's writer");
    assert!(round > 10 && other_rounds > 10 && reads.load(Ordering::Relaxed) > 100);
    fs.close(vfh).unwrap();
    stop(fs);
    r.check();
}

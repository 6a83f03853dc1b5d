//! Test host for the compare-and-write stress test: increments a counter in
//! one sector of an image file N times by compare-and-write, retrying on
//! miscompare. Usage: cas-worker IMAGE OFFSET COUNT

use vmfs::dev::{BlockDev, CasOutcome, FileDev, FileDevOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: cas-worker IMAGE OFFSET COUNT");
        std::process::exit(2);
    }
    let offset: u64 = args[2].parse().expect("OFFSET is a number");
    let count: u64 = args[3].parse().expect("COUNT is a number");
    let dev = FileDev::open(&args[1], FileDevOptions::default()).unwrap_or_else(|e| {
        eprintln!("cas-worker: {e}");
        std::process::exit(1);
    });
    println!("engine {}", dev.engine_name());
    let mut cur = [0u8; 512];
    dev.read_at(&mut cur, offset).expect("read");
    let mut retries = 0u64;
    for _ in 0..count {
        loop {
            let mut next = cur;
            let v = u64::from_le_bytes(cur[..8].try_into().expect("8 bytes")) + 1;
            next[..8].copy_from_slice(&v.to_le_bytes());
            match dev
                .compare_and_write(offset, &cur, &next)
                .expect("compare-and-write")
            {
                CasOutcome::Done => {
                    cur = next;
                    break;
                }
                CasOutcome::Miscompare(now) => {
                    retries += 1;
                    cur.copy_from_slice(&now);
                }
                CasOutcome::Indeterminate => panic!("FileDev never reports Indeterminate"),
            }
        }
    }
    println!("retries {retries}");
}

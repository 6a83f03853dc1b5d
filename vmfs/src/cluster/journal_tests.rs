//! Journal: commit, replay, idempotence, torn tail, stale generations.

use std::sync::Arc;

use super::*;
use crate::dev::{CrashMode, FaultDev, MemDev, SharedDev};
use crate::format::{Holder, LockMode};

const LOCK: u64 = 1 << 20;
const BLOCK: u64 = 2 << 20;

fn setup() -> (SharedDev, JournalLocation) {
    let mem: SharedDev = Arc::new(MemDev::new(8 << 20, 512));
    let mut l = LockRecord::free(LOCK, 7);
    l.lock_gen = 5;
    l.mode = LockMode::Exclusive;
    l.holders = vec![Holder { slot: 0, hb_gen: 3 }];
    mem.write_at(&l.encode(), LOCK).unwrap();
    let loc = JournalLocation {
        addr: 4 << 20,
        size: 1 << 20,
        slot: 0,
        volume_uuid: [7; 16],
    };
    (mem, loc)
}

fn txn(fill: u8, gen: u64) -> Txn {
    let mut t = Txn::default();
    t.add(BLOCK, vec![fill; 4096], LOCK, gen);
    t.add(BLOCK + 8192, vec![fill; 512], LOCK, gen);
    t
}

fn read(dev: &SharedDev, addr: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    dev.read_at(&mut b, addr).unwrap();
    b
}

#[test]
fn committed_but_unapplied_transactions_replay_once() {
    let (dev, loc) = setup();
    let mut j = Journal::start(dev.as_ref(), loc, 3).unwrap();
    j.commit(dev.as_ref(), &txn(1, 5)).unwrap();
    j.commit(dev.as_ref(), &txn(2, 5)).unwrap();
    // Crash before applying: the blocks are still zero.
    assert_eq!(read(&dev, BLOCK, 4096), vec![0; 4096]);
    let r = replay(dev.as_ref(), loc).unwrap();
    assert_eq!(r.records, 2);
    assert_eq!(r.blocks_applied, 4);
    assert_eq!(read(&dev, BLOCK, 4096), vec![2; 4096]);
    assert_eq!(read(&dev, BLOCK + 8192, 512), vec![2; 512]);
    // The journal is emptied: a second replay does nothing.
    assert_eq!(replay(dev.as_ref(), loc).unwrap(), ReplayReport::default());
}

#[test]
fn records_under_an_older_lock_generation_are_skipped() {
    let (dev, loc) = setup();
    let mut j = Journal::start(dev.as_ref(), loc, 3).unwrap();
    j.run(dev.as_ref(), &txn(1, 5)).unwrap();
    // The lock moved on (released, retaken by another host who wrote 9s).
    let mut l = LockRecord::decode(&read(&dev, LOCK, 512), LOCK).unwrap();
    l.lock_gen = 7;
    dev.write_at(&l.encode(), LOCK).unwrap();
    dev.write_at(&[9u8; 4096], BLOCK).unwrap();
    let r = replay(dev.as_ref(), loc).unwrap();
    assert_eq!((r.blocks_applied, r.blocks_skipped), (0, 2));
    assert_eq!(read(&dev, BLOCK, 4096), vec![9; 4096]);
}

#[test]
fn other_generations_and_volumes_are_ignored() {
    let (dev, loc) = setup();
    let mut j = Journal::start(dev.as_ref(), loc, 3).unwrap();
    j.commit(dev.as_ref(), &txn(1, 5)).unwrap();
    // A later mount under generation 4 restarts the journal: the old record
    // is never replayed.
    let _j4 = Journal::start(dev.as_ref(), loc, 4).unwrap();
    assert_eq!(replay(dev.as_ref(), loc).unwrap().records, 0);
    let (dev, loc) = setup();
    let mut j = Journal::start(dev.as_ref(), loc, 3).unwrap();
    j.commit(dev.as_ref(), &txn(1, 5)).unwrap();
    let other = JournalLocation {
        volume_uuid: [8; 16],
        ..loc
    };
    assert_eq!(replay(dev.as_ref(), other).unwrap().records, 0);
}

#[test]
fn torn_tail_ends_the_log_and_earlier_records_survive() {
    for seed in 0..32 {
        let (mem, loc) = setup();
        let f = FaultDev::new(mem.clone(), seed);
        let mut j = Journal::start(&f, loc, 3).unwrap();
        j.commit(&f, &txn(1, 5)).unwrap();
        // The second commit's flush never happens: write it, then crash torn.
        let rec = encode_record(&loc.volume_uuid, 3, 2, loc.addr + j.tail, &txn(2, 5));
        f.write_at(&rec, loc.addr + j.tail).unwrap();
        f.crash(CrashMode::Torn).unwrap();
        let r = replay(mem.as_ref(), loc).unwrap();
        assert!(r.records == 1 || r.records == 2, "seed {seed}: {r:?}");
        let b = read(&mem, BLOCK, 4096);
        assert!(
            b == vec![1; 4096] || (r.records == 2 && b == vec![2; 4096]),
            "seed {seed}"
        );
    }
}

#[test]
fn checkpoint_wraps_and_old_records_never_replay() {
    let (dev, loc) = setup();
    let mut j = Journal::start(dev.as_ref(), loc, 3).unwrap();
    // Each record is 512 + 512 + 4608 bytes; 1 MiB holds ~180: go round twice.
    for i in 0..400u32 {
        j.run(dev.as_ref(), &txn((i % 250) as u8, 5)).unwrap();
    }
    let r = replay(dev.as_ref(), loc).unwrap();
    assert!(r.records < 200, "{r:?}");
    assert_eq!(read(&dev, BLOCK, 4096), vec![(399 % 250) as u8; 4096]);
}

#[test]
fn oversized_and_misaligned_transactions_are_refused() {
    let (dev, loc) = setup();
    let mut j = Journal::start(dev.as_ref(), loc, 3).unwrap();
    let mut t = Txn::default();
    t.add(BLOCK, vec![0; 2 << 20], LOCK, 5);
    assert!(j.commit(dev.as_ref(), &t).is_err());
    let mut t = Txn::default();
    t.add(BLOCK, vec![0; 100], LOCK, 5);
    assert!(j.commit(dev.as_ref(), &t).is_err());
}

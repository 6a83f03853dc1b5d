//! Offline recovery: a crashed host's committed transaction is replayed,
//! its slot freed, and its locks are stale at once for the next host.

use std::sync::Arc;
use std::time::Duration;

use super::recover_offline;
use crate::cluster::{Host, HostConfig, ManualClock, Timeouts, Txn};
use crate::dev::{BlockDev, MemDev, SharedDev};
use crate::format::{HeartbeatSlot, LockMode, LockRecord, SlotState};
use crate::volume::{mkfs, MkfsOptions, Volume};

fn volume() -> SharedDev {
    let dev: SharedDev = Arc::new(MemDev::new(128 << 20, 512));
    mkfs(
        &dev,
        &MkfsOptions {
            label: "off".into(),
            max_hosts: 4,
            journal_size: 1 << 20,
            timeouts: Timeouts::scaled(1.0 / 30.0).to_minimums(),
            ..Default::default()
        },
        false,
    )
    .unwrap();
    dev
}

fn host(dev: &SharedDev, clock: &Arc<ManualClock>) -> Host {
    let mut cfg = HostConfig::new("h");
    cfg.clock = clock.clone();
    cfg.join_timeout = Duration::from_secs(5);
    Host::join(Volume::open(dev.clone()).unwrap(), cfg).unwrap()
}

#[test]
fn offline_recovery_replays_frees_the_slot_and_makes_locks_stale() {
    let dev = volume();
    let clock = Arc::new(ManualClock::new(Duration::from_secs(100)));
    let a = host(&dev, &clock);
    let v = Volume::open(dev.clone()).unwrap();
    let l = v.inode_addr(7);
    dev.write_at(&LockRecord::free(l, 7).encode(), l).unwrap();
    let held = a.try_lock(l, 7, LockMode::Exclusive).unwrap().unwrap();
    let mut txn = Txn::default();
    txn.add(l + 512, vec![0x3c; 512], l, held.lock_gen);
    {
        let dev = a.dev();
        let mut j = crate::cluster::host::lock(&a.sh.journal);
        j.commit(&dev, &txn).unwrap();
    }
    let (slot, gen) = (a.slot(), a.holder().hb_gen);
    a.abandon();

    let done = recover_offline(&v).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].slot, done[0].hb_gen), (slot, gen));
    assert_eq!(done[0].replay.records, 1);
    let mut blk = [0u8; 512];
    dev.read_at(&mut blk, l + 512).unwrap();
    assert_eq!(blk, [0x3c; 512], "the committed transaction was replayed");
    let sa = v.heartbeat_slot_addr(slot);
    let mut b = [0u8; 512];
    dev.read_at(&mut b, sa).unwrap();
    let s = HeartbeatSlot::decode(&b, sa).unwrap();
    assert_eq!((s.state, s.hb_gen), (SlotState::Free, gen + 1));

    // Nothing left to do the second time.
    assert!(recover_offline(&v).unwrap().is_empty());
    // The next host takes the dead host's lock without waiting for D.
    let b = host(&dev, &clock);
    assert!(b.try_lock(l, 7, LockMode::Exclusive).unwrap().is_some());
}

#[test]
fn a_live_host_wrongly_recovered_offline_fences_itself_at_its_next_beat() {
    let dev = volume();
    let clock = Arc::new(ManualClock::new(Duration::from_secs(100)));
    let a = host(&dev, &clock);
    a.beat().unwrap();
    let v = Volume::open(dev.clone()).unwrap();
    // Misuse: offline recovery while A runs. A's slot generation moves on,
    // so A's next beat loses its compare-and-write and A stops all I/O.
    assert_eq!(recover_offline(&v).unwrap().len(), 1);
    assert!(a.beat().is_err());
    assert!(a.is_fenced());
    assert!(a.dev().write_at(&[0u8; 512], v.inode_addr(9)).is_err());
}

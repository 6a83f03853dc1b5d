//! Virtual disks, swap files and the hand-off on an in-memory volume with
//! several in-process hosts (timeouts scaled by 1/30: D = 833 ms).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::{Host, HostConfig, Timeouts, TransferOutcome};
use crate::dev::{MemDev, SharedDev};
use crate::fs::Fs;
use crate::vmdk::{create_flat_disk, create_snapshot, FlatDiskOptions, Provisioning};
use crate::volume::{mkfs, MkfsOptions, Volume};

use super::swap::{reclaim, SwapFile};
use super::*;

fn volume() -> SharedDev {
    let dev: SharedDev = Arc::new(MemDev::new(512 << 20, 512));
    mkfs(
        &dev,
        &MkfsOptions {
            label: "disk".into(),
            max_hosts: 8,
            journal_size: 1 << 20,
            timeouts: Timeouts::scaled(1.0 / 30.0).to_minimums(),
            ..Default::default()
        },
        false,
    )
    .unwrap();
    dev
}

fn mount(dev: &SharedDev, name: &str) -> Fs {
    let h = Host::join(Volume::open(dev.clone()).unwrap(), HostConfig::new(name)).unwrap();
    h.start();
    Fs::mount(h).unwrap()
}

fn make_disk(fs: &Fs, path: &str, size: u64, p: Provisioning) {
    let _ = fs.mkdir(fs.root(), b"vm", 0o755, 0, 0);
    let store = FsStore::new(fs.clone(), WriteLock::Exclusive, ReadLock::Shared);
    let opts = FlatDiskOptions {
        provisioning: p,
        ..Default::default()
    };
    create_flat_disk(&store, path, size, &opts).unwrap();
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

#[test]
fn thin_disk_reads_writes_discards_like_a_model() {
    let dev = volume();
    let fs = mount(&dev, "a");
    make_disk(&fs, "vm/d.vmdk", 16 << 20, Provisioning::Thin);
    let disk = VirtualDisk::open(&fs, "vm/d.vmdk", &DiskOptions::default()).unwrap();
    let mut model = vec![0u8; 16 << 20];
    let flat = crate::disk::swap::lookup_path(&fs, "vm/d-flat.vmdk").unwrap();
    assert_eq!(
        fs.getattr(flat).unwrap().allocated,
        0,
        "thin: nothing allocated"
    );
    let writes = [
        (0u64, 4096usize),
        (5 << 20, 70_000),
        (3 << 20, 512),
        ((16 << 20) - 4096, 4096),
    ];
    let futs: Vec<_> = writes
        .iter()
        .enumerate()
        .map(|(i, &(off, len))| {
            let d = pattern(i as u64, len);
            model[off as usize..off as usize + len].copy_from_slice(&d);
            disk.write(off, d)
        })
        .collect();
    for f in futs {
        f.wait().unwrap();
    }
    disk.flush().wait().unwrap();
    assert!(
        fs.getattr(flat).unwrap().allocated > 0,
        "first writes allocate"
    );
    for &(off, len) in &writes {
        let got = disk.read(off, len + 100).wait();
        let end = (off as usize + len + 100).min(16 << 20);
        if end - off as usize == len + 100 {
            assert_eq!(got.unwrap(), model[off as usize..end]);
        } else {
            assert!(got.is_err(), "read past the end must fail");
        }
    }
    // Discard a whole 1 MiB block: it reads as zeros and its space returns.
    let before = fs.getattr(flat).unwrap().allocated;
    disk.discard(5 << 20, 1 << 20).wait().unwrap();
    model[5 << 20..6 << 20].fill(0);
    assert!(fs.getattr(flat).unwrap().allocated < before);
    disk.write_zeroes(3 << 20, 256).wait().unwrap();
    model[3 << 20..(3 << 20) + 256].fill(0);
    let all = disk.read(0, 16 << 20).wait().unwrap();
    assert!(all == model, "whole disk differs from the model");
    disk.close().unwrap();
}

#[test]
fn snapshot_chain_reads_through_and_parents_are_shared_read() {
    let dev = volume();
    let fs = mount(&dev, "a");
    make_disk(&fs, "vm/base.vmdk", 8 << 20, Provisioning::ZeroedThick);
    let disk = VirtualDisk::open(&fs, "vm/base.vmdk", &DiskOptions::default()).unwrap();
    disk.write(0, vec![1; 8192]).wait().unwrap();
    disk.close().unwrap();
    let store = FsStore::new(fs.clone(), WriteLock::Exclusive, ReadLock::Shared);
    create_snapshot(&store, "vm/base.vmdk", "vm/base-000001.vmdk", 8).unwrap();
    let disk = VirtualDisk::open(&fs, "vm/base-000001.vmdk", &DiskOptions::default()).unwrap();
    disk.write(4096, vec![2; 100]).wait().unwrap();
    let got = disk.read(0, 8192).wait().unwrap();
    let mut want = vec![1u8; 8192];
    want[4096..4196].fill(2);
    assert_eq!(got, want);
    // Another host may read the base (SHARED_READ) but not write it.
    let fs_b = mount(&dev, "b");
    let ro = DiskOptions {
        lock: DiskLock::SharedRead,
        ..Default::default()
    };
    let base_b = VirtualDisk::open(&fs_b, "vm/base.vmdk", &ro).unwrap();
    assert_eq!(base_b.read(0, 8192).wait().unwrap(), vec![1; 8192]);
    assert!(
        base_b.write(0, vec![0; 512]).wait().is_err(),
        "read-only disk"
    );
    let e = VirtualDisk::open(&fs_b, "vm/base.vmdk", &DiskOptions::default()).unwrap_err();
    assert!(e.is_busy(), "base is SHARED_READ elsewhere: {e}");
    let e = VirtualDisk::open(&fs_b, "vm/base-000001.vmdk", &ro).unwrap_err();
    assert!(e.is_busy(), "top is EXCLUSIVE on a: {e}");
    base_b.close().unwrap();
    disk.close().unwrap();
}

#[test]
fn multi_writer_needs_eager_zeroed_and_shares_writes() {
    let dev = volume();
    let (fa, fb) = (mount(&dev, "a"), mount(&dev, "b"));
    let mw = DiskOptions {
        lock: DiskLock::MultiWriter,
        ..Default::default()
    };
    make_disk(&fa, "vm/thin.vmdk", 4 << 20, Provisioning::Thin);
    let e = VirtualDisk::open(&fa, "vm/thin.vmdk", &mw).unwrap_err();
    assert!(e.to_string().contains("eager-zeroed"), "{e}");
    make_disk(&fa, "vm/q.vmdk", 4 << 20, Provisioning::EagerZeroedThick);
    let da = VirtualDisk::open(&fa, "vm/q.vmdk", &mw).unwrap();
    let db = VirtualDisk::open(&fb, "vm/q.vmdk", &mw).unwrap();
    assert!(VirtualDisk::open(&fb, "vm/q.vmdk", &DiskOptions::default())
        .unwrap_err()
        .is_busy());
    da.write(0, vec![0xa; 4096]).wait().unwrap();
    db.write(4096, vec![0xb; 4096]).wait().unwrap();
    da.flush().wait().unwrap();
    db.flush().wait().unwrap();
    let mut want = vec![0xa; 4096];
    want.extend(vec![0xb; 4096]);
    assert_eq!(da.read(0, 8192).wait().unwrap(), want);
    assert_eq!(db.read(0, 8192).wait().unwrap(), want);
    assert!(
        da.write(10, vec![1; 512]).wait().is_err(),
        "unaligned refused"
    );
    da.close().unwrap();
    db.close().unwrap();
}

#[test]
fn handoff_moves_the_lock_with_exactly_one_winner() {
    let dev = volume();
    let (fa, fb) = (mount(&dev, "a"), mount(&dev, "b"));
    make_disk(&fa, "vm/m.vmdk", 4 << 20, Provisioning::Thin);
    let opts = DiskOptions::default();
    let da = VirtualDisk::open(&fa, "vm/m.vmdk", &opts).unwrap();
    da.write(0, vec![7; 4096]).wait().unwrap();
    // Nothing offered yet: the destination gets nothing.
    assert!(VirtualDisk::accept_handoff(&fb, "vm/m.vmdk", &opts)
        .unwrap()
        .is_none());
    // Offer, cancel: back to the source.
    da.begin_handoff(fb.host().holder()).unwrap();
    assert!(matches!(
        da.write(0, vec![1; 512]).wait(),
        Err(DiskError::HandoffPending { .. })
    ));
    assert_eq!(da.handoff_outcome().unwrap(), TransferOutcome::Pending);
    assert!(da.cancel_handoff().unwrap());
    assert!(VirtualDisk::accept_handoff(&fb, "vm/m.vmdk", &opts)
        .unwrap()
        .is_none());
    da.write(4096, vec![8; 4096]).wait().unwrap();
    // Offer, accept: the destination owns it, the source's cancel loses.
    da.begin_handoff(fb.host().holder()).unwrap();
    let db = VirtualDisk::accept_handoff(&fb, "vm/m.vmdk", &opts)
        .unwrap()
        .expect("offered to b");
    assert!(!da.cancel_handoff().unwrap());
    assert!(matches!(
        da.read(0, 512).wait(),
        Err(DiskError::HandedOff { .. })
    ));
    let mut want = vec![7u8; 4096];
    want.extend(vec![8u8; 4096]);
    assert_eq!(db.read(0, 8192).wait().unwrap(), want);
    db.write(8192, vec![9; 4096]).wait().unwrap();
    da.close().unwrap();
    db.close().unwrap();
    // Both released cleanly: a can open it again.
    let again = VirtualDisk::open(&fa, "vm/m.vmdk", &opts).unwrap();
    assert_eq!(again.read(8192, 4096).wait().unwrap(), vec![9; 4096]);
    again.close().unwrap();
}

#[test]
fn swap_of_a_dead_host_is_reclaimed_and_space_returns() {
    let dev = volume();
    let fa = mount(&dev, "a");
    let fb = mount(&dev, "b");
    let free0 = fb.statfs().unwrap().blocks_free;
    let swap = SwapFile::create(&fa, "vm1", 24 << 20).unwrap();
    assert!(swap.path().starts_with("/vm1/vm1-") && swap.path().ends_with(".vswp"));
    let used = free0 - fb.statfs().unwrap().blocks_free;
    assert!(used >= 24, "fully allocated: {used} blocks");
    // A live holder's swap file is left alone.
    assert!(reclaim(&fb).unwrap().is_empty());
    // The VM's host dies (no more heartbeats, nothing released).
    std::mem::forget(swap);
    let host_a = fa.host().clone();
    std::mem::forget(fa);
    host_a.abandon();
    let start = Instant::now();
    let got = loop {
        let r = reclaim(&fb).unwrap();
        if !r.is_empty() {
            break r;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never reclaimed");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(got.len(), 1);
    assert!(got[0].path.starts_with("/vm1/vm1-"));
    assert!(
        fb.statfs().unwrap().blocks_free >= free0 - 2,
        "space returned"
    );
    assert!(swap::entries(&fb).unwrap().is_empty());
    // A clean power-off deletes and unregisters.
    let s = SwapFile::create(&fb, "vm2", 4 << 20).unwrap();
    assert_eq!(swap::entries(&fb).unwrap().len(), 1);
    s.delete().unwrap();
    assert!(swap::entries(&fb).unwrap().is_empty());
}

#[test]
fn a_request_that_panics_or_comes_after_shutdown_still_completes() {
    let pool = super::pool::Pool::new("t", 1);
    let f = pool.submit(|| -> i32 { panic!("a bug in a request") }, || -1);
    assert_eq!(
        f.wait(),
        -1,
        "a panicking request completes with the fallback"
    );
    assert_eq!(pool.submit(|| 5, || -1).wait(), 5, "the worker survives");
    pool.shutdown();
    assert_eq!(pool.submit(|| 5, || -1).wait(), -1, "after shutdown");
}

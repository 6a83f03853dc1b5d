//! mkfs + open on in-memory devices.

use std::sync::Arc;

use super::*;
use crate::dev::{MemDev, SharedDev};
use crate::format::{HeartbeatSlot, Inode, LockMode, LockRecord, SlotState};

fn mem(size: u64) -> SharedDev {
    Arc::new(MemDev::new(size, 512))
}

fn opts(hosts: u32) -> MkfsOptions {
    MkfsOptions {
        label: "ds1".into(),
        max_hosts: hosts,
        journal_size: 1 << 20,
        ..Default::default()
    }
}

#[test]
fn mkfs_then_open_and_walk_every_structure() {
    let dev = mem(256 << 20);
    let h = mkfs(&dev, &opts(8), false).unwrap();
    let v = Volume::open(dev.clone()).unwrap();
    assert_eq!(v.header, h);
    assert!(!v.from_backup);
    for slot in 0..8 {
        let addr = v.heartbeat_slot_addr(slot);
        let mut b = [0u8; 512];
        dev.read_at(&mut b, addr).unwrap();
        let s = HeartbeatSlot::decode(&b, addr).unwrap();
        assert_eq!(s.state, SlotState::Free);
        assert_eq!(s.journal_addr, v.journal_addr(slot));
    }
    for kind in ResourceKind::ALL {
        let reg = *v.header.region(kind);
        for c in 0..reg.clusters {
            let la = v.cluster_lock_addr(kind, c);
            let mut b = vec![0u8; 4096];
            dev.read_at(&mut b, la).unwrap();
            let l = LockRecord::decode(&b[..512], la).unwrap();
            assert_eq!(l.mode, LockMode::Free);
            let ch = crate::format::ClusterHeader::decode(&b[512..], la + 512).unwrap();
            assert_eq!(ch.resource_count, v.cluster_len(kind, c));
        }
    }
    let ra = v.inode_addr(ROOT_INO);
    let mut b = vec![0u8; 4096];
    dev.read_at(&mut b, ra).unwrap();
    let root = Inode::decode(&b[512..], ra + 512).unwrap();
    assert_eq!(root.mode & libc::S_IFMT, libc::S_IFDIR);
    assert_eq!(root.nlink, 2);
    let space = v.space().unwrap();
    assert_eq!(space.inodes.free, space.inodes.total - 2);
    assert_eq!(space.file_blocks.free, space.file_blocks.total);
    assert_eq!(space.file_blocks.damaged_clusters, 0);
}

#[test]
fn refuses_existing_volume_without_force() {
    let dev = mem(128 << 20);
    mkfs(&dev, &opts(4), false).unwrap();
    let e = mkfs(&dev, &opts(4), false).unwrap_err();
    assert!(
        e.to_string().contains("ds1") && e.to_string().contains("--force"),
        "{e}"
    );
    let mut o = opts(4);
    o.label = "ds2".into();
    mkfs(&dev, &o, true).unwrap();
    assert_eq!(Volume::open(dev).unwrap().header.label, "ds2");
}

#[test]
fn backup_header_is_used_when_primary_is_damaged() {
    let dev = mem(128 << 20);
    let h = mkfs(&dev, &opts(4), false).unwrap();
    dev.write_at(&[0xffu8; 512], 0).unwrap();
    let v = Volume::open(dev.clone()).unwrap();
    assert!(v.from_backup);
    assert_eq!(v.header, h);
    dev.write_at(&[0xffu8; 512], h.backup_offset()).unwrap();
    let e = Volume::open(dev).unwrap_err();
    assert!(matches!(e, VolumeError::NoVolume { .. }));
    assert!(e.to_string().contains("primary header") && e.to_string().contains("backup header"));
}

#[test]
fn no_volume_on_blank_or_tiny_devices() {
    assert!(matches!(
        Volume::open(mem(64 << 20)),
        Err(VolumeError::NoVolume { .. })
    ));
    assert!(matches!(
        Volume::open(mem(1024)),
        Err(VolumeError::NoVolume { .. })
    ));
    let e = mkfs(&mem(2 << 20), &opts(4), false).unwrap_err();
    assert!(e.to_string().contains("too small"), "{e}");
}

#[test]
fn refuses_4k_sector_devices() {
    let dev: SharedDev = Arc::new(MemDev::new(256 << 20, 4096));
    assert!(matches!(
        mkfs(&dev, &opts(4), false),
        Err(MkfsError::UnsupportedBlockSize { .. })
    ));
}

#[test]
fn damaged_cluster_header_is_not_counted_free() {
    let dev = mem(256 << 20);
    mkfs(&dev, &opts(4), false).unwrap();
    let v = Volume::open(dev.clone()).unwrap();
    let before = v.kind_space(ResourceKind::FileBlock).unwrap();
    let addr = v.cluster_header_addr(ResourceKind::FileBlock, 0);
    dev.write_at(&[0u8; 512], addr).unwrap();
    let after = v.kind_space(ResourceKind::FileBlock).unwrap();
    assert_eq!(after.damaged_clusters, 1);
    assert_eq!(
        after.free,
        before.free - u64::from(v.cluster_len(ResourceKind::FileBlock, 0))
    );
}

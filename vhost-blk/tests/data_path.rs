//! The daemon driven as a VMM drives it: the vhost-user frontend of the
//! `vhost` crate, real split virtqueues in memfd-backed shared guest RAM,
//! and the data checked against the backing file.

mod common;

use std::sync::Arc;

use common::{driver, opts, pattern, Daemon};
use virtio_bindings::bindings::virtio_blk::*;
use vmfs_vhost_blk::frontend::{Layout, Request, Segment};
use vmfs_vhost_blk::{BlockBackend, FileBackend, MemBackend};

const MIB: u64 = 1 << 20;
const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

fn file_disk(size: u64) -> (tempfile::NamedTempFile, Arc<dyn BlockBackend>) {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(size).unwrap();
    let b = FileBackend::open(f.path(), false).unwrap();
    (f, Arc::new(b))
}

#[test]
fn config_space_and_features_reach_the_driver() {
    let (_f, disk) = file_disk(8 * MIB);
    let d = Daemon::start(disk, opts(2));
    let (fe, _queues) = d.connect(&driver(2));
    let c = fe.config();
    assert_eq!(c.capacity_sectors, 8 * MIB / 512);
    assert_eq!(c.blk_size, 512);
    assert_eq!(c.num_queues, 2);
    assert_eq!(c.seg_max, 254);
    assert!(c.size_max >= 4096);
    assert!(c.max_discard_sectors > 0 && c.max_discard_seg > 0);
    assert!(c.max_write_zeroes_sectors > 0 && c.write_zeroes_may_unmap);
    let f = fe.acked_features();
    for bit in [
        VIRTIO_BLK_F_SIZE_MAX,
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_BLK_SIZE,
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_DISCARD,
        VIRTIO_BLK_F_WRITE_ZEROES,
        VIRTIO_BLK_F_MQ,
        29, // VIRTIO_RING_F_EVENT_IDX
        32, // VIRTIO_F_VERSION_1
        30, // VHOST_USER_F_PROTOCOL_FEATURES
    ] {
        assert_ne!(f & (1 << bit), 0, "feature bit {bit} offered");
    }
    assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0, "writable disk is not RO");
    drop(fe);
    d.stop().unwrap();
}

#[test]
fn writes_then_reads_match_the_backing_file() {
    let (file, disk) = file_disk(8 * MIB);
    let d = Daemon::start(disk, opts(1));
    let (_fe, mut qs) = d.connect(&driver(1));
    let q = &mut qs[0];
    let mut expect = vec![0u8; (8 * MIB) as usize];
    // (sector, length, layout): single sectors, pages, a large write split in
    // many descriptors, an indirect table, and the very last sector.
    let cases: [(u64, usize, Layout); 6] = [
        (0, 512, Layout::Direct),
        (8, 4096, Layout::Direct),
        (1000, 64 << 10, Layout::SplitData(4096)),
        (3000, 12 << 10, Layout::Indirect),
        (5001, 1536, Layout::SplitData(512)),
        (8 * MIB / 512 - 1, 512, Layout::Direct),
    ];
    for (seed, (sector, len, layout)) in cases.iter().enumerate() {
        let data = pattern(sector * 512, *len, seed as u8 + 1);
        let c = q
            .run(
                &Request::Write {
                    sector: *sector,
                    data: &data,
                },
                *layout,
            )
            .unwrap();
        assert_eq!((c.status, c.used_len), (OK, 1), "write at sector {sector}");
        expect[(*sector * 512) as usize..(*sector * 512) as usize + len].copy_from_slice(&data);
    }
    q.flush().unwrap();
    assert!(
        std::fs::read(file.path()).unwrap() == expect,
        "backing file holds exactly what was written"
    );
    for (sector, len, layout) in cases.iter() {
        let c = q
            .run(
                &Request::Read {
                    sector: *sector,
                    len: *len as u32,
                },
                *layout,
            )
            .unwrap();
        assert_eq!(c.status, OK);
        assert_eq!(c.used_len as usize, len + 1, "used length = data + status");
        let off = (*sector * 512) as usize;
        assert!(
            c.data == expect[off..off + len],
            "read back at sector {sector} ({layout:?})"
        );
    }
    // Reads spanning written and never-written space.
    let whole = q.read(0, 256 << 10).unwrap();
    assert!(whole == expect[..256 << 10]);
    drop(qs);
    d.stop().unwrap();
}

#[test]
fn flush_reaches_the_backend_and_get_id_returns_the_serial() {
    let mem = Arc::new(MemBackend::new(4 * MIB, false));
    let d = Daemon::start(mem.clone(), opts(1));
    let (_fe, mut qs) = d.connect(&driver(1));
    let q = &mut qs[0];
    let before = mem.flushes();
    q.write(16, &pattern(0, 4096, 9)).unwrap();
    q.flush().unwrap();
    assert_eq!(mem.flushes(), before + 1, "FLUSH called backend flush once");
    let id = q.get_id().unwrap();
    let mut want = b"vmfs-test-disk".to_vec();
    want.resize(20, 0);
    assert_eq!(id, want);
    // A 20-byte serial fills the buffer with no terminator.
    drop(qs);
    d.stop().unwrap();
    let mut o = opts(1);
    o.serial = "ABCDEFGHIJKLMNOPQRST".into();
    let d = Daemon::start(mem, o);
    let (_fe, mut qs) = d.connect(&driver(1));
    assert_eq!(qs[0].get_id().unwrap(), b"ABCDEFGHIJKLMNOPQRST".to_vec());
    drop(qs);
    d.stop().unwrap();
}

#[test]
fn discard_and_write_zeroes_read_back_zeros() {
    let (file, disk) = file_disk(8 * MIB);
    let d = Daemon::start(disk, opts(1));
    let (_fe, mut qs) = d.connect(&driver(1));
    let q = &mut qs[0];
    let all = pattern(0, 4 * MIB as usize, 3);
    for chunk in 0..16u64 {
        let off = ((chunk * 256) << 10) as usize;
        q.write(chunk * 512, &all[off..off + (256 << 10)]).unwrap();
    }
    let mut expect = all.clone();
    expect.resize((8 * MIB) as usize, 0);
    let zero = |e: &mut Vec<u8>, sector: u64, sectors: u32| {
        let o = (sector * 512) as usize;
        e[o..o + sectors as usize * 512].fill(0);
    };
    // Discard: two segments in one request.
    let segs = [
        Segment {
            sector: 128,
            sectors: 64,
            flags: 0,
        },
        Segment {
            sector: 2048,
            sectors: 256,
            flags: 0,
        },
    ];
    assert_eq!(
        q.run(&Request::Discard(&segs), Layout::Direct)
            .unwrap()
            .status,
        OK
    );
    zero(&mut expect, 128, 64);
    zero(&mut expect, 2048, 256);
    // Write zeroes without and with UNMAP.
    let wz = [Segment {
        sector: 4096,
        sectors: 100,
        flags: 0,
    }];
    assert_eq!(
        q.run(&Request::WriteZeroes(&wz), Layout::Direct)
            .unwrap()
            .status,
        OK
    );
    zero(&mut expect, 4096, 100);
    let wzu = [Segment {
        sector: 6000,
        sectors: 8,
        flags: VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
    }];
    assert_eq!(
        q.run(&Request::WriteZeroes(&wzu), Layout::Direct)
            .unwrap()
            .status,
        OK
    );
    zero(&mut expect, 6000, 8);
    for (sector, sectors) in [(128u64, 64u32), (2048, 256), (4096, 100), (6000, 8)] {
        let got = q.read(sector, sectors * 512).unwrap();
        assert!(got.iter().all(|&b| b == 0), "sector {sector} reads zeros");
    }
    // Neighbours untouched.
    let got = q.read(127, 512).unwrap();
    assert!(got == expect[127 * 512..128 * 512]);
    // Discard with UNMAP, or any unknown flag: UNSUPP, and nothing changes.
    let bad = [Segment {
        sector: 0,
        sectors: 8,
        flags: VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
    }];
    assert_eq!(
        q.run(&Request::Discard(&bad), Layout::Direct)
            .unwrap()
            .status,
        UNSUPP
    );
    let bad = [Segment {
        sector: 0,
        sectors: 8,
        flags: 0x4,
    }];
    assert_eq!(
        q.run(&Request::WriteZeroes(&bad), Layout::Direct)
            .unwrap()
            .status,
        UNSUPP
    );
    // A list with one out-of-range segment fails as a whole, before any runs.
    let segs = [
        Segment {
            sector: 0,
            sectors: 8,
            flags: 0,
        },
        Segment {
            sector: 8 * MIB / 512 - 4,
            sectors: 8,
            flags: 0,
        },
    ];
    assert_eq!(
        q.run(&Request::WriteZeroes(&segs), Layout::Direct)
            .unwrap()
            .status,
        IOERR
    );
    q.flush().unwrap();
    assert!(
        std::fs::read(file.path()).unwrap() == expect,
        "backing file matches"
    );
    drop(qs);
    d.stop().unwrap();
}

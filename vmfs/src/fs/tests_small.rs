//! Small files in small blocks: allocation, promotion to file blocks,
//! holes, punching, truncation, unlink and a full small-block region.

use super::tests::{pattern, stop, Rig};
use super::*;
use crate::format::inode::FLAG_SMALL_BLOCKS;
use crate::volume::Volume;

const SB: u64 = 64 << 10;
const FB: u64 = 1 << 20;

fn space(r: &Rig) -> crate::volume::SpaceReport {
    Volume::open(r.dev.clone()).unwrap().space().unwrap()
}

fn small_free(r: &Rig) -> u64 {
    space(r).small_blocks.free
}

/// Small blocks small-file data may still take: each cluster's free ones
/// beyond its reserve (kept for directories).
fn small_usable(r: &Rig) -> u64 {
    use crate::format::{ClusterHeader, ResourceKind, SECTOR};
    let vol = Volume::open(r.dev.clone()).unwrap();
    let kind = ResourceKind::SmallBlock;
    (0..vol.header.region(kind).clusters)
        .map(|c| {
            let addr = vol.cluster_header_addr(kind, c);
            let mut b = vec![0u8; crate::format::header::META_BLOCK as usize - SECTOR];
            vol.dev.read_at(&mut b, addr).unwrap();
            let h = ClusterHeader::decode(&b, addr).unwrap();
            u64::from(
                h.free_count()
                    .saturating_sub(super::alloc::small_reserve(h.resource_count)),
            )
        })
        .sum()
}

fn file_free(r: &Rig) -> u64 {
    space(r).file_blocks.free
}

fn flags(r: &Rig, ino: u64) -> u32 {
    crate::fs::offline::read_inode(&Volume::open(r.dev.clone()).unwrap(), ino)
        .unwrap()
        .flags
}

#[test]
fn a_4k_file_uses_one_small_block() {
    let r = Rig::new(256 << 20, None);
    let fs = r.fs("a");
    let a = fs.create(fs.root(), b"f", 0o644, 0, 0).unwrap();
    let (s0, f0, st0) = (small_free(&r), file_free(&r), fs.statfs().unwrap());
    let held0 = r.check().data_blocks;
    let fh = fs.open(a.ino, true).unwrap();
    let d = pattern(1, 4096);
    assert_eq!(fs.write(fh, 0, &d).unwrap(), 4096);
    fs.fsync(fh).unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().allocated, SB, "one small block");
    assert_eq!(small_free(&r), s0 - 1);
    assert_eq!(file_free(&r), f0, "no file block");
    assert_eq!(fs.statfs().unwrap().blocks_free, st0.blocks_free);
    assert_eq!(fs.read(fh, 0, 8192).unwrap(), d);
    assert_ne!(flags(&r, a.ino) & FLAG_SMALL_BLOCKS, 0);
    fs.close(fh).unwrap();
    stop(fs);
    let rep = r.check();
    assert_eq!(rep.data_blocks, held0 + 1, "the file's one block");
}

#[test]
fn growing_past_the_limit_promotes_with_the_same_bytes() {
    let r = Rig::new(256 << 20, None);
    let fs = r.fs("a");
    let a = fs.create(fs.root(), b"f", 0o644, 0, 0).unwrap();
    let (s0, f0) = (small_free(&r), file_free(&r));
    let fh = fs.open(a.ino, true).unwrap();
    // Small blocks 0..=10 with a hole at block 5 and a partial last one.
    let mut want = vec![0u8; (FB + 5000) as usize];
    let d1 = pattern(2, (5 * SB) as usize);
    want[..d1.len()].copy_from_slice(&d1);
    fs.write(fh, 0, &d1).unwrap();
    let d2 = pattern(3, (4 * SB + 123) as usize);
    let o2 = (6 * SB) as usize;
    want[o2..o2 + d2.len()].copy_from_slice(&d2);
    fs.write(fh, o2 as u64, &d2).unwrap();
    assert_eq!(small_free(&r), s0 - 10);
    assert_eq!(fs.getattr(a.ino).unwrap().allocated, 10 * SB);
    // The write that crosses the limit promotes first.
    let d3 = pattern(4, 10_000);
    let o3 = (FB - 5000) as usize;
    want[o3..o3 + d3.len()].copy_from_slice(&d3);
    assert_eq!(fs.write(fh, o3 as u64, &d3).unwrap(), d3.len());
    assert_eq!(fs.read(fh, 0, want.len() + 10).unwrap(), want);
    assert_eq!(fs.getattr(a.ino).unwrap().allocated, 2 * FB);
    assert_eq!(small_free(&r), s0, "small blocks freed by the promotion");
    assert_eq!(file_free(&r), f0 - 2);
    assert_eq!(flags(&r, a.ino) & FLAG_SMALL_BLOCKS, 0);
    r.check();
    // Truncating back down does not demote it.
    fs.close(fh).unwrap();
    fs.setattr(
        a.ino,
        &SetAttr {
            size: Some(100),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().allocated, FB);
    assert_eq!(flags(&r, a.ino) & FLAG_SMALL_BLOCKS, 0);
    let fh = fs.open(a.ino, false).unwrap();
    assert_eq!(fs.read(fh, 0, 4096).unwrap(), want[..100]);
    fs.close(fh).unwrap();
    stop(fs);
    r.check();
}

#[test]
fn sparse_writes_at_zero_and_ten_gib_and_seek() {
    let r = Rig::new(256 << 20, None);
    let fs = r.fs("a");
    let a = fs.create(fs.root(), b"f", 0o644, 0, 0).unwrap();
    let fh = fs.open(a.ino, true).unwrap();
    let (d0, d1) = (pattern(5, 4096), pattern(6, 4096));
    fs.write(fh, 0, &d0).unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().allocated, SB);
    // A small-block file: data and holes at small-block grain.
    assert_eq!(fs.seek(fh, 0, false).unwrap(), Some(4096));
    fs.write(fh, 3 * SB, &d1).unwrap();
    assert_eq!(fs.seek(fh, 0, false).unwrap(), Some(SB));
    assert_eq!(fs.seek(fh, SB, true).unwrap(), Some(3 * SB));
    assert_eq!(fs.seek(fh, 3 * SB + 1, false).unwrap(), Some(3 * SB + 4096));
    let ten = 10u64 << 30;
    fs.write(fh, ten, &d1).unwrap();
    let at = fs.getattr(a.ino).unwrap();
    // Two file blocks and two pointer blocks (counted at data block size).
    assert_eq!((at.size, at.allocated), (ten + 4096, 4 * FB));
    assert_eq!(fs.read(fh, 0, 4096).unwrap(), d0);
    assert_eq!(fs.read(fh, 3 * SB, 4096).unwrap(), d1);
    assert!(fs
        .read(fh, 5 << 30, 1 << 20)
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    assert_eq!(fs.read(fh, ten, 8192).unwrap(), d1);
    assert_eq!(fs.seek(fh, 0, false).unwrap(), Some(FB));
    assert_eq!(fs.seek(fh, FB, true).unwrap(), Some(ten));
    assert_eq!(fs.seek(fh, ten + 5000, true).unwrap(), None);
    fs.close(fh).unwrap();
    stop(fs);
    r.check();
}

#[test]
fn punch_truncate_and_unlink_free_small_blocks() {
    let r = Rig::new(256 << 20, None);
    let fs = r.fs("a");
    let a = fs.create(fs.root(), b"f", 0o644, 0, 0).unwrap();
    let s0 = small_free(&r);
    let fh = fs.open(a.ino, true).unwrap();
    let mut want = pattern(7, (300 << 10) as usize); // small blocks 0..=4
    fs.write(fh, 0, &want).unwrap();
    assert_eq!(small_free(&r), s0 - 5);
    // Blocks 1 and 2 lie wholly in the hole; 0 and 3 are partly zeroed.
    fs.fallocate(fh, SB - 10, 2 * SB + 20, Falloc::PunchHole)
        .unwrap();
    assert_eq!(small_free(&r), s0 - 3);
    want[(SB - 10) as usize..(3 * SB + 10) as usize].fill(0);
    assert_eq!(fs.read(fh, 0, want.len()).unwrap(), want);
    assert_eq!(fs.seek(fh, 0, false).unwrap(), Some(SB));
    assert_eq!(fs.seek(fh, SB, true).unwrap(), Some(3 * SB));
    r.check();
    fs.close(fh).unwrap();
    // Truncate to 100 KiB: blocks 2.. go, block 1 is a hole.
    let trunc = |size| {
        fs.setattr(
            a.ino,
            &SetAttr {
                size: Some(size),
                ..Default::default()
            },
        )
        .unwrap()
    };
    trunc(100 << 10);
    assert_eq!(small_free(&r), s0 - 1);
    // Growing the size far past the limit allocates nothing and keeps it small.
    let at = trunc(5 << 30);
    assert_eq!((at.size, at.allocated), (5 << 30, SB));
    assert_ne!(flags(&r, a.ino) & FLAG_SMALL_BLOCKS, 0);
    let fh = fs.open(a.ino, false).unwrap();
    assert_eq!(fs.read(fh, 0, 1000).unwrap(), want[..1000]);
    assert!(fs
        .read(fh, 4 << 30, 1 << 20)
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    assert_eq!(fs.seek(fh, SB, true).unwrap(), None);
    fs.close(fh).unwrap();
    r.check();
    fs.unlink(fs.root(), b"f").unwrap();
    assert_eq!(small_free(&r), s0, "unlink frees the small blocks");
    stop(fs);
    r.check();
}

#[test]
fn lazy_preallocation_promotes_without_copying() {
    let r = Rig::new(256 << 20, None);
    let fs = r.fs("a");
    let a = fs.create(fs.root(), b"f", 0o644, 0, 0).unwrap();
    let fh = fs.open(a.ino, true).unwrap();
    let lazy = Falloc::AllocateLazy { keep_size: false };
    fs.fallocate(fh, 0, 2 * SB, lazy).unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().allocated, 2 * SB);
    fs.fallocate(fh, 0, 3 * FB, lazy).unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().allocated, 3 * FB);
    assert!(fs.read(fh, 0, 3 << 20).unwrap().iter().all(|&b| b == 0));
    fs.write(fh, 10, b"abc").unwrap();
    let got = fs.read(fh, 0, FB as usize).unwrap();
    assert_eq!(&got[10..13], b"abc");
    assert!(got[..10].iter().chain(&got[13..]).all(|&b| b == 0));
    fs.close(fh).unwrap();
    stop(fs);
    r.check();
}

#[test]
fn a_full_small_block_region_falls_back_to_file_blocks() {
    let r = Rig::new(256 << 20, None);
    let fs = r.fs("a");
    let root = fs.root();
    // Every name first: directory blocks are small blocks too.
    let t1 = fs.create(root, b"t1", 0o644, 0, 0).unwrap();
    let t2 = fs.create(root, b"t2", 0o644, 0, 0).unwrap();
    let n = small_usable(&r) / 15 + 2;
    let fillers: Vec<u64> = (0..n)
        .map(|i| {
            fs.create(root, format!("f{i}").as_bytes(), 0o644, 0, 0)
                .unwrap()
                .ino
        })
        .collect();
    let t3 = fs.create(root, b"t3", 0o644, 0, 0).unwrap();
    let h2 = fs.open(t2.ino, true).unwrap();
    let mut want2 = pattern(8, (100 << 10) as usize);
    fs.write(h2, 0, &want2).unwrap();
    let mut fillers = fillers.into_iter();
    let mut fill_to = |left: u64| {
        while small_usable(&r) > left {
            let ino = fillers.next().expect("enough fillers");
            let fh = fs.open(ino, true).unwrap();
            // Never more than is free: a filler that ran out would be promoted.
            let d = pattern(ino, ((small_usable(&r) - left).min(15) * SB) as usize);
            assert_eq!(fs.write(fh, 0, &d).unwrap(), d.len());
            assert_eq!(fs.read(fh, 0, d.len()).unwrap(), d);
            fs.close(fh).unwrap();
        }
    };
    // Two small blocks left: a write needing five fills them, then the
    // file is promoted (the two copied) and the write finishes.
    fill_to(2);
    let h3 = fs.open(t3.ino, true).unwrap();
    let d3 = pattern(10, (300 << 10) as usize);
    assert_eq!(fs.write(h3, 0, &d3).unwrap(), d3.len());
    assert_eq!(fs.read(h3, 0, d3.len()).unwrap(), d3);
    assert_eq!(fs.getattr(t3.ino).unwrap().allocated, FB);
    assert_eq!(small_usable(&r), 2, "the two went back at the promotion");
    fs.close(h3).unwrap();
    fill_to(0);
    assert_eq!(small_usable(&r), 0, "the fillers used every small block");
    let reserve = small_free(&r);
    assert!(reserve >= 16, "each cluster keeps its reserve: {reserve}");
    // A new small file lands in a file block.
    let f0 = file_free(&r);
    let h1 = fs.open(t1.ino, true).unwrap();
    assert_eq!(fs.write(h1, 0, b"hello").unwrap(), 5);
    assert_eq!(fs.read(h1, 0, 10).unwrap(), b"hello");
    assert_eq!(fs.getattr(t1.ino).unwrap().allocated, FB);
    assert_eq!(file_free(&r), f0 - 1);
    fs.close(h1).unwrap();
    // A small file that needs another small block is promoted, its old
    // blocks freed, and the whole write lands.
    let more = pattern(9, (300 << 10) as usize);
    assert_eq!(fs.write(h2, 100 << 10, &more).unwrap(), more.len());
    want2.extend_from_slice(&more);
    assert_eq!(fs.read(h2, 0, want2.len()).unwrap(), want2);
    assert_eq!(fs.getattr(t2.ino).unwrap().allocated, FB);
    assert_eq!(small_usable(&r), 2, "t2's two small blocks came back");
    fs.close(h2).unwrap();
    // Directories still grow: their blocks come out of the reserve that
    // small-file data left alone.
    let d = fs.mkdir(root, b"grows", 0o755, 0, 0).unwrap();
    for i in 0..3000 {
        fs.create(
            d.ino,
            format!("a-longer-name-{i:05}").as_bytes(),
            0o644,
            0,
            0,
        )
        .unwrap_or_else(|e| panic!("create {i} in a growing directory: {e}"));
    }
    assert!(
        small_free(&r) < reserve,
        "the directory grew into the reserve"
    );
    stop(fs);
    r.check();
}

/// Small files that fill the small-block region go on in file blocks,
/// and leave each cluster's reserve to directories, which cannot: a
/// directory still grows by thousands of names afterwards. (Before the
/// reserve, small files took every small block and the creates below
/// failed ENOSPC on a volume with nearly all its file blocks free.)
#[test]
fn directories_still_grow_once_small_files_have_filled_the_small_block_region() {
    let r = Rig::new(256 << 20, None);
    let fs = r.fs("a");
    let root = fs.root();
    let d = fs.mkdir(root, b"grows", 0o755, 0, 0).unwrap();
    let data = pattern(3, SB as usize);
    let mut promoted = 0;
    for i in 0.. {
        let f = fs
            .create(root, format!("s{i}").as_bytes(), 0o644, 0, 0)
            .unwrap();
        let fh = fs.open(f.ino, true).unwrap();
        assert_eq!(fs.write(fh, 0, &data).unwrap(), data.len());
        fs.close(fh).unwrap();
        if fs.getattr(f.ino).unwrap().allocated == FB {
            promoted += 1;
            if promoted == 3 {
                break;
            }
        }
        assert!(i < 10_000, "small files never moved to file blocks");
    }
    assert_eq!(small_usable(&r), 0);
    for i in 0..3000 {
        fs.create(
            d.ino,
            format!("a-longer-name-{i:05}").as_bytes(),
            0o644,
            0,
            0,
        )
        .unwrap_or_else(|e| panic!("create {i} in a growing directory: {e}"));
    }
    assert!(
        file_free(&r) > 100,
        "the volume has space: {}",
        file_free(&r)
    );
    stop(fs);
    r.check();
}

#[test]
fn a_volume_without_the_feature_keeps_files_in_file_blocks() {
    let r = Rig::new(256 << 20, None);
    {
        let mut h = Volume::open(r.dev.clone()).unwrap().header;
        h.features = 0;
        for at in [0, h.backup_offset()] {
            r.dev.write_at(&h.encode(at), at).unwrap();
        }
        r.dev.flush().unwrap();
    }
    let fs = r.fs("a");
    let a = fs.create(fs.root(), b"f", 0o644, 0, 0).unwrap();
    let fh = fs.open(a.ino, true).unwrap();
    fs.write(fh, 0, b"old style").unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().allocated, FB);
    assert_eq!(flags(&r, a.ino) & FLAG_SMALL_BLOCKS, 0);
    fs.close(fh).unwrap();
    stop(fs);
    r.check();
}

#[test]
fn a_reader_on_another_host_follows_a_promotion() {
    let r = Rig::new(256 << 20, None);
    let (a, b) = (r.fs("a"), r.fs("b"));
    let f = a.create(a.root(), b"f", 0o644, 0, 0).unwrap();
    let wa = a.open(f.ino, true).unwrap();
    let d0 = pattern(11, 100_000);
    a.write(wa, 0, &d0).unwrap();
    a.fsync(wa).unwrap();
    // B reads without a lock (A writes), re-reading the map each time.
    let rb = b.open(f.ino, false).unwrap();
    assert_eq!(b.read(rb, 0, d0.len()).unwrap(), d0);
    assert_eq!(b.getattr(f.ino).unwrap().allocated, 2 * SB);
    let d1 = pattern(12, 3000);
    a.write(wa, 5 * FB, &d1).unwrap();
    a.fsync(wa).unwrap();
    assert_eq!(
        b.read(rb, 0, d0.len()).unwrap(),
        d0,
        "copied by the promotion"
    );
    assert_eq!(b.read(rb, 5 * FB, 3000).unwrap(), d1);
    assert_eq!(b.getattr(f.ino).unwrap().allocated, 2 * FB);
    a.close(wa).unwrap();
    b.close(rb).unwrap();
    stop(a);
    stop(b);
    r.check();
}

#[test]
fn thick_inflation_keeps_small_files_small_below_the_limit_and_promotes_past_it() {
    let r = Rig::new(256 << 20, None);
    let fs = r.fs("a");
    let root = fs.root();
    // Inside the limit: small blocks, eager-zeroed; a multi-writer open works.
    let s = fs.create(root, b"s", 0o644, 0, 0).unwrap();
    let fh = fs.open(s.ino, true).unwrap();
    fs.write(fh, 0, b"small").unwrap();
    fs.setattr(
        s.ino,
        &SetAttr {
            size: Some(3 * SB),
            ..Default::default()
        },
    )
    .unwrap();
    fs.materialize(fh, 0, 3 * SB).unwrap();
    assert_eq!(fs.getattr(s.ino).unwrap().allocated, 3 * SB);
    fs.close(fh).unwrap();
    let mw = fs.open_multi_writer(s.ino).unwrap();
    mw.write_at(2 * SB, &[7u8; 512]).unwrap();
    let mut got = vec![0u8; 512];
    mw.read_at(0, &mut got).unwrap();
    assert_eq!(&got[..5], b"small");
    mw.close().unwrap();
    // Past the limit: promoted first, then whole file blocks.
    let t = fs.create(root, b"t", 0o644, 0, 0).unwrap();
    let fh = fs.open(t.ino, true).unwrap();
    let d = pattern(13, 5000);
    fs.write(fh, 0, &d).unwrap();
    fs.materialize(fh, 0, 3 * FB).unwrap();
    assert_eq!(fs.getattr(t.ino).unwrap().allocated, 3 * FB);
    assert_eq!(flags(&r, t.ino) & FLAG_SMALL_BLOCKS, 0);
    assert_eq!(fs.read(fh, 0, 5000).unwrap(), d);
    fs.close(fh).unwrap();
    stop(fs);
    r.check();
}

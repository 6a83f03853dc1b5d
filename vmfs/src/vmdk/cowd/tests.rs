use super::*;
use crate::vmdk::io::MemExtent;
use proptest::prelude::*;
use std::sync::Arc;

fn new_extent(sectors: u64, grain: u32) -> (Arc<MemExtent>, CowdExtent) {
    let m = Arc::new(MemExtent::new());
    let c = CowdExtent::create("d-delta.vmdk", Box::new(m.clone()), sectors, grain, None).unwrap();
    (m, c)
}

fn reopen(m: &Arc<MemExtent>) -> Result<CowdExtent> {
    CowdExtent::open("d-delta.vmdk", Box::new(m.clone()), true)
}

#[test]
fn allocate_read_reopen_reset() {
    // 3 grain tables' worth plus a partial grain.
    let sectors = 3 * 4096 * 2 + 1;
    let (m, mut c) = new_extent(sectors, 2);
    assert_eq!(c.grain_count(), 3 * 4096 + 1);
    assert_eq!(c.lookup(5).unwrap(), None);
    let g = vec![7u8; 1024];
    c.allocate_grain(5, &g).unwrap();
    c.allocate_grain(3 * 4096, &[9u8; 1024]).unwrap();
    assert!(c.allocate_grain(5, &g).is_err(), "double allocation");
    assert!(c.allocate_grain(6, &g[..512]).is_err(), "short grain");
    assert!(c.lookup(3 * 4096 + 1).is_err(), "grain past the end");
    let mut buf = [0u8; 10];
    assert!(
        c.read_in_grain(5, 1020, &mut buf[..10]).is_err(),
        "crosses grain end"
    );
    assert!(c.read_in_grain(5, 1014, &mut buf).unwrap());
    assert_eq!(buf, [7u8; 10]);
    assert!(!c.read_in_grain(4, 0, &mut buf).unwrap());
    assert!(c.write_in_grain(5, 0, &[1, 2]).unwrap());
    assert!(!c.write_in_grain(6, 0, &[1, 2]).unwrap());

    let c2 = reopen(&m).unwrap();
    let grains: Vec<u64> = c2.allocated_grains().unwrap().iter().map(|g| g.0).collect();
    assert_eq!(grains, vec![5, 3 * 4096]);
    let mut b2 = [0u8; 3];
    assert!(c2.read_in_grain(5, 0, &mut b2).unwrap());
    assert_eq!(b2, [1, 2, 7]);
    assert_eq!(c2.header().free_sector as u64 * 512, m.size().unwrap());

    let mut c3 = reopen(&m).unwrap();
    let empty_size = {
        let (m0, _) = new_extent(sectors, 2);
        m0.size().unwrap()
    };
    c3.reset().unwrap();
    assert!(c3.allocated_grains().unwrap().is_empty());
    assert_eq!(m.size().unwrap(), empty_size);
    assert!(reopen(&m).unwrap().allocated_grains().unwrap().is_empty());
}

#[test]
fn lazily_allocated_grain_tables_are_read_and_created() {
    // Other producers may leave directory entries empty.
    let (m, c) = new_extent(2 * 4096 * 8, 8);
    let gd_pos = c.header().gd_offset as u64 * 512;
    drop(c);
    m.write_at(&[0u8; 8], gd_pos).unwrap();
    let mut c = reopen(&m).unwrap();
    assert_eq!(c.lookup(4097).unwrap(), None);
    c.allocate_grain(4097, &[4u8; 4096]).unwrap();
    let c = reopen(&m).unwrap();
    assert_ne!(c.gd[1], 0);
    assert!(c.lookup(4097).unwrap().is_some());
    assert_eq!(c.allocated_grains().unwrap().len(), 1);
}

#[test]
fn corruption_is_reported_with_its_offset() {
    let (m, mut c) = new_extent(4096 * 8, 8);
    c.allocate_grain(0, &[1u8; 4096]).unwrap();
    let gd_pos = c.header().gd_offset as u64 * 512;
    let gt_pos = c.gd[0] as u64 * 512;
    drop(c);
    let good = m.contents();

    // Directory entry past the end of the file.
    m.write_at(&0x00ff_ffffu32.to_le_bytes(), gd_pos).unwrap();
    match reopen(&m) {
        Err(VmdkError::Corrupt { offset, .. }) => assert_eq!(offset, gd_pos),
        other => panic!("{other:?}"),
    }

    // Grain entry inside the header.
    let m = Arc::new(MemExtent::new());
    m.write_at(&good, 0).unwrap();
    m.write_at(&1u32.to_le_bytes(), gt_pos).unwrap();
    let c = reopen(&m).unwrap();
    match c.lookup(0) {
        Err(VmdkError::Corrupt { offset, .. }) => assert_eq!(offset, gt_pos),
        other => panic!("{other:?}"),
    }
    assert!(c.allocated_grains().is_err());

    // Bad magic, grain size, directory size.
    for (off, val) in [(0usize, 0x1234u32), (16, 3), (16, 0), (24, 0), (12, 0)] {
        let m = Arc::new(MemExtent::new());
        m.write_at(&good, 0).unwrap();
        m.write_at(&val.to_le_bytes(), off as u64).unwrap();
        assert!(reopen(&m).is_err(), "field at {off} = {val} accepted");
    }

    // Short file.
    let m = Arc::new(MemExtent::new());
    m.write_at(&good[..1000], 0).unwrap();
    assert!(matches!(reopen(&m), Err(VmdkError::Corrupt { .. })));
}

#[test]
fn read_only_extent_refuses_writes() {
    let (m, c) = new_extent(4096, 1);
    drop(c);
    let mut c = CowdExtent::open("x", Box::new(m.clone()), false).unwrap();
    assert!(matches!(
        c.allocate_grain(0, &[0u8; 512]),
        Err(VmdkError::ReadOnly { .. })
    ));
    assert!(c.reset().is_err());
}

#[test]
fn create_refuses_what_cowd_cannot_hold() {
    let m = Arc::new(MemExtent::new());
    assert!(CowdExtent::create("x", Box::new(m.clone()), 0, 8, None).is_err());
    assert!(CowdExtent::create("x", Box::new(m.clone()), 1 << 32, 8, None).is_err());
    assert!(CowdExtent::create("x", Box::new(m.clone()), 100, 6, None).is_err());
    assert!(CowdExtent::create("x", Box::new(m), 100, 4096, None).is_err());
}

#[test]
fn a_free_sector_past_the_end_of_the_file_is_not_followed() {
    let (m, c) = new_extent(4096, 1);
    drop(c);
    let mut bytes = m.contents();
    let before = bytes.len() as u64;
    // freeSector (offset 28) pointing 2 TiB in, as a damaged header might.
    bytes[28..32].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let d = Arc::new(MemExtent::new());
    d.write_at(&bytes, 0).unwrap();
    let mut c = reopen(&d).unwrap();
    c.allocate_grain(7, &[3u8; 512]).unwrap();
    let after = d.contents().len() as u64;
    // One grain table and one grain appended at the old end, nothing more.
    assert!(
        after <= before + (GT_SECTORS + 1) * 512,
        "{before} -> {after}"
    );
    let c = reopen(&d).unwrap();
    let mut b = [0u8; 4];
    assert!(c.read_in_grain(7, 0, &mut b).unwrap());
    assert_eq!(b, [3u8; 4]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn damaged_extent_never_panics(flips in prop::collection::vec((0usize..12_000, any::<u8>()), 1..8)) {
        let (m, mut c) = new_extent(4096 * 2 + 5, 1);
        c.allocate_grain(3, &[1u8; 512]).unwrap();
        c.allocate_grain(4096 + 2, &[2u8; 512]).unwrap();
        drop(c);
        let mut bytes = m.contents();
        let n = bytes.len();
        for (pos, v) in flips {
            bytes[pos % n] = v;
        }
        let d = Arc::new(MemExtent::new());
        d.write_at(&bytes, 0).unwrap();
        if let Ok(mut c) = reopen(&d) {
            let _ = c.allocated_grains();
            for g in [0u64, 3, 4096 + 2, c.grain_count().saturating_sub(1)] {
                let mut b = [0u8; 16];
                let _ = c.read_in_grain(g, 0, &mut b);
                if let Ok(None) = c.lookup(g) {
                    let gb = c.grain_bytes() as usize;
                    let _ = c.allocate_grain(g, &vec![5u8; gb]);
                }
            }
        }
    }
}

//! DiskChain over an in-memory store: a model of the disk contents checked
//! through random writes, snapshots, consolidations and reverts; and the
//! errors of broken chains.

use proptest::prelude::*;
use std::sync::Arc;
use vmfs::vmdk::layer::{read_descriptor, write_descriptor};
use vmfs::vmdk::{
    create_flat_disk, create_snapshot, DiskChain, ExtentStore, FlatDiskOptions, MemStore,
    Provisioning, VmdkError,
};

const CAP: u64 = 192 * 1024 + 512; // not a multiple of any grain

#[derive(Debug, Clone)]
enum Op {
    Write { off: u64, len: u64, byte: u8 },
    Snapshot { grain: u32 },
    Consolidate { pick: usize },
    Revert,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..CAP, 1u64..9000, any::<u8>()).prop_map(|(off, len, byte)| Op::Write { off, len: len.min(CAP - off), byte }),
        2 => prop::sample::select(vec![1u32, 8, 16, 128]).prop_map(|grain| Op::Snapshot { grain }),
        1 => any::<usize>().prop_map(|pick| Op::Consolidate { pick }),
        1 => Just(Op::Revert),
    ]
}

fn read_all(c: &DiskChain) -> Vec<u8> {
    let mut v = vec![0u8; c.capacity() as usize];
    c.read_at(0, &mut v).unwrap();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn chain_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let store: Arc<dyn ExtentStore> = Arc::new(MemStore::new());
        create_flat_disk(&*store, "vm.vmdk", CAP, &FlatDiskOptions::default()).unwrap();
        let mut chain = DiskChain::open(store.clone(), "vm.vmdk", true).unwrap();
        let mut current = vec![0u8; CAP as usize];
        // frozen[j]: content of the chain up to layer j, as its child saw it.
        let mut frozen: Vec<Vec<u8>> = Vec::new();
        let mut next_snap = 1;
        for op in ops {
            match op {
                Op::Write { off, len, byte } => {
                    let data = vec![byte; len as usize];
                    chain.write_at(off, &data).unwrap();
                    current[off as usize..(off + len) as usize].copy_from_slice(&data);
                }
                Op::Snapshot { grain } => {
                    let top = chain.top().name.clone();
                    chain.flush().unwrap();
                    drop(chain);
                    let name = format!("vm-{next_snap:06}.vmdk");
                    next_snap += 1;
                    create_snapshot(&*store, &top, &name, grain).unwrap();
                    frozen.push(current.clone());
                    chain = DiskChain::open(store.clone(), &name, true).unwrap();
                }
                Op::Consolidate { pick } => {
                    let n = chain.layers().len();
                    if n > 1 {
                        let idx = 1 + pick % (n - 1);
                        chain = chain.consolidate(idx).unwrap();
                        frozen.remove(idx - 1);
                    }
                }
                Op::Revert => {
                    if let Some(f) = frozen.last() {
                        chain.revert().unwrap();
                        current = f.clone();
                    }
                }
            }
            prop_assert_eq!(chain.layers().len(), frozen.len() + 1);
            prop_assert!(read_all(&chain) == current, "top differs from model after {:?}", chain.layers().iter().map(|l| l.name.clone()).collect::<Vec<_>>());
            for (j, f) in frozen.iter().enumerate() {
                let name = chain.layers()[j].name.clone();
                let lower = DiskChain::open(store.clone(), &name, false).unwrap();
                prop_assert!(&read_all(&lower) == f, "layer {} ({}) changed under its child", j, name);
            }
        }
    }
}

fn mem() -> Arc<dyn ExtentStore> {
    Arc::new(MemStore::new())
}

#[test]
fn unaligned_reads_across_grains_and_layers() {
    let s = mem();
    create_flat_disk(&*s, "a.vmdk", 64 * 1024, &FlatDiskOptions::default()).unwrap();
    let mut c = DiskChain::open(s.clone(), "a.vmdk", true).unwrap();
    c.write_at(0, &vec![1u8; 64 * 1024]).unwrap();
    drop(c);
    create_snapshot(&*s, "a.vmdk", "a-000001.vmdk", 1).unwrap();
    let mut c = DiskChain::open(s.clone(), "a-000001.vmdk", true).unwrap();
    c.write_at(700, &[2u8; 100]).unwrap(); // inside grain 1, partial
    c.write_at(1023, &[3u8; 2]).unwrap(); // across grains 1 and 2
    let mut buf = vec![0u8; 1200];
    c.read_at(100, &mut buf).unwrap();
    for (i, b) in buf.iter().enumerate() {
        let off = 100 + i;
        let want = match off {
            700..=799 => 2,
            1023 | 1024 => 3,
            _ => 1,
        };
        assert_eq!(*b, want, "byte {off}");
    }
    // The delta allocated exactly grains 1 and 2 (of 512 bytes).
    assert_eq!(c.layer_data_ranges(1).unwrap(), vec![(512, 1024)]);
}

#[test]
fn bounds_and_read_only_are_enforced() {
    let s = mem();
    create_flat_disk(&*s, "b.vmdk", 4096, &FlatDiskOptions::default()).unwrap();
    let c = DiskChain::open(s.clone(), "b.vmdk", false).unwrap();
    let mut buf = [0u8; 2];
    assert!(matches!(
        c.read_at(4095, &mut buf),
        Err(VmdkError::OutOfRange { .. })
    ));
    assert!(matches!(
        c.read_at(u64::MAX, &mut buf),
        Err(VmdkError::OutOfRange { .. })
    ));
    let mut c = c;
    assert!(matches!(
        c.write_at(0, &buf),
        Err(VmdkError::ReadOnly { .. })
    ));
    assert!(matches!(c.revert(), Err(VmdkError::ReadOnly { .. })));
    let mut w = DiskChain::open(s.clone(), "b.vmdk", true).unwrap();
    assert!(
        matches!(w.revert(), Err(VmdkError::Invalid { .. })),
        "base has nothing to revert to"
    );
}

#[test]
fn broken_chains_are_refused() {
    let s = mem();
    create_flat_disk(&*s, "p.vmdk", 8192, &FlatDiskOptions::default()).unwrap();
    create_snapshot(&*s, "p.vmdk", "p-000001.vmdk", 8).unwrap();

    // Missing parent.
    let mut d = read_descriptor(&*s, "p-000001.vmdk").unwrap();
    d.parent_file_name_hint = Some("gone.vmdk".into());
    write_descriptor(&*s, "p-000001.vmdk", &d).unwrap();
    let e = DiskChain::open(s.clone(), "p-000001.vmdk", false)
        .err()
        .unwrap();
    assert!(e.to_string().contains("gone.vmdk"), "{e}");

    // A loop: the parent names its child.
    d.parent_file_name_hint = Some("p.vmdk".into());
    write_descriptor(&*s, "p-000001.vmdk", &d).unwrap();
    let mut p = read_descriptor(&*s, "p.vmdk").unwrap();
    p.parent_file_name_hint = Some("p-000001.vmdk".into());
    p.parent_cid = d.cid;
    write_descriptor(&*s, "p.vmdk", &p).unwrap();
    let e = DiskChain::open(s.clone(), "p-000001.vmdk", false)
        .err()
        .unwrap();
    assert!(matches!(e, VmdkError::BadChain { .. }), "{e}");

    // Different capacity.
    let s = mem();
    create_flat_disk(&*s, "q.vmdk", 8192, &FlatDiskOptions::default()).unwrap();
    create_flat_disk(&*s, "r.vmdk", 4096, &FlatDiskOptions::default()).unwrap();
    create_snapshot(&*s, "q.vmdk", "q-000001.vmdk", 8).unwrap();
    let mut d = read_descriptor(&*s, "q-000001.vmdk").unwrap();
    d.parent_file_name_hint = Some("r.vmdk".into());
    d.parent_cid = read_descriptor(&*s, "r.vmdk").unwrap().cid;
    write_descriptor(&*s, "q-000001.vmdk", &d).unwrap();
    let e = DiskChain::open(s.clone(), "q-000001.vmdk", false)
        .err()
        .unwrap();
    assert!(matches!(e, VmdkError::CapacityMismatch { .. }), "{e}");

    // Truncated flat extent.
    let s2 = Arc::new(MemStore::new());
    create_flat_disk(&*s2, "t.vmdk", 8192, &FlatDiskOptions::default()).unwrap();
    s2.open("t-flat.vmdk", true)
        .unwrap()
        .set_size(4096)
        .unwrap();
    let e = DiskChain::open(s2.clone(), "t.vmdk", false).err().unwrap();
    assert!(matches!(e, VmdkError::Corrupt { .. }), "{e}");
}

#[test]
fn creating_over_existing_files_is_refused() {
    let s = mem();
    create_flat_disk(&*s, "e.vmdk", 8192, &FlatDiskOptions::default()).unwrap();
    assert!(create_flat_disk(&*s, "e.vmdk", 8192, &FlatDiskOptions::default()).is_err());
    assert!(create_flat_disk(&*s, "f.vmdk", 1000, &FlatDiskOptions::default()).is_err());
    assert!(create_flat_disk(&*s, "noext", 8192, &FlatDiskOptions::default()).is_err());
    create_snapshot(&*s, "e.vmdk", "e-1.vmdk", 8).unwrap();
    assert!(create_snapshot(&*s, "e.vmdk", "e-1.vmdk", 8).is_err());
    assert!(
        create_snapshot(&*s, "e.vmdk", "e-2.vmdk", 3).is_err(),
        "grain not a power of two"
    );
    assert!(
        !s.exists("e-2-delta.vmdk").unwrap(),
        "failed snapshot left its delta behind"
    );
}

#[test]
fn eager_zeroed_disk_reads_zeros_and_records_type() {
    let s = mem();
    let opts = FlatDiskOptions {
        provisioning: Provisioning::EagerZeroedThick,
        ..FlatDiskOptions::default()
    };
    create_flat_disk(&*s, "z.vmdk", 1 << 20, &opts).unwrap();
    let c = DiskChain::open(s.clone(), "z.vmdk", false).unwrap();
    assert_eq!(
        c.top().descriptor.provisioning(),
        Provisioning::EagerZeroedThick
    );
    assert!(read_all(&c).iter().all(|&b| b == 0));
}

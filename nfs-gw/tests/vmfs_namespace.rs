//! 10,000 entries in one vmfs directory over NFS: create, readdir (our
//! client, READDIR and READDIRPLUS in small pages, and `nfs-ls`), rename
//! across directories, remove, mkdir/rmdir, with the volume checked by the
//! vmfs consistency walk afterwards. The image lives in /dev/shm when there
//! is one (see `memory_tempdir`).

mod common;

use common::client::Client;
use common::run_ok;
use common::vmfs::{make_image_with, memory_tempdir, open_volume, VmfsGateway};
use std::collections::BTreeSet;

const N: usize = 10_000;
const EXIST: u32 = 17;
const NOENT: u32 = 2;
const NOTEMPTY: u32 = 66;

fn name(i: usize) -> Vec<u8> {
    format!("entry-{i:05}.vmdk").into_bytes()
}

#[test]
fn ten_thousand_entries() {
    // In memory: 30,000 journal commits at a disk's flush latency would
    // take minutes, and flushing is not what this test is about.
    let tmp = memory_tempdir();
    let img = make_image_with(tmp.path(), 1 << 30, "many", Some(N as u64 + 1024));
    let gw = VmfsGateway::start(&img, "many", &[]);
    let mut c = Client::connect(gw.addr());
    let r = c.mnt("/many").unwrap();
    let big = c.mkdir(&r, b"big").unwrap();
    let moved = c.mkdir(&r, b"moved").unwrap();
    let t = std::time::Instant::now();
    for i in 0..N {
        c.create(&big, &name(i), 1)
            .unwrap_or_else(|s| panic!("create {i}: status {s}"));
    }
    eprintln!("{N} creates: {:?}", t.elapsed());
    assert_eq!(c.create(&big, &name(7), 1), Err(EXIST));

    let want: BTreeSet<Vec<u8>> = (0..N).map(name).collect();
    for plus in [false, true] {
        let got = c.list_all(&big, 4096, plus);
        assert_eq!(got.len(), N, "duplicates or missing (plus {plus})");
        assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
    }
    let ls = run_ok("nfs-ls", &[&gw.url("/big")]);
    assert_eq!(
        ls.lines().filter(|l| l.contains("entry-")).count(),
        N,
        "nfs-ls listing"
    );

    // Rename every third entry into another directory, remove every other.
    let t = std::time::Instant::now();
    for i in (0..N).step_by(3) {
        let mut to = name(i);
        to.extend_from_slice(b".moved");
        assert_eq!(c.rename(&big, &name(i), &moved, &to), 0, "rename {i}");
    }
    let mut left = BTreeSet::new();
    for i in 0..N {
        if i % 3 == 0 {
            continue;
        }
        if i % 2 == 0 {
            assert_eq!(c.remove(&big, &name(i)), 0, "remove {i}");
        } else {
            left.insert(name(i));
        }
    }
    eprintln!("renames and removes: {:?}", t.elapsed());
    assert_eq!(c.lookup(&big, &name(0)), Err(NOENT));
    assert_eq!(c.remove(&big, &name(0)), NOENT);
    let got: BTreeSet<Vec<u8>> = c.list_all(&big, 2048, true).into_iter().collect();
    assert_eq!(got, left);
    let moved_names = c.list_all(&moved, 8192, false);
    assert_eq!(moved_names.len(), N.div_ceil(3));

    // A non-empty directory stays; emptied, it goes.
    assert_eq!(c.rmdir(&r, b"big"), NOTEMPTY);
    for n in &left {
        assert_eq!(c.remove(&big, n), 0);
    }
    assert!(c.list_all(&big, 4096, false).is_empty());
    assert_eq!(c.rmdir(&r, b"big"), 0);
    gw.stop();
    let report = vmfs::fs::check::check(&open_volume(&img, true)).unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
}

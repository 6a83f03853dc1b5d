//! Phase 7 repairs leave disks the VMDK library can use: after VMDK003 and
//! VMDK005 the wrecked snapshot chain opens with `DiskChain` and reads the
//! whole disk, the cleared grain reading the parent's data; after VSWP001
//! the stale swap file is gone and its space is free again.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use vmfs::disk::{FsStore, ReadLock, WriteLock};
use vmfs::vmdk::DiskChain;

const LIMIT: Duration = Duration::from_secs(60);
const CAPACITY: usize = 16 << 20;

/// Byte `x` of a run `fill` (fsck/src/wreck_vmdk.rs) wrote at `start`.
fn filled(seed: u8, k: u8, start: usize, x: usize) -> u8 {
    ((x - start) as u8).wrapping_mul(seed).wrapping_add(k)
}

fn wreck_and_repair(base: &std::path::Path, img: &std::path::Path, code: &str) -> String {
    copy_sparse(base, img);
    let p = img.to_str().unwrap();
    let w = run(wreck_bin(), &[p, "--code", code], LIMIT);
    assert_eq!(w.code, 0, "{code}: wreck: {}", w.stderr);
    let vm = w
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("touched /"))
        .expect("touched path")
        .to_string();
    let r = run(fsck_bin(), &[p, "--repair"], LIMIT);
    assert_eq!(r.code, 1, "{code}: repair:\n{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(code),
        "{code} not reported:\n{}",
        r.stdout
    );
    vm
}

#[test]
fn repaired_disks_open_and_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = case_path(dir.path(), "base");
    build(&base);
    for code in ["VMDK003", "VMDK005"] {
        let img = case_path(dir.path(), code);
        let vm = wreck_and_repair(&base, &img, code);
        let fs = mount(&img);
        {
            let store = Arc::new(FsStore::new(
                fs.clone(),
                WriteLock::Exclusive,
                ReadLock::Follow,
            ));
            let top = format!("{vm}/{vm}-000001.vmdk");
            let chain = DiskChain::open(store, &top, false)
                .unwrap_or_else(|e| panic!("{code}: {top} does not open after repair: {e}"));
            let mut disk = vec![0u8; CAPACITY];
            chain
                .read_at(0, &mut disk)
                .unwrap_or_else(|e| panic!("{code}: reading {top}: {e}"));
            // The snapshot's own first run (seed 7) is intact.
            assert!(
                (0..8192).all(|x| disk[x] == filled(7, 0, 0, x)),
                "{code}: snapshot data at 0 changed"
            );
            if code == "VMDK005" {
                // Grain 5 (bytes 20480..24576) was cleared: it reads the
                // base's run 1 (seed 3, at 12800..20992) again.
                assert!(
                    (20480..20992).all(|x| disk[x] == filled(3, 1, 12800, x)),
                    "{code}: the cleared grain does not read the parent"
                );
            } else {
                // The base's flat file was cut to 8 MiB and extended with
                // zeros: its run at 1 MiB survives, the snapshot's runs too.
                assert!((1 << 20..(1 << 20) + 8192).all(|x| disk[x] == filled(7, 2, 1 << 20, x)));
            }
            println!("{code}: {top} opens and reads after the repair");
        }
        unmount(fs);
    }
}

#[test]
fn stale_swap_file_is_deleted_and_its_space_freed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = case_path(dir.path(), "base");
    build(&base);
    let fs = mount(&base);
    let before = fs.statfs().expect("statfs");
    unmount(fs);
    let img = case_path(dir.path(), "VSWP001");
    let vm = wreck_and_repair(&base, &img, "VSWP001");
    let again = run(fsck_bin(), &[img.to_str().unwrap()], LIMIT);
    assert_eq!(again.code, 0, "after repair:\n{}", again.stdout);
    let fs = mount(&img);
    let after = fs.statfs().expect("statfs");
    let d = fs
        .lookup(fs.root(), vm.as_bytes())
        .expect("vm directory")
        .ino;
    let left = fs.readdir(d, 0, 100).expect("readdir");
    assert!(
        left.iter().all(|e| !e.name.ends_with(b".vswp")),
        "swap file still there: {left:?}"
    );
    let swap_blocks = (8u64 << 20) / before.block_size;
    println!(
        "free blocks: {} before the wreck, {} after the repair (the swap file held {swap_blocks})",
        before.blocks_free, after.blocks_free
    );
    assert!(
        before.blocks_free - after.blocks_free < swap_blocks,
        "the swap file's space did not come back"
    );
    unmount(fs);
}

//! Interoperability with qemu-img / qemu-io (Debian package qemu-utils):
//! disks written by vmfs::vmdk are read by qemu through the parent chain,
//! and disks written by qemu are read by vmfs::vmdk.

use rand::{rngs::StdRng, Rng, SeedableRng};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use vmfs::vmdk::descriptor::AdapterType;
use vmfs::vmdk::{
    create_flat_disk, create_snapshot, DirStore, DiskChain, ExtentStore, FlatDiskOptions,
    Provisioning, VmdkError,
};

const MIB: u64 = 1 << 20;

fn tool(name: &str) -> Command {
    let found = Command::new(name).arg("--version").output();
    match found {
        Ok(o) if o.status.success() => Command::new(name),
        _ => panic!(
            "{name} is not installed: install Debian package qemu-utils (scripts/test-all.sh does)"
        ),
    }
}

/// Run a tool, returning (exit code, stdout); panics with its stderr if it
/// could not run.
fn run(cmd: &mut Command) -> (i32, String) {
    let o = cmd.output().expect("run qemu tool");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let code = o.status.code().unwrap_or(-1);
    if code != 0 {
        eprintln!("{cmd:?} exited {code}\nstdout: {out}\nstderr: {err}");
    }
    (code, out)
}

fn info(path: &Path) -> serde_json::Value {
    let (code, out) = run(tool("qemu-img")
        .args(["info", "--output=json", "--backing-chain"])
        .arg(path));
    assert_eq!(code, 0, "qemu-img info {path:?}");
    serde_json::from_str(&out).expect("qemu-img info json")
}

fn store(dir: &Path) -> Arc<dyn ExtentStore> {
    Arc::new(DirStore::new(dir))
}

/// A write of random bytes at a random (often unaligned) place.
fn random_writes(rng: &mut StdRng, capacity: u64, count: usize) -> Vec<(u64, Vec<u8>)> {
    (0..count)
        .map(|_| {
            let len = rng.gen_range(1..=64 * 1024u64);
            let off = rng.gen_range(0..capacity - len);
            let mut data = vec![0u8; len as usize];
            rng.fill(&mut data[..]);
            (off, data)
        })
        .collect()
}

fn apply(chain: &mut DiskChain, reference: &mut [u8], writes: &[(u64, Vec<u8>)]) {
    for (off, data) in writes {
        chain.write_at(*off, data).expect("chain write");
        reference[*off as usize..*off as usize + data.len()].copy_from_slice(data);
    }
    chain.flush().expect("flush");
}

fn compare(top: &Path, raw: &Path) -> i32 {
    run(tool("qemu-img")
        .args(["compare", "-f", "vmdk", "-F", "raw"])
        .arg(top)
        .arg(raw))
    .0
}

fn read_all(chain: &DiskChain) -> Vec<u8> {
    let mut v = vec![0u8; chain.capacity() as usize];
    chain.read_at(0, &mut v).expect("chain read");
    v
}

#[test]
fn qemu_img_info_reads_flat_disks_of_each_provisioning() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    for (i, p) in [
        Provisioning::Thin,
        Provisioning::ZeroedThick,
        Provisioning::EagerZeroedThick,
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("disk{i}.vmdk");
        let cap = 48 * MIB + 512 * i as u64;
        let opts = FlatDiskOptions {
            provisioning: p,
            adapter: AdapterType::LsiLogic,
            hw_version: 13,
        };
        let d = create_flat_disk(&*s, &name, cap, &opts).unwrap();
        assert_eq!(d.provisioning(), p);
        let j = info(&dir.path().join(&name));
        assert_eq!(j[0]["format"], "vmdk", "{j}");
        assert_eq!(j[0]["virtual-size"].as_u64(), Some(cap), "{j}");
        assert_eq!(
            j[0]["format-specific"]["data"]["create-type"], "vmfs",
            "{j}"
        );
        let flat = dir.path().join(format!("disk{i}-flat.vmdk"));
        let meta = std::fs::metadata(&flat).unwrap();
        assert_eq!(meta.len(), cap);
        use std::os::unix::fs::MetadataExt;
        let allocated = meta.blocks() * 512;
        match p {
            Provisioning::Thin => assert!(
                allocated < MIB,
                "thin flat file has {allocated} bytes allocated"
            ),
            _ => assert!(
                allocated >= cap - 4096,
                "{p:?} flat file has only {allocated} of {cap} bytes allocated"
            ),
        }
        let chain = DiskChain::open(s.clone(), &name, false).unwrap();
        assert_eq!(chain.top().descriptor.provisioning(), p);
        assert!(read_all(&chain).iter().all(|&b| b == 0));
    }
}

/// Base with data, two snapshots with more data each: qemu-img sees the
/// same bytes as the raw reference, and convert gives what DiskChain reads.
#[test]
fn qemu_reads_snapshot_chain_identical_to_reference() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let cap = 24 * MIB;
    let mut rng = StdRng::seed_from_u64(0x766d_646b);
    let mut reference = vec![0u8; cap as usize];
    create_flat_disk(&*s, "vm.vmdk", cap, &FlatDiskOptions::default()).unwrap();

    let mut base = DiskChain::open(s.clone(), "vm.vmdk", true).unwrap();
    apply(&mut base, &mut reference, &random_writes(&mut rng, cap, 40));
    drop(base);

    // Grain sizes 8 (ESX-like 4 KiB) then 1 (ESX's own default) sectors.
    create_snapshot(&*s, "vm.vmdk", "vm-000001.vmdk", 8).unwrap();
    let mut c1 = DiskChain::open(s.clone(), "vm-000001.vmdk", true).unwrap();
    apply(&mut c1, &mut reference, &random_writes(&mut rng, cap, 60));
    // A write spanning a grain table boundary (4096 grains = 16 MiB).
    let w = vec![(16 * MIB - 3000, vec![0x5a; 7000])];
    apply(&mut c1, &mut reference, &w);
    drop(c1);

    create_snapshot(&*s, "vm-000001.vmdk", "vm-000002.vmdk", 1).unwrap();
    let mut c2 = DiskChain::open(s.clone(), "vm-000002.vmdk", true).unwrap();
    apply(&mut c2, &mut reference, &random_writes(&mut rng, cap, 60));
    drop(c2);

    let raw = dir.path().join("reference.raw");
    std::fs::write(&raw, &reference).unwrap();
    let top = dir.path().join("vm-000002.vmdk");

    let j = info(&top);
    let chain: Vec<&str> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["filename"].as_str().unwrap())
        .collect();
    assert_eq!(chain.len(), 3, "{j}");
    assert!(chain[2].ends_with("vm.vmdk"), "{j}");
    assert_eq!(j[0]["virtual-size"].as_u64(), Some(cap));
    assert_eq!(
        j[0]["format-specific"]["data"]["create-type"], "vmfsSparse",
        "{j}"
    );

    assert_eq!(
        compare(&top, &raw),
        0,
        "qemu-img compare: chain differs from reference"
    );

    let out = dir.path().join("converted.raw");
    let (code, _) = run(tool("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(&top)
        .arg(&out));
    assert_eq!(code, 0);
    let converted = std::fs::read(&out).unwrap();
    let ours = read_all(&DiskChain::open(s.clone(), "vm-000002.vmdk", false).unwrap());
    assert!(
        converted == ours,
        "qemu-img convert output differs from DiskChain read"
    );
    assert!(ours == reference, "DiskChain read differs from reference");

    // The middle of the chain is a disk of its own too.
    let mid = DiskChain::open(s.clone(), "vm-000001.vmdk", false).unwrap();
    let (code, _) = run(tool("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(dir.path().join("vm-000001.vmdk"))
        .arg(&out));
    assert_eq!(code, 0);
    assert!(std::fs::read(&out).unwrap() == read_all(&mid));
}

/// qemu-io writes into our COWD delta (and rewrites our descriptor's CID);
/// DiskChain reads what qemu wrote, and qemu reads what we write after.
#[test]
fn qemu_io_writes_into_our_delta_and_we_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let cap = 8 * MIB;
    create_flat_disk(&*s, "d.vmdk", cap, &FlatDiskOptions::default()).unwrap();
    let mut reference = vec![0u8; cap as usize];
    let mut base = DiskChain::open(s.clone(), "d.vmdk", true).unwrap();
    apply(&mut base, &mut reference, &[(0, vec![0x11; cap as usize])]);
    drop(base);
    create_snapshot(&*s, "d.vmdk", "d-000001.vmdk", 8).unwrap();

    let top = dir.path().join("d-000001.vmdk");
    let (code, _) = run(tool("qemu-io")
        .args([
            "-f",
            "vmdk",
            "-c",
            "write -P 0xab 5000 10000",
            "-c",
            "write -P 0xcd 4194304 65536",
        ])
        .arg(&top));
    assert_eq!(code, 0, "qemu-io write");
    reference[5000..15000].fill(0xab);
    reference[4194304..4194304 + 65536].fill(0xcd);

    let mut c = DiskChain::open(s.clone(), "d-000001.vmdk", true).unwrap();
    assert!(
        read_all(&c) == reference,
        "DiskChain does not see qemu-io's writes"
    );
    apply(&mut c, &mut reference, &[(6000, vec![0xee; 3000])]);
    drop(c);
    let raw = dir.path().join("ref.raw");
    std::fs::write(&raw, &reference).unwrap();
    assert_eq!(compare(&top, &raw), 0);
    let (code, out) = run(tool("qemu-img").args(["check", "-f", "vmdk"]).arg(&top));
    assert_eq!(code, 0, "qemu-img check: {out}");
    assert!(out.contains("No errors"), "qemu-img check: {out}");
}

/// Consolidate and revert keep what qemu sees equal to the reference.
#[test]
fn consolidate_and_revert_as_seen_by_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let cap = 16 * MIB;
    let mut rng = StdRng::seed_from_u64(7);
    let mut reference = vec![0u8; cap as usize];
    create_flat_disk(&*s, "c.vmdk", cap, &FlatDiskOptions::default()).unwrap();
    let mut base = DiskChain::open(s.clone(), "c.vmdk", true).unwrap();
    apply(&mut base, &mut reference, &random_writes(&mut rng, cap, 20));
    drop(base);
    create_snapshot(&*s, "c.vmdk", "c-000001.vmdk", 8).unwrap();
    let mut c1 = DiskChain::open(s.clone(), "c-000001.vmdk", true).unwrap();
    apply(&mut c1, &mut reference, &random_writes(&mut rng, cap, 30));
    drop(c1);
    create_snapshot(&*s, "c-000001.vmdk", "c-000002.vmdk", 16).unwrap();
    let mut c2 = DiskChain::open(s.clone(), "c-000002.vmdk", true).unwrap();
    let before_top_writes = reference.clone();
    apply(&mut c2, &mut reference, &random_writes(&mut rng, cap, 30));

    // Merge the first snapshot into the base: the chain shrinks to two.
    let c2 = c2.consolidate(1).unwrap();
    assert_eq!(c2.layers().len(), 2);
    assert!(!dir.path().join("c-000001.vmdk").exists());
    assert!(!dir.path().join("c-000001-delta.vmdk").exists());
    let raw = dir.path().join("ref.raw");
    std::fs::write(&raw, &reference).unwrap();
    let top = dir.path().join("c-000002.vmdk");
    assert_eq!(compare(&top, &raw), 0, "after consolidate");

    // Revert the top: the writes made in it are gone.
    let mut c2 = c2;
    c2.revert().unwrap();
    drop(c2);
    std::fs::write(&raw, &before_top_writes).unwrap();
    assert_eq!(compare(&top, &raw), 0, "after revert");

    // Consolidate the top into the base: a single flat disk remains.
    let mut c2 = DiskChain::open(s.clone(), "c-000002.vmdk", true).unwrap();
    let mut reference = before_top_writes;
    apply(&mut c2, &mut reference, &random_writes(&mut rng, cap, 10));
    let base = c2.consolidate(1).unwrap();
    assert_eq!(base.layers().len(), 1);
    assert_eq!(base.top().name, "c.vmdk");
    std::fs::write(&raw, &reference).unwrap();
    assert_eq!(
        compare(&dir.path().join("c.vmdk"), &raw),
        0,
        "after consolidating the top"
    );
}

/// A parent changed after the snapshot: qemu and DiskChain both refuse.
#[test]
fn modified_parent_is_refused_by_both() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    create_flat_disk(&*s, "p.vmdk", 4 * MIB, &FlatDiskOptions::default()).unwrap();
    create_snapshot(&*s, "p.vmdk", "p-000001.vmdk", 8).unwrap();
    let mut base = DiskChain::open(s.clone(), "p.vmdk", true).unwrap();
    base.write_at(0, &[1u8; 512]).unwrap();
    drop(base);
    match DiskChain::open(s.clone(), "p-000001.vmdk", false) {
        Err(VmdkError::CidMismatch { .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a chain whose parent changed"),
    }
    let out = dir.path().join("o.raw");
    let (code, _) = run(tool("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(dir.path().join("p-000001.vmdk"))
        .arg(&out));
    assert_ne!(code, 0, "qemu read through a parent whose CID changed");
}

/// The reverse direction: flat VMDKs made by qemu-img open with DiskChain;
/// qemu's hosted sparse (KDMV) is refused with a clear error.
#[test]
fn disks_made_by_qemu_img_open_with_disk_chain() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let cap = 6 * MIB;
    let mut rng = StdRng::seed_from_u64(99);
    let mut data = vec![0u8; cap as usize];
    for (off, w) in random_writes(&mut rng, cap, 30) {
        data[off as usize..off as usize + w.len()].copy_from_slice(&w);
    }
    let raw = dir.path().join("src.raw");
    std::fs::write(&raw, &data).unwrap();
    for sub in ["monolithicFlat", "twoGbMaxExtentFlat"] {
        let name = format!("q-{sub}.vmdk");
        let (code, _) = run(tool("qemu-img")
            .args(["convert", "-f", "raw", "-O", "vmdk", "-o"])
            .arg(format!("subformat={sub}"))
            .arg(&raw)
            .arg(dir.path().join(&name)));
        assert_eq!(code, 0);
        let chain = DiskChain::open(s.clone(), &name, false).unwrap();
        assert_eq!(chain.capacity(), cap);
        assert!(read_all(&chain) == data, "{sub} read differs");
    }
    let (code, _) = run(tool("qemu-img")
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentSparse",
        ])
        .arg(&raw)
        .arg(dir.path().join("q-sparse.vmdk")));
    assert_eq!(code, 0);
    match DiskChain::open(s.clone(), "q-sparse.vmdk", false) {
        Err(VmdkError::Unsupported { what, .. }) => assert!(what.contains("KDMV"), "{what}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a KDMV extent"),
    }
}

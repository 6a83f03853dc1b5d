//! READs answered straight from the image's memory mapping
//! (`BlockDev::cached_view`, docs/fuse.md) serve the right bytes: after
//! overwrites through this mount, after another host process wrote and
//! fsynced the file (one page cache under both mappings), and never a
//! freed block's old bytes in a file that reuses it after a truncate or
//! an unlink. Each mount logs at exit how its READs were answered; the
//! test requires the mapping to have answered some, so it cannot pass
//! on the copy path alone (unless `VMFS_NO_MMAP_READ=1` is set, which it
//! passes on to the mounts to check the copy path the same way).

mod fuse_util;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use fuse_util::{check_image, fuse_or_skip, make_image, mount_env, MountProc};

const MIB: usize = 1 << 20;

/// Bytes that name their file (`tag`) and offset, so a block's old owner
/// shows in a failure.
fn pattern(tag: u8, off: usize, len: usize) -> Vec<u8> {
    (off..off + len)
        .map(|i| {
            let x = (i as u64 ^ (u64::from(tag) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (x >> 56) as u8 | 1
        })
        .collect()
}

/// The whole file through a fresh open (an open drops FUSE's cached
/// pages, so every byte is a READ answered by the mount).
fn read_all(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(p).unwrap().read_to_end(&mut v).unwrap();
    v
}

/// Panic naming the first differing offset and whose bytes were there.
fn same(what: &str, got: &[u8], want: &[u8], old: &[(u8, &str)]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        let end = (i + 64).min(got.len());
        let owner = old
            .iter()
            .find(|(tag, _)| pattern(*tag, i, end - i) == got[i..end])
            .map_or("unknown bytes", |(_, name)| name);
        panic!(
            "{what}: first difference at byte {i}: got {:02x?}, want {:02x?} ({owner})",
            &got[i..end.min(i + 8)],
            &want[i..end.min(i + 8)]
        );
    }
}

/// READs a stopped mount answered from the image mapping, from its log;
/// `direct`: it must have said that files were opened with direct I/O.
fn mapped_reads(name: &str, p: MountProc, direct: bool) -> u64 {
    let (st, out) = p.stop();
    assert!(st.success(), "{name} exited {st}:\n{out}");
    assert_eq!(
        out.contains("direct I/O on"),
        direct,
        "{name}: direct I/O on or off against the options:\n{out}"
    );
    let line = out
        .lines()
        .find(|l| l.contains("READs:"))
        .unwrap_or_else(|| panic!("{name} logged no READ counts:\n{out}"));
    let n = line
        .split("READs: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name}: unreadable count line {line}"));
    eprintln!(
        "{name}: {}",
        line.split("; ")
            .last()
            .unwrap_or(line)
            .trim_end_matches(')')
    );
    n
}

#[test]
fn mapped_reads_serve_current_bytes_and_never_a_freed_blocks_old_owner() {
    if fuse_or_skip("fuse_mmap_read") {
        scenario(&[]);
    }
}

/// The same with `--direct-io`: no FUSE page cache, every read(2) is a
/// READ (at the caller's offsets and sizes) answered from the mapping.
#[test]
fn mapped_reads_under_direct_io() {
    if fuse_or_skip("fuse_mmap_read") {
        scenario(&["--direct-io"]);
    }
}

fn scenario(extra: &[&str]) {
    let no_mmap = std::env::var("VMFS_NO_MMAP_READ").unwrap_or_default();
    let env = [
        ("VMFS_LOG", "vmfs::fuse=info"),
        ("VMFS_NO_MMAP_READ", no_mmap.as_str()),
        // Only `extra` decides.
        ("VMFS_DIRECT_IO", ""),
    ];
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 1 << 30);
    let a = mount_env(&img, &dir.path().join("a"), "host-a", extra, &env);
    let b = mount_env(&img, &dir.path().join("b"), "host-b", extra, &env);

    // Overwrites through this mount, aligned and not, show at once.
    let pa = a.mountpoint.join("over.bin");
    let mut want = pattern(1, 0, 4 * MIB + 777);
    std::fs::write(&pa, &want).unwrap();
    same("first read", &read_all(&pa), &want, &[]);
    {
        let f = OpenOptions::new().write(true).open(&pa).unwrap();
        for (tag, off, len) in [(2u8, MIB, MIB), (3, 12_345, 1000), (4, 3 * MIB + 5, 70_000)] {
            let bytes = pattern(tag, off, len);
            f.write_all_at(&bytes, off as u64).unwrap();
            want[off..off + len].copy_from_slice(&bytes);
            same(
                &format!("after overwrite {tag}"),
                &read_all(&pa),
                &want,
                &[(1, "the bytes before the overwrite")],
            );
        }
    }

    // Another host process writes and fsyncs; this one reads (a shared
    // open, so the fast path and the mapping), then again after a rewrite.
    let shared_a = a.mountpoint.join("shared.bin");
    let shared_b = b.mountpoint.join("shared.bin");
    for (round, tag) in [10u8, 11, 12].into_iter().enumerate() {
        let data = pattern(tag, 0, 3 * MIB + 100);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&shared_b)
            .unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let olds: Vec<(u8, &str)> = (10..tag).map(|t| (t, "an older version")).collect();
        same(
            &format!("host A reading host B's version {round}"),
            &read_all(&shared_a),
            &data,
            &olds,
        );
    }

    // A block freed by truncate or unlink and given to another file:
    // the new owner reads its own bytes or zeros, never the old ones.
    let freed = [
        (20u8, "the truncated file's old bytes"),
        (21, "the unlinked file's bytes"),
    ];
    let t = a.mountpoint.join("trunc.bin");
    std::fs::write(&t, pattern(20, 0, 4 * MIB)).unwrap();
    same(
        "before truncate",
        &read_all(&t),
        &pattern(20, 0, 4 * MIB),
        &[],
    );
    {
        let f = OpenOptions::new().write(true).open(&t).unwrap();
        f.set_len(MIB as u64 + 300).unwrap();
        f.set_len(4 * MIB as u64).unwrap();
    }
    let mut want = pattern(20, 0, MIB + 300);
    want.resize(4 * MIB, 0);
    same("truncated down and up", &read_all(&t), &want, &freed);

    let u = a.mountpoint.join("unlinked.bin");
    std::fs::write(&u, pattern(21, 0, 8 * MIB)).unwrap();
    same(
        "before unlink",
        &read_all(&u),
        &pattern(21, 0, 8 * MIB),
        &[],
    );
    std::fs::remove_file(&u).unwrap();
    for n in 0..6u8 {
        // New files take free blocks (the freed ones once discarded):
        // sparse ones with a little data, and full ones.
        let p = a.mountpoint.join(format!("new{n}.bin"));
        let mut f = std::fs::File::create(&p).unwrap();
        let mut want = vec![0u8; 4 * MIB];
        if n % 2 == 0 {
            f.set_len(want.len() as u64).unwrap();
            let bytes = pattern(30 + n, MIB + 4096, 8192);
            f.write_all_at(&bytes, (MIB + 4096) as u64).unwrap();
            want[MIB + 4096..MIB + 4096 + 8192].copy_from_slice(&bytes);
        } else {
            want = pattern(30 + n, 0, 4 * MIB);
            f.write_all(&want).unwrap();
        }
        f.sync_all().unwrap();
        drop(f);
        same(&format!("new file {n}"), &read_all(&p), &want, &freed);
        // Through the other host too.
        same(
            &format!("new file {n} through host B"),
            &read_all(&b.mountpoint.join(format!("new{n}.bin"))),
            &want,
            &freed,
        );
    }

    let direct = extra.contains(&"--direct-io");
    let on_a = mapped_reads("host-a", a, direct);
    let on_b = mapped_reads("host-b", b, direct);
    if no_mmap == "1" {
        assert_eq!(
            on_a + on_b,
            0,
            "VMFS_NO_MMAP_READ=1 must turn the mapping off"
        );
    } else {
        assert!(on_a > 0, "host A answered no READ from the image mapping");
        assert!(on_b > 0, "host B answered no READ from the image mapping");
    }
    check_image(&img);
}

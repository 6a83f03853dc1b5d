//! POSIX behaviour of a `vmfs mount` (in the manner of pjdfstest): the
//! errno of each failure, rename replacing, hard links, symlinks,
//! truncate, sparse files with SEEK_DATA/SEEK_HOLE, fallocate, statfs, and
//! EBUSY for a file another host has open for write.
//!
//! EXDEV is not tested: one mount is one volume, so every rename inside it
//! is on the same filesystem (renames to other mounts get EXDEV from the
//! kernel before vmfs sees them).

mod fuse_util;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use fuse_util::{check_image, errno_of, fuse_ready, make_image, mount};

const MIB: u64 = 1 << 20;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// errno of a libc call that returned -1 (or Ok(value)).
fn sys(r: libc::c_long) -> std::io::Result<libc::c_long> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn lseek(f: &File, off: i64, whence: i32) -> std::io::Result<i64> {
    use std::os::fd::AsRawFd;
    // SAFETY: lseek on an open descriptor we own.
    sys(unsafe { libc::lseek(f.as_raw_fd(), off, whence) } as libc::c_long)
}

fn fallocate(f: &File, mode: i32, off: i64, len: i64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on an open descriptor we own.
    sys(unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) } as libc::c_long).map(|_| ())
}

fn statvfs(p: &Path) -> libc::statvfs {
    let c = cpath(p);
    // SAFETY: plain data, filled in by statvfs.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out pointer.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    assert_eq!(r, 0, "statvfs: {}", std::io::Error::last_os_error());
    s
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> std::io::Result<()> {
    let (a, b) = (cpath(from), cpath(to));
    // SAFETY: valid NUL-terminated paths; AT_FDCWD directories.
    sys(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    })
    .map(|_| ())
}

fn errnos(m: &Path) {
    let missing = m.join("missing");
    assert_eq!(errno_of(File::open(&missing), "open missing"), libc::ENOENT);
    assert_eq!(
        errno_of(fs::metadata(&missing), "stat missing"),
        libc::ENOENT
    );
    assert_eq!(
        errno_of(fs::remove_file(&missing), "unlink missing"),
        libc::ENOENT
    );
    assert_eq!(
        errno_of(fs::remove_dir(&missing), "rmdir missing"),
        libc::ENOENT
    );
    assert_eq!(
        errno_of(fs::rename(&missing, m.join("x")), "rename missing"),
        libc::ENOENT
    );
    assert_eq!(
        errno_of(File::create(m.join("nodir/f")), "create under missing dir"),
        libc::ENOENT
    );

    let d = m.join("d");
    fs::create_dir(&d).unwrap();
    let f = m.join("f");
    fs::write(&f, b"file").unwrap();
    assert_eq!(errno_of(fs::create_dir(&d), "mkdir existing"), libc::EEXIST);
    assert_eq!(
        errno_of(fs::create_dir(&f), "mkdir over file"),
        libc::EEXIST
    );
    assert_eq!(
        errno_of(
            OpenOptions::new().write(true).create_new(true).open(&f),
            "O_EXCL existing"
        ),
        libc::EEXIST
    );
    assert_eq!(
        errno_of(fs::hard_link(&f, &d), "link onto existing"),
        libc::EEXIST
    );
    assert_eq!(
        errno_of(std::os::unix::fs::symlink("t", &f), "symlink onto existing"),
        libc::EEXIST
    );

    fs::write(d.join("inside"), b"x").unwrap();
    assert_eq!(
        errno_of(fs::remove_dir(&d), "rmdir non-empty"),
        libc::ENOTEMPTY
    );
    let e = m.join("e");
    fs::create_dir(&e).unwrap();
    let r = errno_of(fs::rename(&e, &d), "rename dir onto non-empty dir");
    assert!(r == libc::ENOTEMPTY || r == libc::EEXIST, "errno {r}");

    assert_eq!(
        errno_of(
            OpenOptions::new().write(true).open(&d),
            "open dir for write"
        ),
        libc::EISDIR
    );
    assert_eq!(errno_of(fs::remove_file(&d), "unlink dir"), libc::EISDIR);
    assert_eq!(
        errno_of(fs::rename(&f, &e), "rename file onto dir"),
        libc::EISDIR
    );

    assert_eq!(errno_of(fs::remove_dir(&f), "rmdir file"), libc::ENOTDIR);
    assert_eq!(
        errno_of(File::open(f.join("x")), "path through file"),
        libc::ENOTDIR
    );
    assert_eq!(
        errno_of(fs::create_dir(f.join("x")), "mkdir under file"),
        libc::ENOTDIR
    );
    assert_eq!(
        errno_of(fs::rename(&e, &f), "rename dir onto file"),
        libc::ENOTDIR
    );
    assert_eq!(errno_of(fs::read_dir(&f), "opendir file"), libc::ENOTDIR);

    let long = m.join("n".repeat(256));
    assert_eq!(
        errno_of(File::create(&long), "256-byte name"),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno_of(fs::create_dir(&long), "256-byte dir name"),
        libc::ENAMETOOLONG
    );
    let longest = m.join("n".repeat(255));
    fs::write(&longest, b"ok").unwrap();
    assert_eq!(fs::read(&longest).unwrap(), b"ok");
    fs::remove_file(&longest).unwrap();

    // mknod of a FIFO: not in the on-disk format.
    let fifo = cpath(&m.join("fifo"));
    // SAFETY: valid path.
    let r = sys(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) } as libc::c_long);
    assert_eq!(errno_of(r, "mkfifo"), libc::EPERM);
    // renameat2 flags vmfs cannot do atomically (EXCHANGE needs both names).
    let g = m.join("g");
    assert_eq!(
        errno_of(
            renameat2(&f, &g, libc::RENAME_NOREPLACE),
            "RENAME_NOREPLACE"
        ),
        libc::EINVAL
    );
    fs::write(&g, b"g").unwrap();
    assert_eq!(
        errno_of(renameat2(&f, &g, libc::RENAME_EXCHANGE), "RENAME_EXCHANGE"),
        libc::EINVAL
    );
    assert_eq!(fs::read(&g).unwrap(), b"g");
    fs::remove_file(&g).unwrap();
    fs::remove_file(d.join("inside")).unwrap();
    fs::remove_dir(&d).unwrap();
    fs::remove_dir(&e).unwrap();
    fs::remove_file(&f).unwrap();
}

fn rename_and_links(m: &Path) {
    let a = m.join("a");
    let b = m.join("b");
    fs::write(&a, b"contents of a").unwrap();
    fs::write(&b, b"contents of b, longer").unwrap();
    let ino_a = fs::metadata(&a).unwrap().ino();
    fs::rename(&a, &b).unwrap();
    assert_eq!(
        errno_of(fs::metadata(&a), "old name after rename"),
        libc::ENOENT
    );
    assert_eq!(fs::read(&b).unwrap(), b"contents of a");
    assert_eq!(fs::metadata(&b).unwrap().ino(), ino_a);

    // Across directories, and a directory replacing an empty one.
    let d1 = m.join("d1");
    let d2 = m.join("d2");
    fs::create_dir(&d1).unwrap();
    fs::create_dir(&d2).unwrap();
    fs::rename(&b, d1.join("b")).unwrap();
    fs::rename(&d1, &d2).unwrap();
    assert_eq!(fs::read(d2.join("b")).unwrap(), b"contents of a");
    assert!(!d1.exists());

    // Hard links share the inode and count it.
    let l1 = d2.join("b");
    let l2 = m.join("hard");
    fs::hard_link(&l1, &l2).unwrap();
    let (s1, s2) = (fs::metadata(&l1).unwrap(), fs::metadata(&l2).unwrap());
    assert_eq!(s1.ino(), s2.ino());
    assert_eq!(s2.nlink(), 2);
    fs::write(&l2, b"through the link").unwrap();
    assert_eq!(fs::read(&l1).unwrap(), b"through the link");
    fs::remove_file(&l1).unwrap();
    assert_eq!(fs::metadata(&l2).unwrap().nlink(), 1);
    assert_eq!(fs::read(&l2).unwrap(), b"through the link");
    assert_eq!(
        errno_of(fs::hard_link(&d2, m.join("dirlink")), "link a dir"),
        libc::EPERM
    );
    // Directory link counts: 2 + subdirectories.
    let before = fs::metadata(&d2).unwrap().nlink();
    fs::create_dir(d2.join("sub")).unwrap();
    assert_eq!(fs::metadata(&d2).unwrap().nlink(), before + 1);
    fs::remove_dir(d2.join("sub")).unwrap();
    assert_eq!(fs::metadata(&d2).unwrap().nlink(), before);

    // Symlinks: read back, followed, dangling, longest target.
    let s = m.join("sym");
    std::os::unix::fs::symlink("hard", &s).unwrap();
    assert_eq!(fs::read_link(&s).unwrap(), Path::new("hard"));
    assert!(fs::symlink_metadata(&s).unwrap().file_type().is_symlink());
    assert_eq!(fs::read(&s).unwrap(), b"through the link");
    let dangling = m.join("dangling");
    std::os::unix::fs::symlink("nowhere", &dangling).unwrap();
    assert_eq!(
        errno_of(File::open(&dangling), "open dangling symlink"),
        libc::ENOENT
    );
    let target = "t/".repeat(2047) + "x";
    let long = m.join("longsym");
    std::os::unix::fs::symlink(&target, &long).unwrap();
    assert_eq!(fs::read_link(&long).unwrap().as_os_str().len(), 4095);
    for p in [&s, &dangling, &long, &l2] {
        fs::remove_file(p).unwrap();
    }
    fs::remove_dir(&d2).unwrap();

    // Many names: every one listed once.
    let many = m.join("many");
    fs::create_dir(&many).unwrap();
    for i in 0..300 {
        File::create(many.join(format!("entry-{i:04}"))).unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(&many)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let want: Vec<String> = (0..300).map(|i| format!("entry-{i:04}")).collect();
    assert_eq!(names, want);
    for n in &names {
        fs::remove_file(many.join(n)).unwrap();
    }
    fs::remove_dir(&many).unwrap();
}

fn attributes_and_truncate(m: &Path) {
    let f = m.join("attrs");
    fs::write(&f, b"0123456789").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o640);
    std::os::unix::fs::chown(&f, Some(1234), Some(5678)).unwrap();
    let md = fs::metadata(&f).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000_000, 123_456_789);
    File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
        .unwrap();
    let md = fs::metadata(&f).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_000_000_000, 123_456_789));
    assert_eq!((md.atime(), md.atime_nsec()), (1_000_000_000, 123_456_789));

    // Truncate down mid-block, then up: the cut-off bytes read as zeros.
    let g = m.join("trunc");
    let data: Vec<u8> = (0..3 * MIB + 500).map(|i| (i % 251) as u8 + 1).collect();
    fs::write(&g, &data).unwrap();
    let h = OpenOptions::new().write(true).open(&g).unwrap();
    h.set_len(MIB + 77).unwrap();
    assert_eq!(fs::metadata(&g).unwrap().len(), MIB + 77);
    h.set_len(2 * MIB).unwrap();
    drop(h);
    let back = fs::read(&g).unwrap();
    assert_eq!(back.len() as u64, 2 * MIB);
    assert_eq!(&back[..(MIB + 77) as usize], &data[..(MIB + 77) as usize]);
    assert!(back[(MIB + 77) as usize..].iter().all(|&b| b == 0));
    // O_TRUNC.
    File::create(&g).unwrap();
    assert_eq!(fs::metadata(&g).unwrap().len(), 0);
    fs::remove_file(&g).unwrap();
    fs::remove_file(&f).unwrap();
}

fn sparse_seek_fallocate(m: &Path) {
    let p = m.join("sparse");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.seek(SeekFrom::Start(10 * MIB)).unwrap();
    f.write_all(&[0xAB; 4096]).unwrap();
    let md = f.metadata().unwrap();
    assert_eq!(md.len(), 10 * MIB + 4096);
    assert!(md.blocks() * 512 <= 2 * MIB, "{} sectors held", md.blocks());
    assert_eq!(lseek(&f, 0, libc::SEEK_DATA).unwrap(), (10 * MIB) as i64);
    assert_eq!(lseek(&f, 0, libc::SEEK_HOLE).unwrap(), 0);
    assert_eq!(
        lseek(&f, (10 * MIB) as i64, libc::SEEK_HOLE).unwrap(),
        (10 * MIB + 4096) as i64
    );
    let past = lseek(&f, (11 * MIB) as i64, libc::SEEK_DATA);
    assert_eq!(errno_of(past, "SEEK_DATA past the end"), libc::ENXIO);
    let mut head = vec![1u8; 64 * 1024];
    f.read_exact_at(&mut head, 5 * MIB).unwrap();
    assert!(head.iter().all(|&b| b == 0));

    // Data at 2 MiB too; punch it out again.
    f.write_all_at(&[7u8; 8192], 2 * MIB).unwrap();
    assert_eq!(lseek(&f, 0, libc::SEEK_DATA).unwrap(), (2 * MIB) as i64);
    let held = f.metadata().unwrap().blocks();
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    fallocate(&f, punch, (2 * MIB) as i64, MIB as i64).unwrap();
    assert!(f.metadata().unwrap().blocks() < held);
    assert_eq!(lseek(&f, 0, libc::SEEK_DATA).unwrap(), (10 * MIB) as i64);
    let mut b = vec![1u8; 8192];
    f.read_exact_at(&mut b, 2 * MIB).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    // Punching needs KEEP_SIZE.
    let r = fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE, 0, 4096);
    assert_eq!(errno_of(r, "punch without KEEP_SIZE"), libc::EOPNOTSUPP);

    // Preallocate past the end (size grows; reads zeros), KEEP_SIZE does not.
    fallocate(&f, 0, (12 * MIB) as i64, MIB as i64).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 13 * MIB);
    fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, (20 * MIB) as i64, MIB as i64).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 13 * MIB);
    let mut z = vec![1u8; 4096];
    f.read_exact_at(&mut z, 12 * MIB + 100).unwrap();
    assert!(z.iter().all(|&x| x == 0));

    // Zero range inside data.
    f.write_all_at(&[9u8; 3 * 4096], 10 * MIB).unwrap();
    fallocate(
        &f,
        libc::FALLOC_FL_ZERO_RANGE,
        (10 * MIB + 4096) as i64,
        4096,
    )
    .unwrap();
    let mut r = vec![0u8; 3 * 4096];
    f.read_exact_at(&mut r, 10 * MIB).unwrap();
    assert!(r[..4096].iter().all(|&x| x == 9));
    assert!(r[4096..8192].iter().all(|&x| x == 0));
    assert!(r[8192..].iter().all(|&x| x == 9));
    assert_eq!(
        errno_of(fallocate(&f, 0, 0, 0), "fallocate len 0"),
        libc::EINVAL
    );
    drop(f);
    fs::remove_file(&p).unwrap();
}

fn statfs_tracks_space(m: &Path) {
    let before = statvfs(m);
    assert!(before.f_blocks > 0 && before.f_bfree <= before.f_blocks);
    assert_eq!(before.f_namemax, 255);
    let p = m.join("space");
    let mut f = File::create(&p).unwrap();
    f.write_all(&vec![0x5A; (8 * MIB) as usize]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let bs = before.f_frsize;
    let during = statvfs(m);
    let used = (before.f_bfree - during.f_bfree) * bs;
    assert!(used >= 8 * MIB, "8 MiB written, free space fell by {used}");
    assert!(during.f_ffree < before.f_ffree, "an inode was used");
    fs::remove_file(&p).unwrap();
    let after = statvfs(m);
    assert!(
        (after.f_bfree - during.f_bfree) * bs >= 8 * MIB,
        "free space after delete: {} -> {} blocks",
        during.f_bfree,
        after.f_bfree
    );
}

/// A file another host has open for write: open-for-write, truncate and
/// chmod here get EBUSY; reading still works.
fn busy_on_another_host(m: &Path, other: &Path) {
    let p = m.join("busy");
    fs::write(&p, b"shared").unwrap();
    let held = OpenOptions::new()
        .write(true)
        .open(other.join("busy"))
        .unwrap();
    let r = OpenOptions::new().write(true).open(&p);
    assert_eq!(
        errno_of(r, "write-open of a file busy elsewhere"),
        libc::EBUSY
    );
    let c = cpath(&p);
    // SAFETY: valid path.
    let r = sys(unsafe { libc::truncate(c.as_ptr(), 0) } as libc::c_long);
    assert_eq!(
        errno_of(r, "truncate of a file busy elsewhere"),
        libc::EBUSY
    );
    let r = fs::set_permissions(&p, fs::Permissions::from_mode(0o600));
    assert_eq!(errno_of(r, "chmod of a file busy elsewhere"), libc::EBUSY);
    let mut s = String::new();
    File::open(&p).unwrap().read_to_string(&mut s).unwrap();
    assert_eq!(s, "shared");
    drop(held);
}

#[test]
fn posix_errnos_and_semantics_on_a_mount() {
    if !fuse_ready("fuse_posix") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 2 << 30);
    let a = mount(&img, &dir.path().join("a"), "posix-a");
    let m = a.mountpoint.clone();
    errnos(&m);
    rename_and_links(&m);
    attributes_and_truncate(&m);
    sparse_seek_fallocate(&m);
    statfs_tracks_space(&m);
    {
        let b = mount(&img, &dir.path().join("b"), "posix-b");
        busy_on_another_host(&m, &b.mountpoint);
        let (st, out) = b.stop();
        assert!(st.success(), "mount B exited {st}:\n{out}");
    }
    let (st, out) = a.stop();
    assert!(st.success(), "mount A exited {st}:\n{out}");
    check_image(&img);
}

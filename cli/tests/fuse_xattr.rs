//! `user.*` extended attributes through a `vmfs mount`: set/get/list/
//! remove, XATTR_CREATE/REPLACE, the errnos (ENODATA, EEXIST, ERANGE,
//! E2BIG, ENOSPC, EOPNOTSUPP for other namespaces), persistence across a
//! remount, visibility on a second host, and a clean volume afterwards
//! (the attribute blocks of deleted files are freed).

mod fuse_util;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fuse_util::{check_image, fuse_ready, make_image, mount};

fn c(s: &[u8]) -> CString {
    CString::new(s).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn set(p: &Path, name: &str, v: &[u8], flags: i32) -> Result<(), i32> {
    let (p, n) = (c(p.as_os_str().as_bytes()), c(name.as_bytes()));
    // SAFETY: valid NUL-terminated strings and a value buffer of v.len().
    let r = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), flags) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// getxattr with a buffer of `cap` bytes (0: ask for the size).
fn get_cap(p: &Path, name: &str, cap: usize) -> Result<(usize, Vec<u8>), i32> {
    let (p, n) = (c(p.as_os_str().as_bytes()), c(name.as_bytes()));
    let mut buf = vec![0u8; cap];
    // SAFETY: valid strings; buf is cap bytes (null when cap is 0).
    let r = unsafe {
        libc::getxattr(
            p.as_ptr(),
            n.as_ptr(),
            if cap == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            cap,
        )
    };
    if r < 0 {
        return Err(errno());
    }
    buf.truncate(if cap == 0 { 0 } else { r as usize });
    Ok((r as usize, buf))
}

fn get(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    get_cap(p, name, 1 << 17).map(|(_, v)| v)
}

fn list_cap(p: &Path, cap: usize) -> Result<(usize, Vec<String>), i32> {
    let p = c(p.as_os_str().as_bytes());
    let mut buf = vec![0u8; cap];
    // SAFETY: valid path; buf is cap bytes (null when cap is 0).
    let r = unsafe {
        libc::listxattr(
            p.as_ptr(),
            if cap == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            cap,
        )
    };
    if r < 0 {
        return Err(errno());
    }
    let names = if cap == 0 {
        Vec::new()
    } else {
        buf[..r as usize]
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    };
    Ok((r as usize, names))
}

fn list(p: &Path) -> Vec<String> {
    list_cap(p, 1 << 16).unwrap().1
}

fn remove(p: &Path, name: &str) -> Result<(), i32> {
    let (p, n) = (c(p.as_os_str().as_bytes()), c(name.as_bytes()));
    // SAFETY: valid NUL-terminated strings.
    let r = unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn semantics(m: &Path) {
    let f = m.join("f");
    std::fs::write(&f, b"data").unwrap();
    let d = m.join("d");
    std::fs::create_dir(&d).unwrap();

    assert_eq!(list(&f), Vec::<String>::new());
    assert_eq!(get(&f, "user.none"), Err(libc::ENODATA));
    assert_eq!(remove(&f, "user.none"), Err(libc::ENODATA));

    set(&f, "user.b", b"two", 0).unwrap();
    set(&f, "user.a", b"one", 0).unwrap();
    set(&f, "user.empty", b"", 0).unwrap();
    set(&d, "user.dir", b"on a directory", 0).unwrap();
    assert_eq!(get(&f, "user.a").unwrap(), b"one");
    assert_eq!(get(&f, "user.empty").unwrap(), b"");
    assert_eq!(get(&d, "user.dir").unwrap(), b"on a directory");
    let mut names = list(&f);
    names.sort();
    assert_eq!(names, ["user.a", "user.b", "user.empty"]);

    // XATTR_CREATE / XATTR_REPLACE.
    assert_eq!(
        set(&f, "user.a", b"x", libc::XATTR_CREATE),
        Err(libc::EEXIST)
    );
    assert_eq!(
        set(&f, "user.new", b"x", libc::XATTR_REPLACE),
        Err(libc::ENODATA)
    );
    set(&f, "user.a", b"replaced", libc::XATTR_REPLACE).unwrap();
    set(&f, "user.c", b"created", libc::XATTR_CREATE).unwrap();
    assert_eq!(get(&f, "user.a").unwrap(), b"replaced");

    // Size probe and short buffers.
    assert_eq!(get_cap(&f, "user.a", 0).unwrap().0, 8);
    assert_eq!(get_cap(&f, "user.a", 3), Err(libc::ERANGE));
    let (need, _) = list_cap(&f, 0).unwrap();
    assert_eq!(need, "user.a\0user.b\0user.c\0user.empty\0".len());
    assert_eq!(list_cap(&f, 4), Err(libc::ERANGE));

    // Names and sizes.
    let long = format!("user.{}", "n".repeat(251));
    assert_eq!(set(&f, &long, b"v", 0), Err(libc::ERANGE), "256-byte name");
    let longest = format!("user.{}", "n".repeat(250));
    set(&f, &longest, b"v", 0).unwrap();
    assert_eq!(get(&f, &longest).unwrap(), b"v");
    remove(&f, &longest).unwrap();
    assert_eq!(set(&f, "user.big", &vec![1u8; 65537], 0), Err(libc::E2BIG));
    assert_eq!(set(&f, "user.big", &vec![1u8; 65536], 0), Err(libc::E2BIG));
    assert_eq!(get(&f, "user.big"), Err(libc::ENODATA));

    // Other namespaces are not stored.
    assert_eq!(set(&f, "trusted.t", b"v", 0), Err(libc::EOPNOTSUPP));
    assert_eq!(set(&f, "security.s", b"v", 0), Err(libc::EOPNOTSUPP));
    assert_eq!(get(&f, "trusted.t"), Err(libc::EOPNOTSUPP));

    // Filling one inode's block: ENOSPC, and what was set is intact.
    let g = m.join("full");
    std::fs::write(&g, b"").unwrap();
    let v = vec![0x5au8; 8000];
    let mut stored = 0;
    let err = loop {
        match set(&g, &format!("user.k{stored}"), &v, 0) {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 100, "a 64 KiB block cannot hold 100 × 8000 bytes");
    };
    assert_eq!(err, libc::ENOSPC);
    assert!(stored >= 7, "{stored} attributes of 8000 bytes fit");
    for k in 0..stored {
        assert_eq!(get(&g, &format!("user.k{k}")).unwrap(), v);
    }

    // Removing the last attribute frees the block; removing a file with
    // attributes frees it too (check_image finds leaks).
    remove(&f, "user.empty").unwrap();
    let mut names = list(&f);
    names.sort();
    assert_eq!(names, ["user.a", "user.b", "user.c"]);
    for n in ["user.a", "user.b", "user.c"] {
        remove(&f, n).unwrap();
    }
    assert_eq!(list(&f), Vec::<String>::new());
    assert_eq!(std::fs::read(&f).unwrap(), b"data");
    std::fs::remove_file(&g).unwrap();
    set(&f, "user.keep", b"kept", 0).unwrap();
}

#[test]
fn user_xattrs_on_a_mount() {
    if !fuse_ready("fuse_xattr") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 1 << 30);
    let a = mount(&img, &dir.path().join("a"), "xattr-a");
    semantics(&a.mountpoint);
    // A second host sees the attributes, and its changes are seen back.
    let b = mount(&img, &dir.path().join("b"), "xattr-b");
    assert_eq!(get(&b.mountpoint.join("f"), "user.keep").unwrap(), b"kept");
    assert_eq!(
        get(&b.mountpoint.join("d"), "user.dir").unwrap(),
        b"on a directory"
    );
    set(&b.mountpoint.join("f"), "user.fromb", b"B", 0).unwrap();
    assert_eq!(get(&a.mountpoint.join("f"), "user.fromb").unwrap(), b"B");
    let (st, out) = b.stop();
    assert!(st.success(), "mount B exited {st}:\n{out}");
    let (st, out) = a.stop();
    assert!(st.success(), "mount A exited {st}:\n{out}");
    check_image(&img);
    // After a remount everything is still there.
    let a = mount(&img, &dir.path().join("a"), "xattr-c");
    let f = a.mountpoint.join("f");
    let mut names = list(&f);
    names.sort();
    assert_eq!(names, ["user.fromb", "user.keep"]);
    std::fs::remove_file(&f).unwrap();
    std::fs::remove_dir(a.mountpoint.join("d")).unwrap();
    let (st, out) = a.stop();
    assert!(st.success(), "mount C exited {st}:\n{out}");
    let r = check_image(&img);
    assert_eq!(r.inodes, 1, "only the root is left: {r:?}");
}

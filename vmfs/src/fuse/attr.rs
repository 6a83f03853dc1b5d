//! Attributes and times as the FUSE protocol carries them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo, TimeOrNow};

use crate::fs::Attr;

/// A time in nanoseconds since the epoch (negative: before it).
pub fn system_time(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH.checked_add(d).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

/// Nanoseconds since the epoch of `t` (saturating).
pub fn nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos())
            .map(|n| -n)
            .unwrap_or(i64::MIN),
    }
}

/// A setattr time: a given time or now.
pub fn time_or_now(t: TimeOrNow) -> i64 {
    match t {
        TimeOrNow::SpecificTime(t) => nanos(t),
        TimeOrNow::Now => nanos(SystemTime::now()),
    }
}

/// The file type of a mode (`None` for a type FUSE has no name for).
pub fn kind(mode: u32) -> Option<FileType> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG => FileType::RegularFile,
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => return None,
    })
}

/// The file type of a directory entry's `dtype` (`(mode & S_IFMT) >> 12`).
pub fn kind_of_dtype(dtype: u8) -> FileType {
    kind(u32::from(dtype) << 12).unwrap_or(FileType::RegularFile)
}

/// What `stat(2)` shows for `a`.
pub fn file_attr(a: &Attr, block_size: u32) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.allocated.div_ceil(512),
        atime: system_time(a.atime_ns),
        mtime: system_time(a.mtime_ns),
        ctime: system_time(a.ctime_ns),
        crtime: system_time(a.btime_ns),
        kind: kind(a.mode).unwrap_or(FileType::RegularFile),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: block_size,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_both_sides_of_the_epoch() {
        for ns in [0i64, 1, 1_700_000_000_123_456_789, -1, -86_400_000_000_007] {
            assert_eq!(nanos(system_time(ns)), ns);
        }
    }

    #[test]
    fn types_follow_the_mode_and_dtype() {
        assert_eq!(kind(libc::S_IFDIR | 0o755), Some(FileType::Directory));
        assert_eq!(kind(libc::S_IFLNK | 0o777), Some(FileType::Symlink));
        assert_eq!(kind(0o644), None);
        assert_eq!(
            kind_of_dtype((libc::S_IFREG >> 12) as u8),
            FileType::RegularFile
        );
        assert_eq!(
            kind_of_dtype((libc::S_IFDIR >> 12) as u8),
            FileType::Directory
        );
    }
}

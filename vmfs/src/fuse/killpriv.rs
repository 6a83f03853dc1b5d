//! Clearing set-user-ID and set-group-ID bits on write, truncate and chown.
//!
//! With `FUSE_HANDLE_KILLPRIV_V2` negotiated, the kernel no longer asks
//! `getxattr("security.capability")` before every write (its
//! `file_remove_privs` check: one whole round trip per write, since the
//! mount has xattrs); in exchange the filesystem clears the bits itself,
//! as the VFS would:
//! - write by a caller without CAP_FSETID: the kernel flags the request
//!   (`FUSE_WRITE_KILL_SUIDGID`);
//! - truncate by a caller without CAP_FSETID: the kernel sends
//!   `FATTR_KILL_SUIDGID`, which fuser 0.18 does not pass on, so the
//!   caller's uid stands in for the capability (uid 0: has it);
//! - chown: always (the kernel drops the mode it would have sent).
//!
//! set-group-ID is cleared only with group execute (without it the bit
//! means mandatory locking, which the VFS leaves alone).

use crate::fs::{Attr, SetAttr};

use super::{fail, Res, VmfsFuse};

/// `mode` with the privilege bits a modification clears, or `None` when
/// nothing changes (not a regular file, or no such bit set).
pub(super) fn killed_mode(mode: u32) -> Option<u32> {
    if mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    let mut m = mode & !libc::S_ISUID;
    if m & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP {
        m &= !libc::S_ISGID;
    }
    (m != mode).then_some(m & 0o7777)
}

/// Does a setattr request oblige us to clear the bits? `caller_uid` stands
/// in for CAP_FSETID on truncate (see the module comment).
pub(super) fn setattr_kills(sa: &SetAttr, caller_uid: u32) -> bool {
    if sa.mode.is_some() {
        // An explicit chmod says what the mode is to be.
        return false;
    }
    sa.uid.is_some() || sa.gid.is_some() || (sa.size.is_some() && caller_uid != 0)
}

impl VmfsFuse {
    /// Clear `ino`'s set-ID bits if it has any (before a write by a caller
    /// without CAP_FSETID, as the VFS does).
    pub(super) fn kill_suid(&self, ino: u64) -> Res<()> {
        let a: Attr = self.do_getattr(ino)?;
        if let Some(mode) = killed_mode(a.mode) {
            let sa = SetAttr {
                mode: Some(mode),
                ..SetAttr::default()
            };
            self.fs.setattr(ino, &sa).map_err(fail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suid_always_sgid_only_with_group_exec() {
        let reg = libc::S_IFREG;
        assert_eq!(killed_mode(reg | 0o4755), Some(0o755));
        assert_eq!(killed_mode(reg | 0o6755), Some(0o755));
        // setgid without group execute is mandatory locking: kept.
        assert_eq!(killed_mode(reg | 0o2745), None);
        assert_eq!(killed_mode(reg | 0o6745), Some(0o2745));
        assert_eq!(killed_mode(reg | 0o755), None);
        assert_eq!(killed_mode(libc::S_IFDIR | 0o2775), None);
    }

    #[test]
    fn truncate_kills_for_non_root_chown_always_chmod_never() {
        let size = SetAttr {
            size: Some(0),
            ..SetAttr::default()
        };
        assert!(setattr_kills(&size, 1000));
        assert!(!setattr_kills(&size, 0));
        let chown = SetAttr {
            uid: Some(5),
            ..SetAttr::default()
        };
        assert!(setattr_kills(&chown, 0));
        let chmod = SetAttr {
            mode: Some(0o4755),
            uid: Some(5),
            ..SetAttr::default()
        };
        assert!(!setattr_kills(&chmod, 1000));
        assert!(!setattr_kills(&SetAttr::default(), 1000));
    }
}

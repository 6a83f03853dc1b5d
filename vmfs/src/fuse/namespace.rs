//! Names: lookup, mknod/mkdir/symlink/link, unlink/rmdir, rename,
//! readlink, directory listing.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::{Errno, RenameFlags};

use crate::fs::{Attr, DirItem};

use super::{fail, Res, VmfsFuse};

/// Directory items fetched from [`crate::fs::Fs::readdir`] per call.
const LIST_BATCH: usize = 128;

impl VmfsFuse {
    /// The errno for `e`, an error of an operation on directory node(s)
    /// `dirs`: ESTALE when one of them now holds another inode (removed by
    /// another host and its number reused). The kernel then looks the path
    /// up again, instead of reporting ENOENT or ENOTDIR for a name that
    /// exists under the directory's current inode.
    pub(super) fn dir_error(&self, dirs: &[u64], e: crate::fs::FsError) -> Errno {
        if matches!(e.errno(), libc::ENOENT | libc::ENOTDIR)
            && dirs.iter().any(|&d| self.dir_node_current(d) == Ok(false))
        {
            return Errno::from_i32(libc::ESTALE);
        }
        fail(e)
    }

    /// ESTALE unless every directory node in `dirs` still holds the inode
    /// the kernel was handed (another host may have removed it and the
    /// number been reused for another directory: the operation would
    /// otherwise act on that one).
    pub(super) fn check_dirs(&self, dirs: &[u64]) -> Res<()> {
        for &d in dirs {
            if !self.dir_node_current(d)? {
                return Err(Errno::from_i32(libc::ESTALE));
            }
        }
        Ok(())
    }

    /// Does directory node `d` still hold the directory the kernel was
    /// handed (same generation, still a directory)?
    fn dir_node_current(&self, d: u64) -> Res<bool> {
        let a = self.fs.getattr(d).map_err(fail)?;
        Ok(a.is_dir() && self.nodes.is_current(&a))
    }

    /// Hand `a` to the kernel (one more reference to its node).
    pub(super) fn entry(&self, a: Attr) -> Attr {
        self.nodes.remember(&a);
        a
    }

    pub(super) fn do_lookup(&self, parent: u64, name: &OsStr) -> Res<Attr> {
        self.gate_check()?;
        self.check_dirs(&[parent])?;
        match self.fs.lookup(parent, name.as_bytes()) {
            Ok(a) => Ok(self.entry(a)),
            Err(e) => Err(self.dir_error(&[parent], e)),
        }
    }

    /// Only regular files can be made by mknod here (FIFOs, sockets and
    /// device nodes are not in the on-disk format): EPERM for the rest.
    pub(super) fn do_mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        who: (u32, u32),
    ) -> Res<Attr> {
        self.gate_check()?;
        self.check_dirs(&[parent])?;
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return Err(Errno::from_i32(libc::EPERM));
        }
        let a = self
            .fs
            .create(parent, name.as_bytes(), mode & !umask, who.0, who.1)
            .map_err(|e| self.dir_error(&[parent], e))?;
        Ok(self.entry(a))
    }

    pub(super) fn do_mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        who: (u32, u32),
    ) -> Res<Attr> {
        self.gate_check()?;
        self.check_dirs(&[parent])?;
        let a = self
            .fs
            .mkdir(parent, name.as_bytes(), mode & !umask, who.0, who.1)
            .map_err(|e| self.dir_error(&[parent], e))?;
        Ok(self.entry(a))
    }

    pub(super) fn do_symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
        who: (u32, u32),
    ) -> Res<Attr> {
        self.gate_check()?;
        self.check_dirs(&[parent])?;
        let a = self
            .fs
            .symlink(parent, name.as_bytes(), target.as_bytes(), who.0, who.1)
            .map_err(|e| self.dir_error(&[parent], e))?;
        Ok(self.entry(a))
    }

    pub(super) fn do_link(&self, ino: u64, parent: u64, name: &OsStr) -> Res<Attr> {
        self.gate_check()?;
        self.check_dirs(&[parent])?;
        let a = self
            .fs
            .link(ino, parent, name.as_bytes())
            .map_err(|e| self.dir_error(&[parent], e))?;
        Ok(self.entry(a))
    }

    pub(super) fn do_unlink(&self, parent: u64, name: &OsStr) -> Res<()> {
        self.gate_check()?;
        self.check_dirs(&[parent])?;
        self.fs
            .unlink(parent, name.as_bytes())
            .map_err(|e| self.dir_error(&[parent], e))
    }

    pub(super) fn do_rmdir(&self, parent: u64, name: &OsStr) -> Res<()> {
        self.gate_check()?;
        self.check_dirs(&[parent])?;
        self.fs
            .rmdir(parent, name.as_bytes())
            .map_err(|e| self.dir_error(&[parent], e))
    }

    /// Plain rename (replacing the target). RENAME_NOREPLACE and
    /// RENAME_EXCHANGE are not atomic operations of [`crate::fs::Fs`]: EINVAL,
    /// as for a filesystem without them (callers fall back).
    pub(super) fn do_rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Res<()> {
        self.gate_check()?;
        self.check_dirs(&[parent, new_parent])?;
        if !flags.is_empty() {
            return Err(Errno::from_i32(libc::EINVAL));
        }
        self.fs
            .rename(parent, name.as_bytes(), new_parent, new_name.as_bytes())
            .map_err(|e| self.dir_error(&[parent, new_parent], e))
    }

    pub(super) fn do_readlink(&self, ino: u64) -> Res<Vec<u8>> {
        self.gate_check()?;
        self.fs.readlink(ino).map_err(fail)
    }

    /// Items of directory `ino` from `offset`, fed to `add` until it says
    /// the reply is full (true) or the directory ends.
    pub(super) fn list(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(&DirItem) -> bool,
    ) -> Res<()> {
        self.gate_check()?;
        self.check_dirs(&[ino])?;
        let mut from = offset;
        loop {
            let items = self
                .fs
                .readdir(ino, from, LIST_BATCH)
                .map_err(|e| self.dir_error(&[ino], e))?;
            let n = items.len();
            for it in &items {
                if add(it) {
                    return Ok(());
                }
                from = it.next;
            }
            if n < LIST_BATCH {
                return Ok(());
            }
        }
    }
}

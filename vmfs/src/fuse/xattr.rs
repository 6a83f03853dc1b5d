//! Extended-attribute requests: `user.*` attributes of `Fs`; the kernel's
//! size-probe protocol (size 0 asks for the length, a short buffer is
//! ERANGE) is handled here.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::Errno;

use crate::fs::XattrSet;

use super::{fail, Res, VmfsFuse};

/// What a getxattr/listxattr reply carries.
pub(super) enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

/// Answer a request with buffer `size` for `data`.
fn sized(data: Vec<u8>, size: u32) -> Res<XattrReply> {
    if size == 0 {
        return Ok(XattrReply::Size(data.len() as u32));
    }
    if data.len() > size as usize {
        return Err(Errno::from_i32(libc::ERANGE));
    }
    Ok(XattrReply::Data(data))
}

impl VmfsFuse {
    pub(super) fn do_setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> Res<()> {
        self.gate_check()?;
        let how = match flags {
            0 => XattrSet::Any,
            libc::XATTR_CREATE => XattrSet::Create,
            libc::XATTR_REPLACE => XattrSet::Replace,
            _ => return Err(Errno::from_i32(libc::EINVAL)),
        };
        self.fs
            .setxattr(ino, name.as_bytes(), value, how)
            .map_err(fail)
    }

    pub(super) fn do_getxattr(&self, ino: u64, name: &OsStr, size: u32) -> Res<XattrReply> {
        self.gate_check()?;
        let v = self.fs.getxattr(ino, name.as_bytes()).map_err(fail)?;
        sized(v, size)
    }

    pub(super) fn do_listxattr(&self, ino: u64, size: u32) -> Res<XattrReply> {
        self.gate_check()?;
        let mut out = Vec::new();
        for n in self.fs.listxattr(ino).map_err(fail)? {
            out.extend_from_slice(&n);
            out.push(0);
        }
        sized(out, size)
    }

    pub(super) fn do_removexattr(&self, ino: u64, name: &OsStr) -> Res<()> {
        self.gate_check()?;
        self.fs.removexattr(ino, name.as_bytes()).map_err(fail)
    }
}

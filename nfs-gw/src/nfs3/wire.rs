//! NFSv3 wire types (RFC 1813 §2.5–2.6): status codes, attribute
//! encoders, `sattr3` decoding, and the backend-error → `nfsstat3` mapping.

use crate::backend::{Attr, BackendError, SetAttr, SetTime, Timestamp};
use crate::xdr::{Decoder, Encoder, XdrError};

/// nfsstat3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nfsstat3 {
    Ok = 0,
    Perm = 1,
    NoEnt = 2,
    Io = 5,
    NxIo = 6,
    Acces = 13,
    Exist = 17,
    XDev = 18,
    NoDev = 19,
    NotDir = 20,
    IsDir = 21,
    Inval = 22,
    FBig = 27,
    NoSpc = 28,
    Rofs = 30,
    MLink = 31,
    NameTooLong = 63,
    NotEmpty = 66,
    DQuot = 69,
    Stale = 70,
    Remote = 71,
    BadHandle = 10001,
    NotSync = 10002,
    BadCookie = 10003,
    NotSupp = 10004,
    TooSmall = 10005,
    ServerFault = 10006,
    BadType = 10007,
    Jukebox = 10008,
}

/// The `nfsstat3` a backend error is reported as.
///
/// Two mappings are choices rather than translations:
///
/// * [`BackendError::Busy`] (a vmfs lock that is only transiently
///   unavailable: contention, or a dead host's lock being broken) →
///   `NFS3ERR_JUKEBOX`, "retry later": clients back off and resend, and the
///   lock is normally free within the dead-after time D.
/// * [`BackendError::LockedByOtherHost`] (another *live* host holds the file
///   EXCLUSIVE, e.g. the disk of a VM running there) → `NFS3ERR_ACCES`.
///   JUKEBOX would make the Linux client retry such a write for as long as
///   the VM runs — the application hangs with no error, which is "silent
///   failure" in practice. NFSv3 has no EBUSY/ETXTBSY; ACCES is the code
///   that fails the call at once with a clear meaning ("you may not write
///   this file now"), matching what a local process sees through the vmfs
///   FUSE mount.
pub fn status_of(e: &BackendError) -> Nfsstat3 {
    match e {
        BackendError::NoEnt => Nfsstat3::NoEnt,
        BackendError::Exist => Nfsstat3::Exist,
        BackendError::NotDir => Nfsstat3::NotDir,
        BackendError::IsDir => Nfsstat3::IsDir,
        BackendError::NotEmpty => Nfsstat3::NotEmpty,
        BackendError::NoSpace => Nfsstat3::NoSpc,
        BackendError::QuotaExceeded => Nfsstat3::DQuot,
        BackendError::ReadOnly => Nfsstat3::Rofs,
        BackendError::NameTooLong => Nfsstat3::NameTooLong,
        BackendError::Stale { .. } => Nfsstat3::Stale,
        BackendError::BadHandle => Nfsstat3::BadHandle,
        BackendError::Access => Nfsstat3::Acces,
        BackendError::Perm => Nfsstat3::Perm,
        BackendError::FileTooBig => Nfsstat3::FBig,
        BackendError::Inval(_) => Nfsstat3::Inval,
        BackendError::TooManyLinks => Nfsstat3::MLink,
        BackendError::CrossDevice => Nfsstat3::XDev,
        BackendError::NotSupported(_) => Nfsstat3::NotSupp,
        BackendError::BadCookie => Nfsstat3::BadCookie,
        BackendError::NotSync => Nfsstat3::NotSync,
        BackendError::Busy(_) => Nfsstat3::Jukebox,
        BackendError::LockedByOtherHost { .. } => Nfsstat3::Acces,
        BackendError::Io(_) => Nfsstat3::Io,
    }
}

pub fn put_time(e: &mut Encoder, t: Timestamp) {
    // nfstime3 is unsigned 32-bit seconds: clamp out-of-range times.
    let secs = t.secs.clamp(0, u32::MAX as i64) as u32;
    e.u32(secs);
    e.u32(t.nsecs.min(999_999_999));
}

pub const FATTR3_LEN: usize = 84;

pub fn put_fattr(e: &mut Encoder, a: &Attr) {
    e.u32(a.ftype as u32);
    e.u32(a.mode & 0o7777);
    e.u32(a.nlink);
    e.u32(a.uid);
    e.u32(a.gid);
    e.u64(a.size);
    e.u64(a.used);
    e.u32(a.rdev.0);
    e.u32(a.rdev.1);
    e.u64(a.fsid);
    e.u64(a.fileid);
    put_time(e, a.atime);
    put_time(e, a.mtime);
    put_time(e, a.ctime);
}

pub fn put_post_op_attr(e: &mut Encoder, a: Option<&Attr>) {
    match a {
        Some(a) => {
            e.bool(true);
            put_fattr(e, a);
        }
        None => e.bool(false),
    }
}

pub fn put_pre_op_attr(e: &mut Encoder, a: Option<&Attr>) {
    match a {
        Some(a) => {
            e.bool(true);
            e.u64(a.size);
            put_time(e, a.mtime);
            put_time(e, a.ctime);
        }
        None => e.bool(false),
    }
}

pub fn put_wcc(e: &mut Encoder, before: Option<&Attr>, after: Option<&Attr>) {
    put_pre_op_attr(e, before);
    put_post_op_attr(e, after);
}

pub fn put_post_op_fh(e: &mut Encoder, fh: Option<&[u8]>) {
    match fh {
        Some(fh) => {
            e.bool(true);
            e.opaque(fh);
        }
        None => e.bool(false),
    }
}

pub fn get_time(d: &mut Decoder<'_>) -> Result<Timestamp, XdrError> {
    let secs = d.u32("nfstime3 seconds")? as i64;
    let off = d.position();
    let nsecs = d.u32("nfstime3 nseconds")?;
    if nsecs > 999_999_999 {
        return Err(XdrError::BadValue {
            what: "nfstime3 nseconds",
            value: nsecs,
            offset: off,
        });
    }
    Ok(Timestamp { secs, nsecs })
}

fn get_set_time(d: &mut Decoder<'_>, what: &'static str) -> Result<SetTime, XdrError> {
    let off = d.position();
    match d.u32(what)? {
        0 => Ok(SetTime::DontChange),
        1 => Ok(SetTime::ServerNow),
        2 => Ok(SetTime::Client(get_time(d)?)),
        value => Err(XdrError::BadValue {
            what,
            value,
            offset: off,
        }),
    }
}

pub fn get_sattr(d: &mut Decoder<'_>) -> Result<SetAttr, XdrError> {
    let mode = if d.bool("set_mode")? {
        Some(d.u32("mode")?)
    } else {
        None
    };
    let uid = if d.bool("set_uid")? {
        Some(d.u32("uid")?)
    } else {
        None
    };
    let gid = if d.bool("set_gid")? {
        Some(d.u32("gid")?)
    } else {
        None
    };
    let size = if d.bool("set_size")? {
        Some(d.u64("size")?)
    } else {
        None
    };
    let atime = get_set_time(d, "set_atime")?;
    let mtime = get_set_time(d, "set_mtime")?;
    Ok(SetAttr {
        mode,
        uid,
        gid,
        size,
        atime,
        mtime,
    })
}

//! NFS version 3 (program 100003, RFC 1813): procedure dispatch, handle
//! resolution, export access checks and permission checks.
//!
//! Procedures live in [`query`] (no modification) and [`modify`].

mod modify;
mod query;
pub mod wire;

use crate::backend::{access, Attr, Caller, FileId, FileType, Name, NameError};
use crate::export::Export;
use crate::fhandle::{Handle, FH_MAX};
use crate::server::ServerState;
use crate::xdr::{Decoder, Encoder, XdrError};
use std::net::IpAddr;
pub use wire::{status_of, Nfsstat3};

pub const PROGRAM: u32 = 100003;
pub const VERSION: u32 = 3;

/// Largest READ / WRITE payload (advertised as rtmax / wtmax).
pub const MAX_IO: u32 = 1 << 20;
/// Largest symlink target accepted.
pub const MAX_PATH: usize = 4096;
/// XDR bound on names and paths read from the wire. Longer names are
/// answered NAMETOOLONG after decoding (the decoder never copies).
const WIRE_NAME_MAX: u32 = 8192;

/// Outcome of dispatching one call.
pub enum Outcome {
    /// Results follow SUCCESS in `Encoder`.
    Done,
    ProcUnavail,
    Garbage(XdrError),
}

/// Per-call context.
pub struct Ctx<'a> {
    pub state: &'a ServerState,
    pub peer: IpAddr,
    /// AUTH_SYS caller before squashing; `None` for AUTH_NONE.
    pub caller: Option<Caller>,
}

/// A resolved handle: its export and object.
pub(crate) struct Target<'a> {
    pub ex: &'a Export,
    pub id: FileId,
}

pub(crate) type St<T> = Result<T, Nfsstat3>;

impl<'a> Ctx<'a> {
    /// Maps a handle to its export and object, checking the client is
    /// allowed. BADHANDLE for malformed, STALE for an unknown export.
    pub(crate) fn resolve(&self, fh: &[u8]) -> St<Target<'a>> {
        let h = Handle::decode(fh).ok_or(Nfsstat3::BadHandle)?;
        let ex = self
            .state
            .exports
            .iter()
            .find(|e| e.id == h.export_id)
            .ok_or(Nfsstat3::Stale)?;
        if !ex.allows(self.peer) {
            return Err(Nfsstat3::Acces);
        }
        Ok(Target { ex, id: h.id })
    }

    /// The caller as the export sees it (root squashed, AUTH_NONE = nobody).
    pub(crate) fn caller_for(&self, ex: &Export) -> Caller {
        match &self.caller {
            Some(c) => ex.effective_caller(c),
            None => Caller {
                uid: crate::export::NOBODY,
                gid: crate::export::NOBODY,
                gids: vec![],
            },
        }
    }

    /// Checks `caller` holds every bit of `want` on an object with `attr`.
    /// Owners may always read and write their own regular files (as knfsd
    /// does, so that a file created read-only can still be filled).
    pub(crate) fn permit(&self, ex: &Export, attr: &Attr, want: u32) -> St<()> {
        let caller = self.caller_for(ex);
        if attr.ftype == FileType::Regular
            && caller.uid == attr.uid
            && want & !(access::READ | access::MODIFY | access::EXTEND) == 0
        {
            return Ok(());
        }
        let got = crate::backend::access_bits(attr, &caller, want);
        if got & want == want {
            Ok(())
        } else {
            Err(Nfsstat3::Acces)
        }
    }

    pub(crate) fn writable(&self, ex: &Export) -> St<()> {
        if ex.options.read_only {
            Err(Nfsstat3::Rofs)
        } else {
            Ok(())
        }
    }

    /// A handle for `id` in export `ex`.
    pub(crate) fn handle(ex: &Export, id: FileId) -> [u8; crate::fhandle::FH_LEN] {
        Handle {
            export_id: ex.id,
            id,
        }
        .encode()
    }
}

/// Validates a name for creating / removing (never `.`/`..`).
pub(crate) fn entry_name(raw: &[u8]) -> St<Name> {
    Name::new(raw).map_err(|e| match e {
        NameError::TooLong => Nfsstat3::NameTooLong,
        // knfsd answers a name with '/' ACCES; `.`/`..` can never be created.
        NameError::BadChar => Nfsstat3::Acces,
        NameError::Empty => Nfsstat3::Acces,
        NameError::Dot => Nfsstat3::Exist,
    })
}

pub(crate) fn get_fh<'b>(d: &mut Decoder<'b>) -> Result<&'b [u8], XdrError> {
    d.opaque("nfs_fh3", FH_MAX)
}

pub(crate) fn get_name<'b>(d: &mut Decoder<'b>) -> Result<&'b [u8], XdrError> {
    d.string("filename3", WIRE_NAME_MAX)
}

/// Runs NFSv3 procedure `proc_num` with `args`, writing results to `e`.
pub fn dispatch(ctx: &Ctx<'_>, proc_num: u32, args: &[u8], e: &mut Encoder) -> Outcome {
    let mut d = Decoder::new(args);
    let r = match proc_num {
        0 => Ok(()),
        1 => query::getattr(ctx, &mut d, e),
        2 => modify::setattr(ctx, &mut d, e),
        3 => query::lookup(ctx, &mut d, e),
        4 => query::access(ctx, &mut d, e),
        5 => query::readlink(ctx, &mut d, e),
        6 => query::read(ctx, &mut d, e),
        7 => modify::write(ctx, &mut d, e),
        8 => modify::create(ctx, &mut d, e),
        9 => modify::mkdir(ctx, &mut d, e),
        10 => modify::symlink(ctx, &mut d, e),
        11 => modify::mknod(ctx, &mut d, e),
        12 => modify::remove(ctx, &mut d, e, false),
        13 => modify::remove(ctx, &mut d, e, true),
        14 => modify::rename(ctx, &mut d, e),
        15 => modify::link(ctx, &mut d, e),
        16 => query::readdir(ctx, &mut d, e, false),
        17 => query::readdir(ctx, &mut d, e, true),
        18 => query::fsstat(ctx, &mut d, e),
        19 => query::fsinfo(ctx, &mut d, e),
        20 => query::pathconf(ctx, &mut d, e),
        21 => modify::commit(ctx, &mut d, e),
        _ => return Outcome::ProcUnavail,
    };
    match r {
        Ok(()) => Outcome::Done,
        Err(x) => Outcome::Garbage(x),
    }
}

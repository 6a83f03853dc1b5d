//! NFSv3 procedures that modify: SETATTR, WRITE, CREATE, MKDIR, SYMLINK,
//! MKNOD, REMOVE, RMDIR, RENAME, LINK, COMMIT.

use super::wire::*;
use super::{entry_name, get_fh, get_name, Ctx, St, Target, MAX_IO, MAX_PATH};
use crate::backend::{
    access, Attr, Caller, CreateHow, FileId, FileType, Name, NameError, SetAttr, SetTime,
    SpecialNode, StableHow,
};
use crate::export::Export;
use crate::xdr::{Decoder, Encoder, XdrError};

type R = Result<(), XdrError>;

fn wcc_fail(e: &mut Encoder, s: Nfsstat3, before: Option<&Attr>, after: Option<&Attr>) {
    e.u32(s as u32);
    put_wcc(e, before, after);
}

/// Decides whether `caller` may apply `set` to an object with `attr`
/// (POSIX chmod/chown/utimes/truncate rules).
fn setattr_allowed(
    ctx: &Ctx<'_>,
    ex: &Export,
    caller: &Caller,
    attr: &Attr,
    set: &SetAttr,
) -> St<()> {
    if caller.uid == 0 {
        return Ok(());
    }
    let owner = caller.uid == attr.uid;
    if set.mode.is_some() && !owner {
        return Err(Nfsstat3::Perm);
    }
    if let Some(uid) = set.uid {
        if uid != attr.uid {
            return Err(Nfsstat3::Perm);
        }
    }
    if let Some(gid) = set.gid {
        if gid != attr.gid && !(owner && (gid == caller.gid || caller.gids.contains(&gid))) {
            return Err(Nfsstat3::Perm);
        }
    }
    if set.size.is_some() {
        ctx.permit(ex, attr, access::MODIFY)?;
    }
    for t in [set.atime, set.mtime] {
        match t {
            SetTime::DontChange => {}
            SetTime::Client(_) if !owner => return Err(Nfsstat3::Perm),
            SetTime::Client(_) => {}
            SetTime::ServerNow => {
                if !owner {
                    ctx.permit(ex, attr, access::MODIFY)?;
                }
            }
        }
    }
    Ok(())
}

pub(super) fn setattr(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let fh = get_fh(d)?;
    let set = get_sattr(d)?;
    let guard = if d.bool("sattrguard3 check")? {
        Some(get_time(d)?)
    } else {
        None
    };
    let mut before = None;
    let r = (|| {
        let t = ctx.resolve(fh)?;
        let a = t.ex.backend.getattr(t.id).map_err(|x| status_of(&x))?;
        before = Some(a.clone());
        ctx.writable(t.ex)?;
        if let Some(g) = guard {
            // nfstime3 has 32-bit seconds: compare what the client saw.
            let seen = crate::backend::Timestamp {
                secs: a.ctime.secs.clamp(0, u32::MAX as i64),
                nsecs: a.ctime.nsecs,
            };
            if seen != g {
                return Err(Nfsstat3::NotSync);
            }
        }
        setattr_allowed(ctx, t.ex, &ctx.caller_for(t.ex), &a, &set)?;
        t.ex.backend
            .setattr(t.id, &set, guard.map(|_| a.ctime))
            .map_err(|x| status_of(&x))
    })();
    match r {
        Ok(after) => {
            e.u32(0);
            put_wcc(e, before.as_ref(), Some(&after));
        }
        Err(s) => wcc_fail(e, s, before.as_ref(), before.as_ref()),
    }
    Ok(())
}

pub(super) fn write(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let fh = get_fh(d)?;
    let offset = d.u64("offset")?;
    let count = d.u32("count")?;
    let off = d.position();
    let stable = match d.u32("stable_how")? {
        0 => StableHow::Unstable,
        1 => StableHow::DataSync,
        2 => StableHow::FileSync,
        value => {
            return Err(XdrError::BadValue {
                what: "stable_how",
                value,
                offset: off,
            })
        }
    };
    let data = d.opaque("write data", MAX_IO)?;
    let mut before = None;
    let r = (|| {
        let t = ctx.resolve(fh)?;
        let a = t.ex.backend.getattr(t.id).map_err(|x| status_of(&x))?;
        let ftype = a.ftype;
        let check = ctx.permit(t.ex, &a, access::MODIFY);
        before = Some(a);
        ctx.writable(t.ex)?;
        match ftype {
            FileType::Regular => {}
            FileType::Directory => return Err(Nfsstat3::IsDir),
            _ => return Err(Nfsstat3::Inval),
        }
        check?;
        if count as usize > data.len() {
            return Err(Nfsstat3::Inval);
        }
        t.ex.backend
            .write(t.id, offset, &data[..count as usize], stable)
            .map_err(|x| status_of(&x))
    })();
    match r {
        Ok(ok) => {
            e.u32(0);
            put_wcc(e, before.as_ref(), Some(&ok.attr));
            e.u32(ok.count);
            e.u32(ok.committed as u32);
            e.opaque_fixed(&ctx.state.write_verifier);
        }
        Err(s) => wcc_fail(e, s, before.as_ref(), None),
    }
    Ok(())
}

/// Resolves a directory for adding/removing entries: checks write +
/// search permission and a writable export. Returns its attributes.
fn dir_for_change<'a>(ctx: &Ctx<'a>, fh: &[u8], before: &mut Option<Attr>) -> St<Target<'a>> {
    let t = ctx.resolve(fh)?;
    let a = t.ex.backend.getattr(t.id).map_err(|x| status_of(&x))?;
    *before = Some(a.clone());
    ctx.writable(t.ex)?;
    if a.ftype != FileType::Directory {
        return Err(Nfsstat3::NotDir);
    }
    ctx.permit(t.ex, &a, access::MODIFY | access::LOOKUP)?;
    Ok(t)
}

/// Replies for CREATE, MKDIR, SYMLINK, MKNOD.
fn put_create_result(
    e: &mut Encoder,
    r: St<(&Export, FileId, FileId, Attr)>,
    before: Option<&Attr>,
) {
    match r {
        Ok((ex, dir, id, attr)) => {
            e.u32(0);
            put_post_op_fh(e, Some(&Ctx::handle(ex, id)));
            put_post_op_attr(e, Some(&attr));
            let after = ex.backend.getattr(dir).ok();
            put_wcc(e, before, after.as_ref());
        }
        Err(s) => wcc_fail(e, s, before, before),
    }
}

pub(super) fn create(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let fh = get_fh(d)?;
    let raw = get_name(d)?;
    let off = d.position();
    let how = match d.u32("createmode3")? {
        0 => CreateHow::Unchecked(get_sattr(d)?),
        1 => CreateHow::Guarded(get_sattr(d)?),
        2 => {
            let v = d.opaque_fixed("createverf3", 8)?;
            let mut verf = [0u8; 8];
            verf.copy_from_slice(v);
            CreateHow::Exclusive(verf)
        }
        value => {
            return Err(XdrError::BadValue {
                what: "createmode3",
                value,
                offset: off,
            })
        }
    };
    tracing::debug!(?how, name = %String::from_utf8_lossy(raw), "CREATE");
    let mut before = None;
    let r = (|| {
        let t = dir_for_change(ctx, fh, &mut before)?;
        let name = entry_name(raw)?;
        let caller = ctx.caller_for(t.ex);
        let (id, attr) =
            t.ex.backend
                .create(t.id, &name, how, &caller)
                .map_err(|x| status_of(&x))?;
        Ok((t.ex, t.id, id, attr))
    })();
    put_create_result(e, r, before.as_ref());
    Ok(())
}

pub(super) fn mkdir(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let fh = get_fh(d)?;
    let raw = get_name(d)?;
    let set = get_sattr(d)?;
    let mut before = None;
    let r = (|| {
        let t = dir_for_change(ctx, fh, &mut before)?;
        let name = entry_name(raw)?;
        let caller = ctx.caller_for(t.ex);
        let (id, attr) =
            t.ex.backend
                .mkdir(t.id, &name, &set, &caller)
                .map_err(|x| status_of(&x))?;
        Ok((t.ex, t.id, id, attr))
    })();
    put_create_result(e, r, before.as_ref());
    Ok(())
}

pub(super) fn symlink(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let fh = get_fh(d)?;
    let raw = get_name(d)?;
    let set = get_sattr(d)?;
    let target = d.string("nfspath3", 1 << 16)?;
    let mut before = None;
    let r = (|| {
        let t = dir_for_change(ctx, fh, &mut before)?;
        let name = entry_name(raw)?;
        if target.len() > MAX_PATH {
            return Err(Nfsstat3::NameTooLong);
        }
        let caller = ctx.caller_for(t.ex);
        let (id, attr) =
            t.ex.backend
                .symlink(t.id, &name, target, &set, &caller)
                .map_err(|x| status_of(&x))?;
        Ok((t.ex, t.id, id, attr))
    })();
    put_create_result(e, r, before.as_ref());
    Ok(())
}

pub(super) fn mknod(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let fh = get_fh(d)?;
    let raw = get_name(d)?;
    let ftype = d.u32("ftype3")?;
    let node = match ftype {
        3 | 4 => {
            let set = get_sattr(d)?;
            let (a, b) = (d.u32("specdata1")?, d.u32("specdata2")?);
            let n = if ftype == 3 {
                SpecialNode::Block(a, b)
            } else {
                SpecialNode::Char(a, b)
            };
            Some((n, set))
        }
        6 => Some((SpecialNode::Socket, get_sattr(d)?)),
        7 => Some((SpecialNode::Fifo, get_sattr(d)?)),
        _ => None,
    };
    let mut before = None;
    let r = (|| {
        let t = dir_for_change(ctx, fh, &mut before)?;
        let name = entry_name(raw)?;
        let (node, set) = node.ok_or(Nfsstat3::BadType)?;
        let caller = ctx.caller_for(t.ex);
        if matches!(node, SpecialNode::Block(..) | SpecialNode::Char(..)) && caller.uid != 0 {
            return Err(Nfsstat3::Perm);
        }
        let (id, attr) =
            t.ex.backend
                .mknod(t.id, &name, node, &set, &caller)
                .map_err(|x| status_of(&x))?;
        Ok((t.ex, t.id, id, attr))
    })();
    put_create_result(e, r, before.as_ref());
    Ok(())
}

/// A name to remove or rename from: `.`/`..` are INVAL.
fn existing_name(raw: &[u8]) -> St<Name> {
    Name::new(raw).map_err(|e| match e {
        NameError::Dot => Nfsstat3::Inval,
        NameError::TooLong => Nfsstat3::NameTooLong,
        NameError::Empty | NameError::BadChar => Nfsstat3::NoEnt,
    })
}

/// Sticky directories: only the owner of the entry or of the directory
/// (or root) may remove or rename it.
fn sticky_ok(ctx: &Ctx<'_>, t: &Target<'_>, dir: &Attr, name: &Name) -> St<()> {
    if dir.mode & 0o1000 == 0 {
        return Ok(());
    }
    let caller = ctx.caller_for(t.ex);
    if caller.uid == 0 || caller.uid == dir.uid {
        return Ok(());
    }
    let (_, victim) = t.ex.backend.lookup(t.id, name).map_err(|x| status_of(&x))?;
    if victim.uid == caller.uid {
        Ok(())
    } else {
        Err(Nfsstat3::Acces)
    }
}

pub(super) fn remove(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder, dir_only: bool) -> R {
    let fh = get_fh(d)?;
    let raw = get_name(d)?;
    let mut before = None;
    let mut target = None;
    let r = (|| {
        let t = dir_for_change(ctx, fh, &mut before)?;
        let name = existing_name(raw)?;
        if let Some(b) = &before {
            sticky_ok(ctx, &t, b, &name)?;
        }
        let res = if dir_only {
            t.ex.backend.rmdir(t.id, &name)
        } else {
            t.ex.backend.remove(t.id, &name)
        };
        target = Some((t.ex, t.id));
        res.map_err(|x| status_of(&x))
    })();
    let after = target.and_then(|(ex, id)| ex.backend.getattr(id).ok());
    match r {
        Ok(()) => {
            e.u32(0);
            put_wcc(e, before.as_ref(), after.as_ref());
        }
        Err(s) => wcc_fail(e, s, before.as_ref(), after.as_ref()),
    }
    Ok(())
}

pub(super) fn rename(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let from_fh = get_fh(d)?;
    let from_raw = get_name(d)?;
    let to_fh = get_fh(d)?;
    let to_raw = get_name(d)?;
    let (mut fb, mut tb) = (None, None);
    let mut dirs = None;
    let r = (|| {
        let f = dir_for_change(ctx, from_fh, &mut fb)?;
        let t = dir_for_change(ctx, to_fh, &mut tb)?;
        dirs = Some((f.ex, f.id, t.id));
        if f.ex.id != t.ex.id {
            return Err(Nfsstat3::XDev);
        }
        let from = existing_name(from_raw)?;
        let to = existing_name(to_raw)?;
        if let Some(b) = &fb {
            sticky_ok(ctx, &f, b, &from)?;
        }
        if let Some(b) = &tb {
            match sticky_ok(ctx, &t, b, &to) {
                Ok(()) | Err(Nfsstat3::NoEnt) => {}
                Err(s) => return Err(s),
            }
        }
        f.ex.backend
            .rename(f.id, &from, t.id, &to)
            .map_err(|x| status_of(&x))
    })();
    let (fa, ta) = match dirs {
        Some((ex, f, t)) => (ex.backend.getattr(f).ok(), ex.backend.getattr(t).ok()),
        None => (None, None),
    };
    e.u32(match r {
        Ok(()) => 0,
        Err(s) => s as u32,
    });
    put_wcc(e, fb.as_ref(), fa.as_ref());
    put_wcc(e, tb.as_ref(), ta.as_ref());
    Ok(())
}

pub(super) fn link(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let file_fh = get_fh(d)?;
    let dir_fh = get_fh(d)?;
    let raw = get_name(d)?;
    let mut before = None;
    let mut objs = None;
    let r = (|| {
        let file = ctx.resolve(file_fh)?;
        let t = dir_for_change(ctx, dir_fh, &mut before)?;
        objs = Some((t.ex, file.id, t.id));
        if file.ex.id != t.ex.id {
            return Err(Nfsstat3::XDev);
        }
        let name = entry_name(raw)?;
        t.ex.backend
            .link(file.id, t.id, &name)
            .map_err(|x| status_of(&x))
    })();
    let (fa, da) = match objs {
        Some((ex, f, dd)) => (ex.backend.getattr(f).ok(), ex.backend.getattr(dd).ok()),
        None => (None, None),
    };
    e.u32(match r {
        Ok(()) => 0,
        Err(s) => s as u32,
    });
    put_post_op_attr(e, fa.as_ref());
    put_wcc(e, before.as_ref(), da.as_ref());
    Ok(())
}

pub(super) fn commit(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let fh = get_fh(d)?;
    let offset = d.u64("offset")?;
    let count = d.u32("count")?;
    let mut before = None;
    let r = (|| {
        let t = ctx.resolve(fh)?;
        let a = t.ex.backend.getattr(t.id).map_err(|x| status_of(&x))?;
        before = Some(a);
        t.ex.backend
            .commit(t.id, offset, count)
            .map_err(|x| status_of(&x))
    })();
    match r {
        Ok(after) => {
            e.u32(0);
            put_wcc(e, before.as_ref(), Some(&after));
            e.opaque_fixed(&ctx.state.write_verifier);
        }
        Err(s) => wcc_fail(e, s, before.as_ref(), None),
    }
    Ok(())
}

//! NFSv3 procedures that do not modify: GETATTR, LOOKUP, ACCESS,
//! READLINK, READ, READDIR(PLUS), FSSTAT, FSINFO, PATHCONF.

use super::wire::*;
use super::{get_fh, get_name, Ctx, St, MAX_IO};
use crate::backend::{access, Attr, FileId, FileType, Name, NameError};
use crate::xdr::{Decoder, Encoder, XdrError};

type R = Result<(), XdrError>;

fn fail_with_attr(e: &mut Encoder, s: Nfsstat3, attr: Option<&Attr>) {
    e.u32(s as u32);
    put_post_op_attr(e, attr);
}

pub(super) fn getattr(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let fh = get_fh(d)?;
    let r: St<Attr> = (|| {
        let t = ctx.resolve(fh)?;
        t.ex.backend.getattr(t.id).map_err(|x| status_of(&x))
    })();
    match r {
        Ok(a) => {
            e.u32(0);
            put_fattr(e, &a);
        }
        Err(s) => e.u32(s as u32),
    }
    Ok(())
}

pub(super) fn lookup(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let fh = get_fh(d)?;
    let raw = get_name(d)?;
    let mut dir_attr = None;
    let r: St<([u8; 32], Attr)> = (|| {
        let t = ctx.resolve(fh)?;
        let b = &t.ex.backend;
        let da = b.getattr(t.id).map_err(|x| status_of(&x))?;
        dir_attr = Some(da.clone());
        if da.ftype != FileType::Directory {
            return Err(Nfsstat3::NotDir);
        }
        ctx.permit(t.ex, &da, access::LOOKUP)?;
        let found: FileId = match Name::new(raw) {
            Ok(n) => b.lookup(t.id, &n).map_err(|x| status_of(&x))?.0,
            Err(NameError::Dot) if raw == b"." => t.id,
            // `..` of the export root is the root: no way out of the export.
            Err(NameError::Dot) => b.parent(t.id).map_err(|x| status_of(&x))?,
            Err(NameError::TooLong) => return Err(Nfsstat3::NameTooLong),
            Err(NameError::Empty) | Err(NameError::BadChar) => return Err(Nfsstat3::NoEnt),
        };
        let a = b.getattr(found).map_err(|x| status_of(&x))?;
        Ok((Ctx::handle(t.ex, found), a))
    })();
    match r {
        Ok((h, a)) => {
            e.u32(0);
            e.opaque(&h);
            put_post_op_attr(e, Some(&a));
            put_post_op_attr(e, dir_attr.as_ref());
        }
        Err(s) => fail_with_attr(e, s, dir_attr.as_ref()),
    }
    Ok(())
}

pub(super) fn access(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let fh = get_fh(d)?;
    let want = d.u32("access")?;
    let r: St<(u32, Attr)> = (|| {
        let t = ctx.resolve(fh)?;
        let caller = ctx.caller_for(t.ex);
        let (mut got, a) =
            t.ex.backend
                .access(t.id, &caller, want & access::ALL)
                .map_err(|x| status_of(&x))?;
        // Owner override (see `Ctx::permit`) only adds what the mode bits
        // deny; never what the backend itself took away (e.g. a file
        // another vmfs host holds).
        let by_mode = crate::backend::access_bits(&a, &caller, want & access::ALL);
        let taken_by_backend = by_mode & !got;
        if a.ftype == FileType::Regular && caller.uid == a.uid {
            got |= want & (access::READ | access::MODIFY | access::EXTEND);
        }
        got &= !taken_by_backend;
        if t.ex.options.read_only {
            got &= !(access::MODIFY | access::EXTEND | access::DELETE);
        }
        Ok((got, a))
    })();
    match r {
        Ok((got, a)) => {
            e.u32(0);
            put_post_op_attr(e, Some(&a));
            e.u32(got);
        }
        Err(s) => fail_with_attr(e, s, None),
    }
    Ok(())
}

pub(super) fn readlink(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let fh = get_fh(d)?;
    let mut attr = None;
    let r: St<Vec<u8>> = (|| {
        let t = ctx.resolve(fh)?;
        let a = t.ex.backend.getattr(t.id).map_err(|x| status_of(&x))?;
        let ftype = a.ftype;
        attr = Some(a);
        if ftype != FileType::Symlink {
            return Err(Nfsstat3::Inval);
        }
        t.ex.backend.readlink(t.id).map_err(|x| status_of(&x))
    })();
    match r {
        Ok(p) => {
            e.u32(0);
            put_post_op_attr(e, attr.as_ref());
            e.string(&p);
        }
        Err(s) => fail_with_attr(e, s, attr.as_ref()),
    }
    Ok(())
}

pub(super) fn read(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let fh = get_fh(d)?;
    let offset = d.u64("offset")?;
    let count = d.u32("count")?.min(MAX_IO);
    let mut attr = None;
    let r = (|| {
        let t = ctx.resolve(fh)?;
        let a = t.ex.backend.getattr(t.id).map_err(|x| status_of(&x))?;
        let ftype = a.ftype;
        let check = ctx.permit(t.ex, &a, access::READ);
        attr = Some(a);
        match ftype {
            FileType::Regular => {}
            FileType::Directory => return Err(Nfsstat3::IsDir),
            _ => return Err(Nfsstat3::Inval),
        }
        check?;
        t.ex.backend
            .read(t.id, offset, count)
            .map_err(|x| status_of(&x))
    })();
    match r {
        Ok(ok) => {
            e.u32(0);
            put_post_op_attr(e, Some(&ok.attr));
            e.u32(ok.data.len() as u32);
            e.bool(ok.eof);
            e.opaque(&ok.data);
        }
        Err(s) => fail_with_attr(e, s, attr.as_ref()),
    }
    Ok(())
}

/// Bytes of READDIR reply besides entries (status, attrs, verifier, eof).
const READDIR_OVERHEAD: usize = 4 + 4 + FATTR3_LEN + 8 + 4 + 4;

pub(super) fn readdir(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder, plus: bool) -> R {
    let fh = get_fh(d)?;
    let cookie = d.u64("cookie")?;
    let verf = d.opaque_fixed("cookieverf", 8)?;
    let verifier = u64::from_be_bytes(verf.try_into().unwrap_or([0; 8]));
    let (dircount, maxcount) = if plus {
        let dc = d.u32("dircount")? as usize;
        (dc, d.u32("maxcount")? as usize)
    } else {
        let c = d.u32("count")? as usize;
        (c, c)
    };
    let maxcount = maxcount.min(MAX_IO as usize);
    let mut dir_attr = None;
    let r = (|| {
        let t = ctx.resolve(fh)?;
        let b = &t.ex.backend;
        let a = b.getattr(t.id).map_err(|x| status_of(&x))?;
        let ftype = a.ftype;
        let check = ctx.permit(t.ex, &a, access::READ);
        dir_attr = Some(a);
        if ftype != FileType::Directory {
            return Err(Nfsstat3::NotDir);
        }
        check?;
        // Smallest entry: 24 bytes (+ attributes and handle with plus).
        let min_entry = if plus {
            24 + 4 + FATTR3_LEN + 4 + 4 + 32
        } else {
            24
        };
        let room = maxcount.saturating_sub(READDIR_OVERHEAD);
        if room < min_entry {
            return Err(Nfsstat3::TooSmall);
        }
        let max_entries = (room / min_entry).clamp(1, 8192);
        let list = b
            .readdir(t.id, cookie, verifier, max_entries, plus)
            .map_err(|x| status_of(&x))?;
        Ok((t, list))
    })();
    let (t, list) = match r {
        Ok(v) => v,
        Err(s) => {
            fail_with_attr(e, s, dir_attr.as_ref());
            return Ok(());
        }
    };
    let start = e.len();
    e.u32(0);
    put_post_op_attr(e, dir_attr.as_ref());
    e.u64(list.verifier);
    let mut eof = list.eof;
    let mut dir_bytes = 0usize;
    let mut written = 0usize;
    for ent in &list.entries {
        let pad = (4 - ent.name.len() % 4) % 4;
        let dir_part = 8 + 4 + ent.name.len() + pad + 8;
        let plus_part = if plus {
            4 + if ent.plus.is_some() {
                FATTR3_LEN + 4 + 4 + 32
            } else {
                4
            }
        } else {
            0
        };
        let body = e.len() - start;
        let fits_max = body + 4 + dir_part + plus_part + 8 <= maxcount;
        let fits_dir = !plus || dir_bytes + dir_part <= dircount.max(512);
        if !(fits_max && fits_dir) {
            eof = false;
            break;
        }
        e.bool(true);
        e.u64(ent.fileid);
        e.string(&ent.name);
        e.u64(ent.cookie);
        if plus {
            match &ent.plus {
                Some((id, a)) => {
                    put_post_op_attr(e, Some(a));
                    put_post_op_fh(e, Some(&Ctx::handle(t.ex, *id)));
                }
                None => {
                    put_post_op_attr(e, None);
                    put_post_op_fh(e, None);
                }
            }
        }
        dir_bytes += dir_part;
        written += 1;
    }
    if written == 0 && !list.entries.is_empty() {
        // Not even one entry fits in what the client allowed.
        e.truncate(start);
        fail_with_attr(e, Nfsstat3::TooSmall, dir_attr.as_ref());
        return Ok(());
    }
    e.bool(false);
    e.bool(eof);
    Ok(())
}

pub(super) fn fsstat(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let fh = get_fh(d)?;
    let r = (|| {
        let t = ctx.resolve(fh)?;
        let a = t.ex.backend.getattr(t.id).map_err(|x| status_of(&x))?;
        let s = t.ex.backend.fsstat(t.id).map_err(|x| status_of(&x))?;
        Ok((a, s))
    })();
    match r {
        Ok((a, s)) => {
            e.u32(0);
            put_post_op_attr(e, Some(&a));
            e.u64(s.total_bytes);
            e.u64(s.free_bytes);
            e.u64(s.avail_bytes);
            e.u64(s.total_files);
            e.u64(s.free_files);
            e.u64(s.avail_files);
            e.u32(0); // invarsec: may change at any time
        }
        Err(s) => fail_with_attr(e, s, None),
    }
    Ok(())
}

/// Smallest maxfilesize advertised, whatever the backend says: vmfs files
/// reach 62 TiB.
pub const MIN_MAX_FILE_SIZE: u64 = 62 << 40;

pub(super) fn fsinfo(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let fh = get_fh(d)?;
    let r = (|| {
        let t = ctx.resolve(fh)?;
        let a = t.ex.backend.getattr(t.id).map_err(|x| status_of(&x))?;
        Ok((a, t.ex.backend.properties()))
    })();
    match r {
        Ok((a, p)) => {
            e.u32(0);
            put_post_op_attr(e, Some(&a));
            e.u32(MAX_IO); // rtmax
            e.u32(MAX_IO); // rtpref
            e.u32(4096); // rtmult
            e.u32(MAX_IO); // wtmax
            e.u32(MAX_IO); // wtpref
            e.u32(4096); // wtmult
            e.u32(64 * 1024); // dtpref
            e.u64(p.max_file_size.max(MIN_MAX_FILE_SIZE));
            put_time(e, p.time_delta);
            let mut props = 0x08 | 0x10; // HOMOGENEOUS | CANSETTIME
            if p.supports_hard_links {
                props |= 0x01;
            }
            if p.supports_symlinks {
                props |= 0x02;
            }
            e.u32(props);
        }
        Err(s) => fail_with_attr(e, s, None),
    }
    Ok(())
}

pub(super) fn pathconf(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> R {
    let fh = get_fh(d)?;
    let r = (|| {
        let t = ctx.resolve(fh)?;
        let a = t.ex.backend.getattr(t.id).map_err(|x| status_of(&x))?;
        Ok((a, t.ex.backend.properties()))
    })();
    match r {
        Ok((a, p)) => {
            e.u32(0);
            put_post_op_attr(e, Some(&a));
            e.u32(p.link_max);
            e.u32(p.name_max);
            e.bool(true); // no_trunc: long names are refused, not cut
            e.bool(p.chown_restricted);
            e.bool(p.case_insensitive);
            e.bool(p.case_preserving);
        }
        Err(s) => fail_with_attr(e, s, None),
    }
    Ok(())
}

//! MOUNT protocol version 3 (program 100005, RFC 1813 appendix I):
//! NULL, MNT, DUMP, UMNT, UMNTALL, EXPORT. Served on the NFS port.

use crate::backend::{FileType, Name};
use crate::nfs3::{status_of, Ctx, Outcome};
use crate::xdr::{Decoder, Encoder};

pub const PROGRAM: u32 = 100005;
pub const VERSION: u32 = 3;
/// MNTPATHLEN.
const MNT_PATH_LEN: u32 = 1024;

/// mountstat3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MountStat {
    Ok = 0,
    NoEnt = 2,
    Io = 5,
    Acces = 13,
    NotDir = 20,
    Inval = 22,
    NameTooLong = 63,
    ServerFault = 10006,
}

fn mount_stat(s: crate::nfs3::Nfsstat3) -> MountStat {
    use crate::nfs3::Nfsstat3 as N;
    match s {
        N::NoEnt | N::Stale => MountStat::NoEnt,
        N::Acces | N::Perm => MountStat::Acces,
        N::NotDir => MountStat::NotDir,
        N::Inval => MountStat::Inval,
        N::NameTooLong => MountStat::NameTooLong,
        N::Io => MountStat::Io,
        _ => MountStat::ServerFault,
    }
}

/// Resolves a mount path: an export path, optionally followed by a
/// sub-directory path inside it (`/vol/dir/sub`). Components are looked up
/// one by one as validated names: `..`, `.`, empty components and anything
/// outside the export are refused.
fn mnt(ctx: &Ctx<'_>, path: &[u8]) -> Result<[u8; crate::fhandle::FH_LEN], MountStat> {
    let path = std::str::from_utf8(path).map_err(|_| MountStat::NoEnt)?;
    let ex = ctx
        .state
        .exports
        .iter()
        .filter(|e| {
            path == e.path
                || (path.starts_with(&e.path) && path.as_bytes().get(e.path.len()) == Some(&b'/'))
        })
        .max_by_key(|e| e.path.len())
        .ok_or(MountStat::NoEnt)?;
    if !ex.allows(ctx.peer) {
        return Err(MountStat::Acces);
    }
    let b = &ex.backend;
    let mut cur = b.root();
    for comp in path[ex.path.len()..].split('/').filter(|c| !c.is_empty()) {
        let name = Name::new(comp.as_bytes()).map_err(|_| MountStat::Inval)?;
        let (id, attr) = b
            .lookup(cur, &name)
            .map_err(|e| mount_stat(status_of(&e)))?;
        if attr.ftype != FileType::Directory {
            return Err(MountStat::NotDir);
        }
        cur = id;
    }
    b.getattr(cur).map_err(|e| mount_stat(status_of(&e)))?;
    Ok(Ctx::handle(ex, cur))
}

fn client_name(ctx: &Ctx<'_>) -> String {
    ctx.peer.to_string()
}

/// Runs MOUNT procedure `proc_num`.
pub fn dispatch(ctx: &Ctx<'_>, proc_num: u32, args: &[u8], e: &mut Encoder) -> Outcome {
    let mut d = Decoder::new(args);
    match proc_num {
        0 => {}
        1 => {
            let path = match d.string("dirpath", MNT_PATH_LEN) {
                Ok(p) => p,
                Err(x) => return Outcome::Garbage(x),
            };
            match mnt(ctx, path) {
                Ok(fh) => {
                    e.u32(MountStat::Ok as u32);
                    e.opaque(&fh);
                    e.u32(1);
                    e.u32(crate::rpc::AUTH_SYS);
                    let mut m = ctx.state.mounts.lock().unwrap_or_else(|p| p.into_inner());
                    let entry = (client_name(ctx), String::from_utf8_lossy(path).into_owned());
                    if !m.contains(&entry) && m.len() < 4096 {
                        m.push(entry);
                    }
                }
                Err(s) => e.u32(s as u32),
            }
        }
        2 => {
            let m = ctx.state.mounts.lock().unwrap_or_else(|p| p.into_inner());
            for (host, dir) in m.iter() {
                e.bool(true);
                e.string(host.as_bytes());
                e.string(dir.as_bytes());
            }
            e.bool(false);
        }
        3 => {
            let path = match d.string("dirpath", MNT_PATH_LEN) {
                Ok(p) => String::from_utf8_lossy(p).into_owned(),
                Err(x) => return Outcome::Garbage(x),
            };
            let host = client_name(ctx);
            ctx.state
                .mounts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(h, p)| !(h == &host && p == &path));
        }
        4 => {
            let host = client_name(ctx);
            ctx.state
                .mounts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(h, _)| h != &host);
        }
        5 => {
            for ex in &ctx.state.exports {
                e.bool(true);
                e.string(ex.path.as_bytes());
                for c in &ex.options.clients {
                    e.bool(true);
                    e.string(c.to_string().as_bytes());
                }
                e.bool(false);
            }
            e.bool(false);
        }
        _ => return Outcome::ProcUnavail,
    }
    Outcome::Done
}

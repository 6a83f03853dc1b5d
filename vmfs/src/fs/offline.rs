//! Read-only path resolution straight from the device: no host, no locks,
//! so tools (`vmfs locks DEVICE PATH`) work while other hosts are live. What
//! it reads may be mid-update by another host; callers show it as a snapshot.

use crate::format::inode::{DIRECT, INODE_BODY_LEN};
use crate::format::pointer::entries_per_block;
use crate::format::{BlockAddr, Inode, PointerBlock, ResourceKind, SECTOR};
use crate::volume::Volume;

use super::bmap::data_kind;
use super::dir::walk_entries;
use super::error::{FsError, FsResult};
use super::inode::is_dir;

/// Read inode `ino`'s body.
pub fn read_inode(vol: &Volume, ino: u64) -> FsResult<Inode> {
    if ino == 0 || ino >= vol.header.region(ResourceKind::Inode).count {
        return Err(FsError::Corrupt {
            ino,
            why: "inode number out of range".into(),
        });
    }
    let addr = vol.inode_addr(ino) + SECTOR as u64;
    let mut b = vec![0u8; INODE_BODY_LEN];
    vol.dev.read_at(&mut b, addr)?;
    Inode::decode(&b, addr).map_err(|e| FsError::Corrupt {
        ino,
        why: e.to_string(),
    })
}

fn pointer(vol: &Volume, ino: u64, raw: u64) -> FsResult<PointerBlock> {
    let a = match BlockAddr::decode(raw) {
        Ok(Some(a)) if a.kind == ResourceKind::PointerBlock => a,
        _ => {
            return Err(FsError::Corrupt {
                ino,
                why: format!("{raw:#x} is not a pointer block address"),
            })
        }
    };
    let reg = vol.header.region(ResourceKind::PointerBlock);
    if a.index >= reg.count {
        return Err(FsError::Corrupt {
            ino,
            why: format!("pointer block {} out of range", a.index),
        });
    }
    let addr = vol.resource_addr(ResourceKind::PointerBlock, a.index);
    let mut b = vec![0u8; reg.resource_size as usize];
    vol.dev.read_at(&mut b, addr)?;
    PointerBlock::decode(&b, addr).map_err(|e| FsError::Corrupt {
        ino,
        why: e.to_string(),
    })
}

/// Device offset of logical block `n` of `inode`, `None` for a hole.
fn block_addr(vol: &Volume, inode: &Inode, n: u64) -> FsResult<Option<u64>> {
    let e = entries_per_block(vol.header.region(ResourceKind::PointerBlock).resource_size);
    let raw = if n < DIRECT as u64 {
        inode.direct[n as usize]
    } else if n < DIRECT as u64 + e {
        if inode.indirect == 0 {
            return Ok(None);
        }
        pointer(vol, inode.ino, inode.indirect)?.entries[(n - DIRECT as u64) as usize]
    } else {
        let k = n - DIRECT as u64 - e;
        if k / e >= e || inode.double == 0 {
            return Ok(None);
        }
        let l1 = pointer(vol, inode.ino, inode.double)?.entries[(k / e) as usize];
        if l1 == 0 {
            return Ok(None);
        }
        pointer(vol, inode.ino, l1)?.entries[(k % e) as usize]
    };
    let want = data_kind(inode);
    match BlockAddr::decode(raw) {
        Ok(None) => Ok(None),
        Ok(Some(a)) if a.kind == want && a.index < vol.header.region(want).count => {
            Ok(Some(vol.resource_addr(a.kind, a.index)))
        }
        _ => Err(FsError::Corrupt {
            ino: inode.ino,
            why: format!("block {n} has a bad address {raw:#x}"),
        }),
    }
}

/// Resolve an absolute or root-relative path to an inode number.
pub fn resolve_path(vol: &Volume, path: &str) -> FsResult<u64> {
    let mut ino = vol.header.root_ino;
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let dir = read_inode(vol, ino)?;
        if !is_dir(dir.mode) {
            return Err(FsError::NotDir(ino));
        }
        if part == ".." {
            ino = dir.parent;
            continue;
        }
        let bs = u64::from(vol.header.region(data_kind(&dir)).resource_size);
        let failure = std::cell::RefCell::new(None);
        let (_, entries) = walk_entries(vol.dev.as_ref(), ino, |lofs| {
            match block_addr(vol, &dir, lofs / bs) {
                Ok(a) => a.map(|a| a + lofs % bs),
                Err(e) => {
                    failure.borrow_mut().get_or_insert(e);
                    None
                }
            }
        })?;
        if let Some(e) = failure.into_inner() {
            return Err(e);
        }
        ino = entries
            .into_iter()
            .find(|e| e.name == part.as_bytes())
            .map(|e| e.ino)
            .ok_or_else(|| FsError::NotFound(path.to_string()))?;
    }
    Ok(ino)
}

/// Entries `(name, ino)` of directory `ino`, straight from the device.
pub fn list_dir(vol: &Volume, ino: u64) -> FsResult<Vec<(Vec<u8>, u64)>> {
    let dir = read_inode(vol, ino)?;
    if !is_dir(dir.mode) {
        return Err(FsError::NotDir(ino));
    }
    let bs = u64::from(vol.header.region(data_kind(&dir)).resource_size);
    let failure = std::cell::RefCell::new(None);
    let (_, entries) = walk_entries(vol.dev.as_ref(), ino, |lofs| {
        match block_addr(vol, &dir, lofs / bs) {
            Ok(a) => a.map(|a| a + lofs % bs),
            Err(e) => {
                failure.borrow_mut().get_or_insert(e);
                None
            }
        }
    })?;
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    Ok(entries.into_iter().map(|e| (e.name, e.ino)).collect())
}

/// Up to `max` bytes of regular file `ino` from its start (holes read as
/// zeros), straight from the device.
pub fn read_file(vol: &Volume, ino: u64, max: u64) -> FsResult<Vec<u8>> {
    let inode = read_inode(vol, ino)?;
    if inode.flags & crate::format::inode::FLAG_INLINE != 0 {
        let n = inode.inline.len().min(max as usize);
        return Ok(inode.inline[..n].to_vec());
    }
    let len = inode.size.min(max);
    let bs = u64::from(vol.header.region(data_kind(&inode)).resource_size);
    let mut out = vec![0u8; len as usize];
    let mut pos = 0u64;
    while pos < len {
        let n = (bs - pos % bs).min(len - pos);
        if let Some(a) = block_addr(vol, &inode, pos / bs)? {
            let s = pos % bs;
            let (lo, hi) = (s & !511, (s + n).div_ceil(512) * 512);
            let mut b = vec![0u8; (hi - lo) as usize];
            vol.dev.read_at(&mut b, a + lo)?;
            let o = (s - lo) as usize;
            out[pos as usize..(pos + n) as usize].copy_from_slice(&b[o..o + n as usize]);
        }
        pos += n;
    }
    Ok(out)
}

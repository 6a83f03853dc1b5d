//! Extended attributes (`user.` namespace only). All of an inode's
//! attributes live in one small block ([`XattrBlock`], layout in
//! `docs/format.md` §12) that the inode's `xattr` field addresses. A change
//! writes a whole new image of that block in the same journaled
//! transaction as the inode (both under the inode's lock), so it is
//! all-or-nothing; the block counts in the inode's `blocks`.

use crate::format::xattr::{capacity, entry_len, XattrBlock, XATTR_NAME_MAX, XATTR_VALUE_MAX};
use crate::format::{BlockAddr, ResourceKind};

use super::bmap::FileMap;
use super::change::Change;
use super::error::{FsError, FsResult};
use super::inode::{now_ns, Ctx};
use super::{lock_st, Fs, Inner, OpenMode, State};
use crate::format::Inode;

/// The only namespace stored.
const USER: &[u8] = b"user.";
/// Times an unlocked read retries a block that changed under it.
const READ_RETRIES: usize = 20;

/// setxattr's XATTR_CREATE / XATTR_REPLACE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrSet {
    /// Create or replace.
    Any,
    /// Fail with EEXIST if present.
    Create,
    /// Fail with ENODATA if absent.
    Replace,
}

fn check_name(ino: u64, name: &[u8]) -> FsResult<()> {
    if name.len() > XATTR_NAME_MAX {
        return Err(FsError::Range(format!(
            "inode {ino}: attribute name of {} bytes (at most {XATTR_NAME_MAX})",
            name.len()
        )));
    }
    if !name.starts_with(USER) {
        return Err(FsError::NotSupported(format!(
            "attribute {:?}: only the user. namespace is stored",
            String::from_utf8_lossy(name)
        )));
    }
    if name.len() == USER.len() || name.contains(&0) {
        return Err(FsError::Invalid(format!(
            "attribute name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

fn small_size(ctx: &Ctx) -> usize {
    ctx.vol
        .header
        .region(ResourceKind::SmallBlock)
        .resource_size as usize
}

/// The attributes of `inode` (empty when it has no block).
fn read_block(ctx: &Ctx, inode: &Inode) -> FsResult<Vec<(Vec<u8>, Vec<u8>)>> {
    if inode.xattr == 0 {
        return Ok(Vec::new());
    }
    let corrupt = |why: String| FsError::Corrupt {
        ino: inode.ino,
        why,
    };
    let a = match BlockAddr::decode(inode.xattr).map_err(&corrupt)? {
        Some(a) if a.kind == ResourceKind::SmallBlock => a,
        _ => {
            return Err(corrupt(format!(
                "xattr address {:#x} is not a small block",
                inode.xattr
            )))
        }
    };
    let addr = ctx.vol.resource_addr(a.kind, a.index);
    let mut b = vec![0u8; small_size(ctx)];
    FileMap::read_dev(ctx, addr, &mut b)?;
    let x = XattrBlock::decode(&b, addr)?;
    if x.owner != inode.ino || x.generation != inode.generation {
        return Err(corrupt(format!(
            "xattr block at {addr} belongs to inode {} generation {}",
            x.owner, x.generation
        )));
    }
    Ok(x.entries)
}

impl Fs {
    /// The value of attribute `name` of `ino` (ENODATA if absent).
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        check_name(ino, name)?;
        self.inner
            .read_xattrs(ino)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| FsError::NoAttr {
                ino,
                name: String::from_utf8_lossy(name).into_owned(),
            })
    }

    /// Names of `ino`'s attributes.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<Vec<u8>>> {
        Ok(self
            .inner
            .read_xattrs(ino)?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }

    /// Set attribute `name` of `ino` to `value`.
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], how: XattrSet) -> FsResult<()> {
        check_name(ino, name)?;
        if value.len() > XATTR_VALUE_MAX {
            return Err(FsError::ArgTooBig(format!(
                "inode {ino}: attribute value of {} bytes (at most {XATTR_VALUE_MAX})",
                value.len()
            )));
        }
        let cap = capacity(small_size(&self.inner.ctx));
        if entry_len(name, value) > cap {
            return Err(FsError::ArgTooBig(format!(
                "inode {ino}: attribute of {} bytes does not fit the {cap} bytes an inode has for them",
                entry_len(name, value)
            )));
        }
        self.inner.change_xattrs(ino, |entries| {
            match entries.binary_search_by(|(n, _)| n.as_slice().cmp(name)) {
                Ok(_) if how == XattrSet::Create => Err(FsError::Exists(format!(
                    "inode {ino} attribute {}",
                    String::from_utf8_lossy(name)
                ))),
                Ok(i) => {
                    entries[i].1 = value.to_vec();
                    Ok(())
                }
                Err(_) if how == XattrSet::Replace => Err(FsError::NoAttr {
                    ino,
                    name: String::from_utf8_lossy(name).into_owned(),
                }),
                Err(i) => {
                    entries.insert(i, (name.to_vec(), value.to_vec()));
                    Ok(())
                }
            }
        })
    }

    /// Remove attribute `name` of `ino` (ENODATA if absent).
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        check_name(ino, name)?;
        self.inner.change_xattrs(ino, |entries| {
            match entries.binary_search_by(|(n, _)| n.as_slice().cmp(name)) {
                Ok(i) => {
                    entries.remove(i);
                    Ok(())
                }
                Err(_) => Err(FsError::NoAttr {
                    ino,
                    name: String::from_utf8_lossy(name).into_owned(),
                }),
            }
        })
    }
}

impl Inner {
    /// Attributes of `ino`: from the open file's inode when this host holds
    /// it, else from the disk without a lock (like getattr), re-read while
    /// the inode and its block disagree (another host mid-update).
    fn read_xattrs(&self, ino: u64) -> FsResult<Vec<(Vec<u8>, Vec<u8>)>> {
        {
            let st = lock_st(&self.st);
            if let Some(o) = st.open.get(&ino) {
                if o.mode != OpenMode::Unlocked {
                    return read_block(&self.ctx, &o.map.inode);
                }
            }
        }
        let mut last = None;
        for _ in 0..READ_RETRIES {
            let inode = self.ctx.read_inode(ino)?;
            match read_block(&self.ctx, &inode) {
                Ok(e) => return Ok(e),
                Err(e @ (FsError::Corrupt { .. } | FsError::Format(_))) => last = Some(e),
                Err(e) => return Err(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(last.expect("at least one try"))
    }

    /// Apply `f` to `ino`'s attributes under its lock and commit the new
    /// block with the inode in one transaction.
    fn change_xattrs(
        &self,
        ino: u64,
        f: impl FnOnce(&mut Vec<(Vec<u8>, Vec<u8>)>) -> FsResult<()>,
    ) -> FsResult<()> {
        let mut st = self.lock_for_change(&[ino])?;
        let mut l = self.lock_inode(&mut st, ino)?;
        let r = self.change_xattrs_locked(&mut st, &mut l.map, f);
        self.release(&mut st, l)?;
        r
    }

    fn change_xattrs_locked(
        &self,
        st: &mut State,
        map: &mut FileMap,
        f: impl FnOnce(&mut Vec<(Vec<u8>, Vec<u8>)>) -> FsResult<()>,
    ) -> FsResult<()> {
        let ino = map.ino();
        let mut entries = read_block(&self.ctx, &map.inode)?;
        f(&mut entries)?;
        let size = small_size(&self.ctx);
        let lock = map.lock.ok_or_else(|| FsError::Busy {
            ino,
            why: "changing attributes needs the inode's lock".into(),
        })?;
        let mut ch = Change::new();
        let staged = (|| {
            // A fresh block for every change: the old one is freed in the same
            // transaction, so a crash leaves either the old or the new set.
            let old = BlockAddr::decode(map.inode.xattr)
                .ok()
                .flatten()
                .filter(|a| a.kind == ResourceKind::SmallBlock);
            if let Some(a) = old {
                st.alloc.free(&mut ch, a.kind, a.index)?;
                map.inode.blocks = map.inode.blocks.saturating_sub(1);
                map.inode.xattr = 0;
            }
            if !entries.is_empty() {
                let r = st.alloc.alloc(&mut ch, ResourceKind::SmallBlock)?;
                let addr = self.ctx.vol.resource_addr(ResourceKind::SmallBlock, r);
                let x = XattrBlock {
                    addr,
                    owner: ino,
                    generation: map.inode.generation,
                    entries,
                };
                let img = x.encode(size).ok_or_else(|| {
                    FsError::NoSpace(format!(
                        "inode {ino}: its attributes would take {} bytes, {} fit",
                        x.used(),
                        capacity(size)
                    ))
                })?;
                ch.put(addr, img, &lock);
                map.inode.xattr = BlockAddr::new(ResourceKind::SmallBlock, r).encode();
                map.inode.blocks += 1;
            }
            map.inode.ctime_ns = now_ns();
            map.inode_dirty = true;
            Ok(())
        })();
        if let Err(e) = staged {
            st.alloc.invalidate(&ch);
            map.reload(&self.ctx)?;
            return Err(e);
        }
        self.commit(st, ch, &mut [map])
    }
}

//! Names: lookup, readdir, create, mkdir, symlink, link, unlink, rmdir,
//! rename. A directory operation holds the directory's inode lock
//! EXCLUSIVE for its duration; each is one transaction (reclaiming a large
//! unlinked file may take more, each consistent). Lookups and readdir take
//! no lock: they read, then check the directory's lock generation did not
//! move (else retry), per the caching rule in `docs/filesystem.md`.

use std::sync::MutexGuard;
use std::time::Duration;

use crate::format::inode::{FLAG_INLINE, INLINE_CAP};
use crate::format::LockMode;

use super::bmap::FileMap;
use super::change::Change;
use super::dir::{self, DirEntry};
use super::error::{FsError, FsResult};
use super::inode::{alloc_inode, file_type, is_dir, now_ns, Attr};
use super::orphan::needs_batches;
use super::{check_name, data, lock_st, DirItem, Fs, Inner, Locked, State, SYMLINK_MAX};

fn dtype(mode: u32) -> u8 {
    (file_type(mode) >> 12) as u8
}

/// The result of an operation whose locks were then released: once the
/// operation's change has committed it has happened, so a failure to let
/// a lock go (logged) must not make the caller believe it did not — an
/// application told "EBUSY" for a create that made the file, or a rename
/// that moved it, would act on a false picture.
fn settle<R>(r: FsResult<R>, released: FsResult<()>) -> FsResult<R> {
    let r = r?;
    if let Err(e) = released {
        tracing::warn!("releasing a lock after a committed change: {e}");
    }
    Ok(r)
}

fn name_str(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

impl Inner {
    /// Run `f` on a directory's map without a lock; retried until the
    /// directory's lock generation is the same before and after. Between
    /// attempts (another host is changing the directory, which may take
    /// it up to T) the filesystem mutex is let go, so this host's other
    /// operations (reads, writes, lookups elsewhere) go on meanwhile: the
    /// caller holds nothing else (no inode lock, no open file taken out of
    /// the table), and every attempt starts from the disk.
    fn read_dir<'a, R>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        ino: u64,
        mut f: impl FnMut(&mut FileMap) -> FsResult<R>,
    ) -> (MutexGuard<'a, State>, FsResult<R>) {
        let me = self.ctx.host.holder();
        let start = std::time::Instant::now();
        let mut backoff = Duration::from_millis(1);
        let mut announced = None;
        loop {
            let before = match self.ctx.read_lock(ino) {
                Ok(l) => l,
                Err(e) => return (st, Err(e)),
            };
            // A holder whose incarnation is over (a crashed host, recovered)
            // no longer changes the directory: read it.
            let busy = before.mode == LockMode::Exclusive
                && !before.holders.contains(&me)
                && match self.ctx.host.holders_present(&before.holders) {
                    Ok(b) => b,
                    Err(e) => return (st, Err(e.into())),
                };
            // Hosts changing the directory back to back could keep it busy
            // at every look: say we wait, so they leave it alone a moment.
            if busy && announced.is_none() {
                match self.ctx.host.announce_wait(self.ctx.lock_addr(ino)) {
                    Ok(a) => announced = Some(a),
                    Err(e) => tracing::debug!("announcing a wait for directory {ino}: {e}"),
                }
            }
            if !busy {
                // A block that fails to decode may be torn by the holder's
                // in-place write: judged only once the generation is known
                // not to have moved.
                let r = self.ctx.read_inode(ino).and_then(|inode| {
                    if !is_dir(inode.mode) {
                        return Err(FsError::NotDir(ino));
                    }
                    f(&mut FileMap::new(&self.ctx, inode, None))
                });
                let after = match self.ctx.read_lock(ino) {
                    Ok(l) => l,
                    Err(e) => return (st, Err(e)),
                };
                if after.lock_gen == before.lock_gen {
                    return (st, r);
                }
            }
            // The holder may be waiting for a resource cluster we keep (we
            // are in no change of our own here): let it have it.
            if let Err(e) = st.alloc.yield_wanted() {
                tracing::debug!("letting go of wanted clusters: {e}");
            }
            if start.elapsed() > self.lock_wait {
                let e = FsError::Busy {
                    ino,
                    why: "directory kept changing under another host's lock".into(),
                };
                return (st, Err(e));
            }
            drop(st);
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(50));
            st = lock_st(&self.st);
        }
    }

    /// The entry `name` of directory `parent` ([`Inner::read_dir`]).
    pub(super) fn lookup_entry<'a>(
        &'a self,
        st: MutexGuard<'a, State>,
        parent: u64,
        name: &[u8],
    ) -> (MutexGuard<'a, State>, FsResult<DirEntry>) {
        let (st, r) = self.read_dir(st, parent, |m| dir::lookup(m, &self.ctx, None, name));
        let r = r.and_then(|e| e.ok_or_else(|| FsError::NotFound(name_str(name))));
        (st, r)
    }

    /// The attributes of the inode `parent`'s entry `name` names. The entry
    /// is read without the directory's lock and the inode after it, so
    /// another host may remove the name and reuse the number in between:
    /// an inode that no longer fits the entry (other file type, no links)
    /// sends the lookup back to the directory, which by then no longer
    /// holds the old entry. One that still does not fit after
    /// `lock_wait` is damage.
    fn lookup_checked<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        parent: u64,
        name: &[u8],
    ) -> FsResult<Attr> {
        let start = std::time::Instant::now();
        loop {
            let (back, e) = self.lookup_entry(st, parent, name);
            st = back;
            let e = e?;
            let a = self.getattr(&st, e.ino)?;
            if a.matches_entry(e.dtype) {
                return Ok(a);
            }
            if start.elapsed() > self.lock_wait {
                return Err(FsError::Corrupt {
                    ino: parent,
                    why: format!(
                        "entry '{}' names inode {} as type {}, the inode is type {} with {} links",
                        name_str(name),
                        e.ino,
                        e.dtype,
                        a.dtype(),
                        a.nlink
                    ),
                });
            }
            drop(st);
            std::thread::sleep(Duration::from_millis(2));
            st = lock_st(&self.st);
        }
    }

    /// Run a directory change: lock `parent`, run `f`, release.
    fn in_dir<R>(
        &self,
        st: &mut State,
        parent: u64,
        f: impl FnOnce(&Inner, &mut State, &mut Locked) -> FsResult<R>,
    ) -> FsResult<R> {
        let mut d = self.lock_dir(st, parent)?;
        let r = f(self, st, &mut d);
        let rel = self.release(st, d);
        settle(r, rel)
    }

    /// Create an inode of `mode` named `name` in the locked directory `d`.
    fn make(
        &self,
        st: &mut State,
        d: &mut Locked,
        name: &[u8],
        mode: u32,
        owner: (u32, u32),
        target: Option<&[u8]>,
    ) -> FsResult<Attr> {
        self.make_kept(st, d, name, mode, owner, target, false)
            .map(|(a, _)| a)
    }

    /// [`Inner::make`]; with `keep` the new inode's map is returned still
    /// holding its EXCLUSIVE lock (for create-and-open: no other host can
    /// take the file between its creation and the open).
    #[allow(clippy::too_many_arguments)]
    fn make_kept(
        &self,
        st: &mut State,
        d: &mut Locked,
        name: &[u8],
        mode: u32,
        (uid, gid): (u32, u32),
        target: Option<&[u8]>,
        keep: bool,
    ) -> FsResult<(Attr, Option<FileMap>)> {
        if dir::lookup(&mut d.map, &self.ctx, None, name)?.is_some() {
            return Err(FsError::Exists(name_str(name)));
        }
        let mut ch = Change::new();
        let (inode, lock) = match alloc_inode(&self.ctx, &mut st.alloc, &mut ch, mode) {
            Ok(x) => x,
            Err(e) => {
                st.alloc.invalidate(&ch);
                return Err(e);
            }
        };
        let ino = inode.ino;
        let mut inode = inode;
        super::promote::start_small(&self.ctx, &mut inode);
        let mut m = FileMap::new(&self.ctx, inode, Some(lock));
        m.txn_limit = self.txn_limit;
        let r = (|| {
            m.inode.uid = uid;
            m.inode.gid = gid;
            m.inode_dirty = true;
            let now = now_ns();
            if is_dir(mode) {
                m.inode.nlink = 2;
                m.inode.parent = d.map.ino();
                d.map.inode.nlink += 1;
            }
            if let Some(t) = target {
                if t.len() <= INLINE_CAP {
                    m.inode.flags = FLAG_INLINE;
                    m.inode.inline = t.to_vec();
                    m.inode.size = t.len() as u64;
                } else {
                    data::write(&mut m, &self.ctx, &mut st.alloc, &mut ch, 0, t)?;
                }
            }
            dir::insert(
                &mut d.map,
                &self.ctx,
                &mut st.alloc,
                &mut ch,
                name,
                ino,
                dtype(mode),
            )?;
            d.map.inode.mtime_ns = now;
            d.map.inode.ctime_ns = now;
            d.map.inode_dirty = true;
            Ok(())
        })();
        let r = match r {
            Ok(()) => self.commit(st, ch, &mut [&mut d.map, &mut m]),
            Err(e) => {
                st.alloc.invalidate(&ch);
                let _ = d.map.reload(&self.ctx);
                Err(e)
            }
        };
        if keep && r.is_ok() {
            return Ok((Attr::of(&m.inode, &self.ctx.vol), Some(m)));
        }
        let un = self.ctx.host.unlock(lock.addr);
        r?;
        un?;
        Ok((Attr::of(&m.inode, &self.ctx.vol), None))
    }

    /// Drop one link of the locked inode `t`; reclaim it when none is left
    /// and it is not open here (else at its last close).
    fn drop_link(&self, t: &mut Locked, ch_dir_nlink: bool) {
        let _ = ch_dir_nlink;
        t.map.inode.nlink = t.map.inode.nlink.saturating_sub(1);
        if is_dir(t.map.inode.mode) {
            t.map.inode.nlink = 0;
        }
        t.map.inode.ctime_ns = now_ns();
        t.map.inode_dirty = true;
        if t.map.inode.nlink == 0 {
            if let Some(o) = t.open.as_mut() {
                o.unlinked = true;
            }
        }
    }

    /// Will dropping a link of `t` leave space to free after the change
    /// that drops it (open here: at the last close; large: in further
    /// transactions)? Then it goes on the orphan table first.
    fn will_orphan(&self, t: &Locked) -> bool {
        let last = is_dir(t.map.inode.mode) || t.map.inode.nlink <= 1;
        last && (t.open.is_some() || needs_batches(&t.map))
    }

    /// `m` if it is the root directory's map.
    fn root_if<'a>(&self, m: &'a mut FileMap) -> Option<&'a mut FileMap> {
        (m.ino() == self.ctx.vol.header.root_ino).then_some(m)
    }

    /// In the change that drops `t`'s last link (unless it is open here):
    /// stage the first batch of its reclaim, so a file or directory that
    /// fits one transaction goes in the same transaction as its name and a
    /// crash cannot leave it allocated but unnamed. Returns true unless
    /// more is left for [`Inner::finish_drop`].
    fn stage_drop(&self, st: &mut State, t: &mut Locked, ch: &mut Change) -> FsResult<bool> {
        if t.map.inode.nlink == 0 && t.open.is_none() {
            self.stage_reclaim(st, &mut t.map, ch)
        } else {
            Ok(true)
        }
    }

    /// After the change that dropped `t`'s last link has committed: free
    /// what did not fit in it (a large file: one transaction per batch; a
    /// crash before the last leaves the inode allocated with no links),
    /// then take it off the orphan table (`orphan`; `root` is the root
    /// directory's map if the caller holds it). The name change stands
    /// whatever happens here: on failure (a cluster another host keeps past
    /// D + T, a device error) the inode stays on the orphan table, where
    /// housekeeping finishes it; the error is logged, not returned. (A
    /// free left over is always listed first — `remove` and `rename` redo
    /// their change after listing when it overflows — so the unlisted
    /// branch below is a guard.)
    fn finish_drop(
        &self,
        st: &mut State,
        t: &mut Locked,
        gone: bool,
        orphan: bool,
        mut root: Option<&mut FileMap>,
    ) {
        let r = (|| {
            if !gone {
                self.reclaim(st, &mut t.map)?;
            }
            if orphan && t.open.is_none() {
                self.orphan_remove(
                    st,
                    root.as_deref_mut(),
                    (t.map.ino(), t.map.inode.generation),
                )?;
            }
            Ok::<(), FsError>(())
        })();
        let Err(e) = r else { return };
        let ino = t.map.ino();
        if orphan {
            tracing::warn!("inode {ino}: freeing it after its last name went: {e}; housekeeping finishes it from the orphan table");
            return;
        }
        // The reclaim failed part way: what it freed is committed, the
        // inode (no links) keeps the rest. The orphan table makes that
        // reachable again; without it only vmfs-fsck would find it.
        match t.map.reload(&self.ctx).and_then(|()| self.orphan_add(st, root, &t.map)) {
            Ok(()) => tracing::warn!("inode {ino}: freeing it after its last name went: {e}; put on the orphan table, housekeeping finishes it"),
            Err(e2) => tracing::warn!("inode {ino}: freeing it after its last name went: {e}; putting it on the orphan table failed too ({e2}): its space stays allocated until vmfs-fsck reclaims it"),
        }
    }

    /// Remove `name` from locked `d` (a directory iff `want_dir`).
    fn remove(&self, st: &mut State, d: &mut Locked, name: &[u8], want_dir: bool) -> FsResult<()> {
        let e = dir::lookup(&mut d.map, &self.ctx, None, name)?
            .ok_or_else(|| FsError::NotFound(name_str(name)))?;
        let e_is_dir = u32::from(e.dtype) << 12 == libc::S_IFDIR;
        if want_dir && !e_is_dir {
            return Err(FsError::NotDir(e.ino));
        }
        if !want_dir && e_is_dir {
            return Err(FsError::IsDir(e.ino));
        }
        if e.ino == d.map.ino() {
            return Err(FsError::Corrupt {
                ino: e.ino,
                why: "directory contains itself".into(),
            });
        }
        let mut t = self.lock_inode(st, e.ino)?;
        let r = (|| {
            if want_dir && dir::count(&mut t.map, &self.ctx, None)? > 0 {
                return Err(FsError::NotEmpty(e.ino));
            }
            let mut orphan = self.will_orphan(&t);
            let mut listed = false;
            let (ch, gone) = loop {
                if orphan && !listed {
                    let root = self.root_if(&mut d.map);
                    self.orphan_add(st, root, &t.map)?;
                    listed = true;
                }
                let mut ch = Change::new();
                if let Err(err) = dir::remove(&mut d.map, &self.ctx, &mut st.alloc, &mut ch, name) {
                    st.alloc.invalidate(&ch);
                    d.map.reload(&self.ctx)?;
                    return Err(err);
                }
                let now = now_ns();
                if want_dir {
                    d.map.inode.nlink = d.map.inode.nlink.saturating_sub(1);
                }
                d.map.inode.mtime_ns = now;
                d.map.inode.ctime_ns = now;
                d.map.inode_dirty = true;
                self.drop_link(&mut t, want_dir);
                let gone = self.stage_drop(st, &mut t, &mut ch);
                // A free that does not fit this transaction after all (a
                // small file's blocks under many pointer blocks or
                // clusters): undo, list the inode first, and redo — a crash
                // between the unlink and the rest of the free must find it
                // on the orphan table.
                let redo = matches!(gone, Ok(false)) && !orphan;
                if gone.is_err() || redo {
                    st.alloc.invalidate(&ch);
                    d.map.reload(&self.ctx)?;
                    t.map.reload(&self.ctx)?;
                }
                match gone {
                    Ok(_) if redo => orphan = true,
                    Ok(g) => break (ch, g),
                    Err(err) => return Err(err),
                }
            };
            self.commit(st, ch, &mut [&mut d.map, &mut t.map])?;
            let root = self.root_if(&mut d.map);
            self.finish_drop(st, &mut t, gone, orphan, root);
            Ok(())
        })();
        let rel = self.release(st, t);
        settle(r, rel)
    }

    /// Is `ino` equal to `anc` or below it? (Walks ".." up to the root.)
    fn is_under(&self, mut ino: u64, anc: u64) -> FsResult<bool> {
        let root = self.ctx.vol.header.root_ino;
        for _ in 0..4096 {
            if ino == anc {
                return Ok(true);
            }
            if ino == root {
                return Ok(false);
            }
            ino = self.ctx.read_inode(ino)?.parent;
        }
        Err(FsError::Corrupt {
            ino,
            why: "directory parent chain does not reach the root".into(),
        })
    }

    fn rename(&self, st: &mut State, op: u64, on: &[u8], np: u64, nn: &[u8]) -> FsResult<()> {
        if op == np && on == nn {
            return Ok(());
        }
        // Directory locks in lock-address order (the same on every host).
        let (first, second) = if op <= np { (op, np) } else { (np, op) };
        let mut a = self.lock_dir(st, first)?;
        let mut b = if second != first {
            match self.lock_dir(st, second) {
                Ok(l) => Some(l),
                Err(e) => {
                    self.release(st, a)?;
                    return Err(e);
                }
            }
        } else {
            None
        };
        let (odir, ndir): (&mut Locked, Option<&mut Locked>) = match b.as_mut() {
            None => (&mut a, None),
            Some(bl) if first == op => (&mut a, Some(bl)),
            Some(bl) => (bl, Some(&mut a)),
        };
        let r = self.rename_locked(st, odir, ndir, on, nn);
        let mut rel = Ok(());
        if let Some(bl) = b {
            rel = self.release(st, bl);
        }
        let rel2 = self.release(st, a);
        r?;
        rel?;
        rel2
    }

    fn rename_locked(
        &self,
        st: &mut State,
        od: &mut Locked,
        nd: Option<&mut Locked>,
        on: &[u8],
        nn: &[u8],
    ) -> FsResult<()> {
        let src = dir::lookup(&mut od.map, &self.ctx, None, on)?
            .ok_or_else(|| FsError::NotFound(name_str(on)))?;
        let (op, np) = (
            od.map.ino(),
            nd.as_ref().map(|d| d.map.ino()).unwrap_or(od.map.ino()),
        );
        let src_dir = u32::from(src.dtype) << 12 == libc::S_IFDIR;
        if src.ino == op || src.ino == np {
            return Err(FsError::Invalid(
                "a directory cannot be moved into itself".into(),
            ));
        }
        if src_dir && op != np && self.is_under(np, src.ino)? {
            return Err(FsError::Invalid(
                "a directory cannot be moved below itself".into(),
            ));
        }
        let mut nd = nd;
        let dst = {
            let ndm = match nd.as_mut() {
                Some(d) => &mut d.map,
                None => &mut od.map,
            };
            dir::lookup(ndm, &self.ctx, None, nn)?
        };
        if let Some(d) = &dst {
            if d.ino == src.ino {
                return Ok(()); // two names of one file: nothing to do
            }
            if d.ino == op || d.ino == np {
                return Err(FsError::NotEmpty(d.ino));
            }
            let d_dir = u32::from(d.dtype) << 12 == libc::S_IFDIR;
            if d_dir && !src_dir {
                return Err(FsError::IsDir(d.ino));
            }
            if !d_dir && src_dir {
                return Err(FsError::NotDir(d.ino));
            }
        }
        let mut s = if src_dir && op != np {
            Some(self.lock_inode(st, src.ino)?)
        } else {
            None
        };
        let mut t = match &dst {
            Some(d) => match self.lock_inode(st, d.ino) {
                Ok(l) => Some(l),
                Err(e) => {
                    if let Some(s) = s {
                        self.release(st, s)?;
                    }
                    return Err(e);
                }
            },
            None => None,
        };
        let r = (|| {
            if let (Some(t), Some(_)) = (t.as_mut(), &dst) {
                if is_dir(t.map.inode.mode) && dir::count(&mut t.map, &self.ctx, None)? > 0 {
                    return Err(FsError::NotEmpty(t.map.ino()));
                }
            }
            let mut orphan = t.as_ref().is_some_and(|t| self.will_orphan(t));
            let mut listed = false;
            // Once around, unless the replaced file's free turns out not to
            // fit the transaction: then undo, list it first, and redo (see
            // `remove`).
            let (ch, gone, now) = loop {
                if let (true, false, Some(t)) = (orphan, listed, t.as_ref()) {
                    let root = match nd.as_mut() {
                        Some(d) if d.map.ino() == self.ctx.vol.header.root_ino => Some(&mut d.map),
                        _ => self.root_if(&mut od.map),
                    };
                    self.orphan_add(st, root, &t.map)?;
                    listed = true;
                }
                let mut ch = Change::new();
                let now = now_ns();
                let staged = (|| {
                    dir::remove(&mut od.map, &self.ctx, &mut st.alloc, &mut ch, on)?;
                    let ndm = match nd.as_mut() {
                        Some(d) => &mut d.map,
                        None => &mut od.map,
                    };
                    if dst.is_some() {
                        dir::replace(
                            ndm,
                            &self.ctx,
                            &mut st.alloc,
                            &mut ch,
                            nn,
                            src.ino,
                            src.dtype,
                        )?;
                    } else {
                        dir::insert(
                            ndm,
                            &self.ctx,
                            &mut st.alloc,
                            &mut ch,
                            nn,
                            src.ino,
                            src.dtype,
                        )?;
                    }
                    Ok::<(), FsError>(())
                })();
                if let Err(e) = staged {
                    st.alloc.invalidate(&ch);
                    od.map.reload(&self.ctx)?;
                    if let Some(d) = nd.as_mut() {
                        d.map.reload(&self.ctx)?;
                    }
                    return Err(e);
                }
                if let Some(s) = s.as_mut() {
                    s.map.inode.parent = np;
                    s.map.inode.ctime_ns = now;
                    s.map.inode_dirty = true;
                    od.map.inode.nlink = od.map.inode.nlink.saturating_sub(1);
                    if let Some(d) = nd.as_mut() {
                        d.map.inode.nlink += 1;
                    }
                }
                if let Some(t) = t.as_mut() {
                    if is_dir(t.map.inode.mode) {
                        let ndm = match nd.as_mut() {
                            Some(d) => &mut d.map,
                            None => &mut od.map,
                        };
                        ndm.inode.nlink = ndm.inode.nlink.saturating_sub(1);
                    }
                    self.drop_link(t, false);
                }
                let gone = match t.as_mut() {
                    Some(t) => self.stage_drop(st, t, &mut ch),
                    None => Ok(true),
                };
                let redo = matches!(gone, Ok(false)) && !orphan;
                if gone.is_err() || redo {
                    st.alloc.invalidate(&ch);
                    od.map.reload(&self.ctx)?;
                    if let Some(d) = nd.as_mut() {
                        d.map.reload(&self.ctx)?;
                    }
                    if let Some(s) = s.as_mut() {
                        s.map.reload(&self.ctx)?;
                    }
                    if let Some(t) = t.as_mut() {
                        t.map.reload(&self.ctx)?;
                    }
                }
                match gone {
                    Ok(_) if redo => orphan = true,
                    Ok(g) => break (ch, g, now),
                    Err(e) => return Err(e),
                }
            };
            for m in [Some(&mut od.map), nd.as_mut().map(|d| &mut d.map)]
                .into_iter()
                .flatten()
            {
                m.inode.mtime_ns = now;
                m.inode.ctime_ns = now;
                m.inode_dirty = true;
            }
            let mut maps: Vec<&mut FileMap> = vec![&mut od.map];
            if let Some(d) = nd.as_mut() {
                maps.push(&mut d.map);
            }
            if let Some(s) = s.as_mut() {
                maps.push(&mut s.map);
            }
            if let Some(t) = t.as_mut() {
                maps.push(&mut t.map);
            }
            self.commit(st, ch, &mut maps)?;
            if let Some(t) = t.as_mut() {
                let root = match nd.as_mut() {
                    Some(d) if d.map.ino() == self.ctx.vol.header.root_ino => Some(&mut d.map),
                    _ => self.root_if(&mut od.map),
                };
                self.finish_drop(st, t, gone, orphan, root);
            }
            Ok(())
        })();
        let mut rel = Ok(());
        if let Some(t) = t {
            rel = self.release(st, t);
        }
        if let Some(s) = s {
            let r2 = self.release(st, s);
            rel = rel.and(r2);
        }
        settle(r, rel)
    }
}

impl Fs {
    /// Find `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        let st = lock_st(&self.inner.st);
        let inner = &*self.inner;
        let ino = match name {
            b"." => parent,
            b".." => {
                let p = inner.ctx.read_inode(parent)?;
                if !is_dir(p.mode) {
                    return Err(FsError::NotDir(parent));
                }
                p.parent
            }
            _ => {
                if name.len() > super::NAME_MAX {
                    return Err(FsError::NameTooLong(name.len()));
                }
                return inner.lookup_checked(st, parent, name);
            }
        };
        inner.getattr(&st, ino)
    }

    /// Entries of `ino` from `offset` (0 to start; then an item's `next`),
    /// at most `max`. "." and ".." come first.
    pub fn readdir(&self, ino: u64, offset: u64, max: usize) -> FsResult<Vec<DirItem>> {
        let st = lock_st(&self.inner.st);
        let inner = &*self.inner;
        let mut out = Vec::new();
        let me = inner.ctx.read_inode(ino)?;
        if !is_dir(me.mode) {
            return Err(FsError::NotDir(ino));
        }
        if offset == 0 && out.len() < max {
            out.push(DirItem {
                name: b".".to_vec(),
                ino,
                dtype: dtype(libc::S_IFDIR),
                next: 1,
            });
        }
        if offset <= 1 && out.len() < max {
            out.push(DirItem {
                name: b"..".to_vec(),
                ino: me.parent,
                dtype: dtype(libc::S_IFDIR),
                next: 2,
            });
        }
        let from = offset.saturating_sub(2);
        let want = max - out.len();
        if want == 0 {
            return Ok(out);
        }
        let (_st, entries) = inner.read_dir(st, ino, |m| dir::list(m, &inner.ctx, from, want));
        let entries = entries?;
        out.extend(entries.into_iter().map(|e| DirItem {
            next: e.key + 3,
            name: e.name,
            ino: e.ino,
            dtype: e.dtype,
        }));
        Ok(out)
    }

    /// Create a regular file.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<Attr> {
        check_name(name)?;
        let mut st = self.inner.lock_for_change(&[parent])?;
        self.inner.in_dir(&mut st, parent, |i, st, d| {
            i.make(
                st,
                d,
                name,
                libc::S_IFREG | (mode & 0o7777),
                (uid, gid),
                None,
            )
        })
    }

    /// Create a regular file and open it (for write if `write`) in one
    /// step: the new inode's EXCLUSIVE lock is kept for the open, so
    /// another host that sees the name at once cannot hold the file
    /// between creation and open (the open cannot fail with EBUSY after
    /// the name was made). Returns the attributes and the handle.
    pub fn create_open(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        (uid, gid): (u32, u32),
        write: bool,
    ) -> FsResult<(Attr, u64)> {
        check_name(name)?;
        let mut st = self.inner.lock_for_change(&[parent])?;
        let (attr, map) = self.inner.in_dir(&mut st, parent, |i, st, d| {
            i.make_kept(
                st,
                d,
                name,
                libc::S_IFREG | (mode & 0o7777),
                (uid, gid),
                None,
                true,
            )
        })?;
        let map = map.expect("make_kept keeps the map");
        let fh = self.inner.register_open(&mut st, map, write)?;
        Ok((attr, fh))
    }

    /// Create a directory.
    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, uid: u32, gid: u32) -> FsResult<Attr> {
        check_name(name)?;
        let mut st = self.inner.lock_for_change(&[parent])?;
        self.inner.in_dir(&mut st, parent, |i, st, d| {
            i.make(
                st,
                d,
                name,
                libc::S_IFDIR | (mode & 0o7777),
                (uid, gid),
                None,
            )
        })
    }

    /// Create a symbolic link to `target`.
    pub fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> FsResult<Attr> {
        check_name(name)?;
        if target.is_empty() || target.len() > SYMLINK_MAX {
            return Err(FsError::NameTooLong(target.len()));
        }
        let mut st = self.inner.lock_for_change(&[parent])?;
        self.inner.in_dir(&mut st, parent, |i, st, d| {
            i.make(st, d, name, libc::S_IFLNK | 0o777, (uid, gid), Some(target))
        })
    }

    /// The target of a symbolic link.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let _st = lock_st(&self.inner.st);
        let inner = &*self.inner;
        let i = inner.ctx.read_inode(ino)?;
        if file_type(i.mode) != libc::S_IFLNK {
            return Err(FsError::Invalid(format!(
                "inode {ino} is not a symbolic link"
            )));
        }
        if i.flags & FLAG_INLINE != 0 {
            return Ok(i.inline);
        }
        let size = i.size.min(SYMLINK_MAX as u64) as usize;
        let mut m = FileMap::new(&inner.ctx, i, None);
        let mut buf = vec![0u8; size];
        data::read(&mut m, &inner.ctx, 0, &mut buf)?;
        Ok(buf)
    }

    /// Remove a non-directory name.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        check_name(name)?;
        let mut st = self.inner.lock_for_removal(parent, name)?;
        self.inner
            .in_dir(&mut st, parent, |i, st, d| i.remove(st, d, name, false))
    }

    /// Remove an empty directory.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        check_name(name)?;
        let mut st = self.inner.lock_for_removal(parent, name)?;
        self.inner
            .in_dir(&mut st, parent, |i, st, d| i.remove(st, d, name, true))
    }

    /// Give `ino` another name.
    pub fn link(&self, ino: u64, parent: u64, name: &[u8]) -> FsResult<Attr> {
        check_name(name)?;
        let mut st = self.inner.lock_for_change(&[parent, ino])?;
        self.inner.in_dir(&mut st, parent, |i, st, d| {
            if dir::lookup(&mut d.map, &i.ctx, None, name)?.is_some() {
                return Err(FsError::Exists(name_str(name)));
            }
            if ino == d.map.ino() {
                return Err(FsError::NotPermitted("hard links to directories".into()));
            }
            let mut t = i.lock_inode(st, ino)?;
            let r = (|| {
                if is_dir(t.map.inode.mode) {
                    return Err(FsError::NotPermitted("hard links to directories".into()));
                }
                if t.map.inode.nlink == 0 {
                    return Err(FsError::NotFound(format!("inode {ino}")));
                }
                let mut ch = Change::new();
                if let Err(e) = dir::insert(
                    &mut d.map,
                    &i.ctx,
                    &mut st.alloc,
                    &mut ch,
                    name,
                    ino,
                    dtype(t.map.inode.mode),
                ) {
                    st.alloc.invalidate(&ch);
                    d.map.reload(&i.ctx)?;
                    return Err(e);
                }
                let now = now_ns();
                t.map.inode.nlink += 1;
                t.map.inode.ctime_ns = now;
                t.map.inode_dirty = true;
                d.map.inode.mtime_ns = now;
                d.map.inode.ctime_ns = now;
                d.map.inode_dirty = true;
                i.commit(st, ch, &mut [&mut d.map, &mut t.map])?;
                Ok(Attr::of(&t.map.inode, &i.ctx.vol))
            })();
            let rel = i.release(st, t);
            let a = r?;
            rel?;
            Ok(a)
        })
    }

    /// Rename atomically (one transaction), across directories, replacing
    /// an existing target (an empty directory by a directory, a
    /// non-directory by a non-directory).
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
    ) -> FsResult<()> {
        check_name(name)?;
        check_name(new_name)?;
        let mut st = self
            .inner
            .lock_for_rename((parent, name), (new_parent, new_name))?;
        self.inner
            .rename(&mut st, parent, name, new_parent, new_name)
    }
}

//! Waiting for another host's lock *before* a namespace change, with the
//! filesystem mutex let go.
//!
//! A change (create, unlink, rename, ...) takes its directory's lock — and
//! for an unlink the victim's, for setattr, xattrs and link the inode's —
//! while holding `Fs`'s mutex. If another host
//! holds that lock, `Host::lock_with` waits for it (up to D + T) and every
//! other operation of this host (reads, getattr, lookups elsewhere) would
//! wait behind the mutex that long. So first wait here, without the mutex,
//! until the lock looks free or its holder is gone. This is only a hint:
//! the change then takes the lock as before, and if another host took it
//! again in between, that take waits with the mutex held, as it always did.

use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use crate::format::LockMode;

use super::error::{FsError, FsResult};
use super::{lock_st, Inner, State};

impl Inner {
    /// The filesystem mutex, taken once none of `inos`' locks is held by
    /// another live host (each waited for in turn, the mutex let go
    /// between looks). Busy if one stays held past D + T: the change
    /// would have given up then too.
    pub(super) fn lock_for_change(&self, inos: &[u64]) -> FsResult<MutexGuard<'_, State>> {
        let mut st = lock_st(&self.st);
        for &ino in inos {
            st = self.wait_while_held(st, ino)?;
        }
        Ok(st)
    }

    /// [`Inner::lock_for_change`] for removing `name` from `parent`: the
    /// directory, then the inode the name points to (a file open on
    /// another host is what an unlink most often waits for). The name is
    /// looked up without a lock; if it moves meanwhile the removal sees
    /// that under the directory's lock.
    pub(super) fn lock_for_removal(
        &self,
        parent: u64,
        name: &[u8],
    ) -> FsResult<MutexGuard<'_, State>> {
        let st = self.lock_for_change(&[parent])?;
        let (st, e) = self.lookup_entry(st, parent, name);
        match e {
            Ok(e) if e.ino != parent => self.wait_while_held(st, e.ino),
            _ => Ok(st),
        }
    }

    /// [`Inner::lock_for_change`] for a rename: both directories, then
    /// the inode a replaced name points to, and a directory moved to
    /// another parent (its ".." changes). Names are looked up without a
    /// lock, as for [`Inner::lock_for_removal`].
    pub(super) fn lock_for_rename(
        &self,
        (parent, name): (u64, &[u8]),
        (new_parent, new_name): (u64, &[u8]),
    ) -> FsResult<MutexGuard<'_, State>> {
        let st = self.lock_for_change(&[parent, new_parent])?;
        let (st, replaced) = self.lookup_entry(st, new_parent, new_name);
        let mut st = match replaced {
            Ok(e) if e.ino != new_parent => self.wait_while_held(st, e.ino)?,
            _ => st,
        };
        if parent != new_parent {
            let (back, moved) = self.lookup_entry(st, parent, name);
            st = match moved {
                Ok(e) if u32::from(e.dtype) << 12 == libc::S_IFDIR && e.ino != parent => {
                    self.wait_while_held(back, e.ino)?
                }
                _ => back,
            };
        }
        Ok(st)
    }

    fn wait_while_held<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        ino: u64,
    ) -> FsResult<MutexGuard<'a, State>> {
        self.ctx.check_ino(ino)?;
        // A file open here is settled by the change's own lock take
        // (ours already, an upgrade tried once, or EBUSY at once).
        if st.open.contains_key(&ino) {
            return Ok(st);
        }
        let me = self.ctx.host.holder();
        let addr = self.ctx.lock_addr(ino);
        let start = Instant::now();
        let mut backoff = Duration::from_millis(1);
        let mut announced = None;
        loop {
            // This host's own holds (an open file) are the change's to
            // settle; a crashed holder's lock is broken by the take.
            let l = self.ctx.read_lock(ino)?;
            let held = l.mode != LockMode::Free
                && !l.holders.contains(&me)
                && self.ctx.host.holders_present(&l.holders)?;
            if !held {
                return Ok(st);
            }
            if announced.is_none() {
                // Hosts changing it back to back then leave it alone a
                // moment (locking.md §5).
                match self.ctx.host.announce_wait(addr) {
                    Ok(a) => announced = Some(a),
                    Err(e) => tracing::debug!("announcing a wait for inode {ino}: {e}"),
                }
            }
            // The holder may be waiting for a resource cluster we keep.
            if let Err(e) = st.alloc.yield_wanted() {
                tracing::debug!("letting go of wanted clusters: {e}");
            }
            if start.elapsed() > self.lock_wait {
                return Err(FsError::Busy {
                    ino,
                    why: format!("locked by {:?}", l.holders),
                });
            }
            drop(st);
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(50));
            st = lock_st(&self.st);
        }
    }
}

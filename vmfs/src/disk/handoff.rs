//! Live migration: moving a disk's EXCLUSIVE lock from the source host to
//! the destination with the TRANSFER protocol (`docs/locking.md` §6,
//! `docs/vmdk.md` "Hand-off"). No write is lost or duplicated and there is
//! no moment in which both hosts may write:
//!
//! 1. source [`VirtualDisk::begin_handoff`]: new requests are refused,
//!    in-flight ones drain (the chain's write lock), everything is flushed,
//!    then the lock record is CASed to EXCLUSIVE(src) + TRANSFER(dst);
//! 2. destination [`VirtualDisk::accept_handoff`]: CAS to EXCLUSIVE(dst),
//!    then it opens the chain and serves I/O;
//! 3. source [`VirtualDisk::handoff_outcome`] sees `Taken` and forgets the
//!    disk, or [`VirtualDisk::cancel_handoff`] CASes back to EXCLUSIVE(src).
//!
//! Steps 2 and 3's cancel CAS from the same TRANSFER image: exactly one wins.

use crate::cluster::TransferOutcome;
use crate::format::Holder;
use crate::fs::Fs;
use crate::vmdk::layer::read_descriptor;

use super::error::{DiskError, DiskResult};
use super::store::{FsStore, ReadLock, WriteLock};
use super::virtual_disk::{open_chain, DiskLock, DiskOptions, Phase, VirtualDisk};

impl VirtualDisk {
    fn single_top_ino(&self) -> DiskResult<u64> {
        match self.inner.top_inos.as_slice() {
            [ino] => Ok(*ino),
            _ => Err(DiskError::Unsupported {
                path: self.inner.path.clone(),
                what: "hand-off of a disk whose top has several extent files".into(),
            }),
        }
    }

    /// Source side: stop I/O, flush, offer the disk to `dst` (the
    /// destination's [`VirtualDisk::holder`] or `Host::holder`). Requests
    /// fail with `HandoffPending` until the hand-off is settled.
    pub fn begin_handoff(&self, dst: Holder) -> DiskResult<()> {
        let inner = &self.inner;
        if inner.lock != DiskLock::Exclusive {
            return Err(DiskError::Unsupported {
                path: inner.path.clone(),
                what: "only a disk open EXCLUSIVE is handed off (the others can simply be \
                       opened on the destination)"
                    .into(),
            });
        }
        let ino = self.single_top_ino()?;
        // Drain: every request holds the chain lock while it runs.
        let g = inner.chain.write().unwrap_or_else(|e| e.into_inner());
        let chain = g.as_ref().ok_or_else(|| DiskError::Closed {
            path: inner.path.clone(),
        })?;
        {
            let mut ph = inner.phase.lock().unwrap_or_else(|e| e.into_inner());
            if *ph != Phase::Running {
                return Err(DiskError::HandoffPending {
                    path: inner.path.clone(),
                });
            }
            *ph = Phase::Offered(dst);
        }
        let r = chain
            .flush()
            .map_err(|e| DiskError::vmdk(&inner.path, e))
            .and_then(|_| {
                // The destination's first changes may free blocks in
                // clusters this host keeps for allocation: let them go now
                // rather than after the idle delay.
                inner
                    .fs
                    .release_clusters()
                    .map_err(|e| DiskError::fs(&inner.path, "releasing allocation clusters", e))
            })
            .and_then(|_| {
                inner
                    .fs
                    .begin_transfer(ino, dst)
                    .map_err(|e| DiskError::fs(&inner.path, "offering the lock (TRANSFER)", e))
            });
        if r.is_err() {
            *inner.phase.lock().unwrap_or_else(|e| e.into_inner()) = Phase::Running;
        }
        r
    }

    /// Source side: has the destination accepted? `Taken`: the disk is no
    /// longer ours (every request fails with `HandedOff`; close it).
    pub fn handoff_outcome(&self) -> DiskResult<TransferOutcome> {
        let inner = &self.inner;
        let ino = self.single_top_ino()?;
        let out = inner
            .fs
            .transfer_outcome(ino)
            .map_err(|e| DiskError::fs(&inner.path, "reading the hand-off's lock", e))?;
        match out {
            TransferOutcome::Taken => self.handed_off(),
            TransferOutcome::Kept => {
                *inner.phase.lock().unwrap_or_else(|e| e.into_inner()) = Phase::Running
            }
            TransferOutcome::Pending => {}
        }
        Ok(out)
    }

    /// Source side: take the disk back. `Ok(true)`: ours again, I/O
    /// resumes; `Ok(false)`: the destination accepted first (handed off).
    pub fn cancel_handoff(&self) -> DiskResult<bool> {
        let inner = &self.inner;
        let ino = self.single_top_ino()?;
        let kept = inner
            .fs
            .cancel_transfer(ino)
            .map_err(|e| DiskError::fs(&inner.path, "cancelling the hand-off", e))?;
        if kept {
            *inner.phase.lock().unwrap_or_else(|e| e.into_inner()) = Phase::Running;
        } else {
            self.handed_off();
        }
        Ok(kept)
    }

    fn handed_off(&self) {
        let inner = &self.inner;
        *inner.phase.lock().unwrap_or_else(|e| e.into_inner()) = Phase::HandedOff;
        // The top's handles are gone from the filesystem already; dropping
        // the chain closes the parents' read handles.
        let chain = inner
            .chain
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(chain);
    }

    /// Destination side: take the disk at `path` if its source offered it
    /// to this host, and open it EXCLUSIVE. `Ok(None)`: not offered to us
    /// (not yet, or the source cancelled).
    pub fn accept_handoff(
        fs: &Fs,
        path: &str,
        opts: &DiskOptions,
    ) -> DiskResult<Option<VirtualDisk>> {
        if opts.lock != DiskLock::Exclusive {
            return Err(DiskError::Unsupported {
                path: path.to_string(),
                what: "a hand-off is accepted EXCLUSIVE".into(),
            });
        }
        let store = FsStore::new(fs.clone(), WriteLock::Exclusive, ReadLock::Follow);
        let d = read_descriptor(&store, path).map_err(|e| DiskError::vmdk(path, e))?;
        let files: Vec<String> = d
            .extents
            .iter()
            .filter_map(|l| l.file.as_deref())
            .map(|f| crate::vmdk::layer::resolve(path, f))
            .collect();
        let [file] = files.as_slice() else {
            return Err(DiskError::Unsupported {
                path: path.to_string(),
                what: "hand-off of a disk whose top has several extent files".into(),
            });
        };
        let ino = store.lookup(file).map_err(|e| DiskError::Invalid {
            path: path.to_string(),
            what: format!("extent {file}: {e}"),
        })?;
        let Some(fh) = fs
            .accept_transfer(ino)
            .map_err(|e| DiskError::fs(path, "accepting the hand-off", e))?
        else {
            return Ok(None);
        };
        // The chain's own open joins the handle holding the accepted lock.
        let opened = open_chain(fs, path, DiskLock::Exclusive)
            .and_then(|chain| VirtualDisk::from_chain(fs, path, opts, chain));
        let closed = fs.close(fh);
        let disk = opened?;
        closed.map_err(|e| DiskError::fs(path, "closing the hand-off handle", e))?;
        Ok(Some(disk))
    }
}

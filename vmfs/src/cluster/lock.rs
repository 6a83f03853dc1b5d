//! Lock records: acquire, release, upgrade, downgrade and the TRANSFER
//! hand-off, each one compare-and-write of the whole record from the exact
//! image read, with `lock_gen + 1` and a fresh write nonce.

use std::time::Duration;

use crate::dev::BlockDev;
use crate::format::{HeartbeatSlot, Holder, LockMode, LockRecord, SlotState};

use super::host::{lock, HeldLock, Host};
use super::liveness::Verdict;
use super::sector_cas::{cas_sector, nonce, read_sector, SectorCas};
use super::ClusterError;

/// What we concluded about one holder of a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HolderState {
    /// Its incarnation is over (and its journal replayed): drop it.
    Gone,
    /// Alive, or we cannot tell: respect it.
    Present,
}

fn mode_name(m: LockMode) -> &'static str {
    match m {
        LockMode::Free => "free",
        LockMode::Exclusive => "exclusive",
        LockMode::SharedRead => "shared-read",
        LockMode::MultiWriter => "multi-writer",
    }
}

impl Host {
    fn classify(&self, h: Holder) -> Result<HolderState, ClusterError> {
        if h == self.sh.me {
            return Ok(HolderState::Present);
        }
        let slot = u32::from(h.slot);
        if slot >= self.sh.vol.header.max_hosts {
            // A holder naming no slot cannot be alive.
            return Ok(HolderState::Gone);
        }
        let (s, img, verdict) = match self.sh.judge(slot) {
            Ok(x) => x,
            // Never break a lock because its holder's slot is unreadable.
            Err(ClusterError::Corrupt(_)) => return Ok(HolderState::Present),
            Err(e) => return Err(e),
        };
        if s.hb_gen != h.hb_gen {
            return Ok(match s.state {
                // Journal replay may be in progress: wait for it.
                SlotState::Recovering => self.help_stuck_recovery(slot, &s, &img)?,
                _ => HolderState::Gone,
            });
        }
        match verdict {
            Verdict::Dead => {
                super::recovery::recover(&self.sh, slot, &s, &img)?;
                // Either we recovered it or someone else moved it on; judge again.
                let (s2, _, _) = self.sh.judge(slot)?;
                Ok(
                    if s2.hb_gen != h.hb_gen && s2.state != SlotState::Recovering {
                        HolderState::Gone
                    } else {
                        HolderState::Present
                    },
                )
            }
            _ => Ok(HolderState::Present),
        }
    }

    /// Does any of `holders` other than this host still count: alive, or
    /// not yet known dead with its journal replayed? (Running recovery of a
    /// holder found dead, as taking the lock would.) Lock-free readers use
    /// it to tell a record being changed under a live lock from one whose
    /// holder's incarnation is over, whose on-disk images are final.
    pub fn holders_present(&self, holders: &[Holder]) -> Result<bool, ClusterError> {
        for &h in holders {
            if h != self.sh.me && self.classify(h)? == HolderState::Present {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A slot stuck in RECOVERING whose recoverer is gone: take the recovery over.
    fn help_stuck_recovery(
        &self,
        slot: u32,
        s: &HeartbeatSlot,
        img: &[u8; 512],
    ) -> Result<HolderState, ClusterError> {
        let Some(r) = s.recoverer else {
            return Ok(HolderState::Present);
        };
        let rslot = u32::from(r.slot);
        let recoverer_gone = if rslot == slot || rslot >= self.sh.vol.header.max_hosts {
            // A joining process claiming this slot by recovery: it does not
            // beat until LIVE, so judge by the slot's silence.
            let silent = lock(&self.sh.observer).silent_for(slot, self.sh.clock.now());
            silent >= self.sh.min_dead()
        } else {
            match self.sh.judge(rslot) {
                Ok((rs, _, v)) => rs.hb_gen != r.hb_gen || v == Verdict::Dead,
                Err(_) => false,
            }
        };
        if recoverer_gone {
            super::recovery::recover(&self.sh, slot, s, img)?;
        }
        Ok(HolderState::Present)
    }

    /// One attempt to bring the lock at `addr` to `want` for this host
    /// (acquire, upgrade or downgrade). `Ok(None)`: busy right now.
    fn change(
        &self,
        addr: u64,
        resource: u64,
        want: LockMode,
    ) -> Result<Option<HeldLock>, ClusterError> {
        let dev = self.dev();
        for _ in 0..8 {
            let img = read_sector(&dev, addr)?;
            let cur = LockRecord::decode(&img, addr)?;
            let mut keep = Vec::new();
            for &h in &cur.holders {
                if self.classify(h)? == HolderState::Present {
                    keep.push(h);
                }
            }
            let others: Vec<Holder> = keep.iter().copied().filter(|h| *h != self.sh.me).collect();
            let compatible = match want {
                LockMode::Exclusive => others.is_empty(),
                LockMode::SharedRead | LockMode::MultiWriter => {
                    others.is_empty() || cur.mode == want
                }
                LockMode::Free => true,
            };
            if !compatible || (cur.transfer_to.is_some() && !others.is_empty()) {
                return Ok(None);
            }
            let mut next = cur.clone();
            next.lock_gen = cur.lock_gen + 1;
            next.write_nonce = nonce();
            next.resource = resource;
            next.transfer_to = None;
            next.holders = others;
            if want != LockMode::Free {
                next.holders.push(self.sh.me);
            }
            next.mode = if next.holders.is_empty() {
                LockMode::Free
            } else {
                want
            };
            if next.holders.len() > crate::format::lock_record::MAX_HOLDERS {
                return Ok(None);
            }
            match cas_sector(&dev, addr, &img, &next.encode())? {
                SectorCas::Won => {
                    let held = HeldLock {
                        addr,
                        resource,
                        mode: next.mode,
                        lock_gen: next.lock_gen,
                        transferring: false,
                    };
                    let mut map = lock(&self.sh.held);
                    if want == LockMode::Free {
                        map.remove(&addr);
                    } else {
                        map.insert(addr, held);
                    }
                    return Ok(Some(held));
                }
                SectorCas::Lost(_) => continue,
            }
        }
        Ok(None)
    }

    /// Try once to take the lock at `addr` in `mode` (also upgrades and
    /// downgrades a lock we hold). `Ok(None)` if another live host holds it
    /// in a conflicting mode.
    pub fn try_lock(
        &self,
        addr: u64,
        resource: u64,
        mode: LockMode,
    ) -> Result<Option<HeldLock>, ClusterError> {
        if mode == LockMode::Free {
            return Err(ClusterError::LockState {
                addr,
                why: "asked to lock in mode FREE".into(),
            });
        }
        let was = lock(&self.sh.held).get(&addr).copied();
        if let Some(h) = was {
            if h.mode == mode {
                return Ok(Some(h));
            }
            // Leaving EXCLUSIVE: our in-place writes must be durable first.
            if h.mode == LockMode::Exclusive {
                self.dev().flush()?;
            }
        }
        self.change(addr, resource, mode)
    }

    /// Take the lock, waiting up to `timeout` (backing off between tries).
    pub fn lock(
        &self,
        addr: u64,
        resource: u64,
        mode: LockMode,
        timeout: Duration,
    ) -> Result<HeldLock, ClusterError> {
        self.lock_with(addr, resource, mode, timeout, &mut || {})
    }

    /// [`Host::lock`], running `while_waiting` between tries: a caller that
    /// keeps other locks for convenience lets go of those other hosts want
    /// there (the host we wait for may be waiting for one of them).
    pub fn lock_with(
        &self,
        addr: u64,
        resource: u64,
        mode: LockMode,
        timeout: Duration,
        while_waiting: &mut dyn FnMut(),
    ) -> Result<HeldLock, ClusterError> {
        // Another host waits for this lock (its heartbeat slot says so) and
        // polls for it every H/2 at most: leave it that long to get in, so
        // a host taking the lock back to back (a directory it keeps
        // changing) cannot starve it.
        if lock(&self.sh.wanted_by_others).contains(&addr) {
            std::thread::sleep(self.politeness().min(timeout));
        }
        let start = self.sh.clock.now();
        let mut backoff = Duration::from_millis(2);
        let mut announced = false;
        let r = loop {
            match self.try_lock(addr, resource, mode) {
                Ok(Some(h)) => break Ok(h),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            if !announced {
                // Tell holders we wait (heartbeat slot): one that keeps the
                // lock only for convenience (a resource cluster) lets it go.
                announced = true;
                if let Err(e) = super::heartbeat::set_wanted(&self.sh, addr) {
                    break Err(e);
                }
            }
            let waited = self.sh.clock.now().saturating_sub(start);
            if waited >= timeout {
                let holders = read_sector(&self.dev(), addr)
                    .ok()
                    .and_then(|b| LockRecord::decode(&b, addr).ok());
                break Err(match holders {
                    Some(r) => ClusterError::Busy {
                        addr,
                        mode: mode_name(r.mode),
                        holders: r.holders,
                    },
                    None => ClusterError::Timeout {
                        addr,
                        waited_ms: waited.as_millis() as u64,
                    },
                });
            }
            while_waiting();
            let jitter = Duration::from_micros(rand::random::<u64>() % 1000);
            std::thread::sleep(backoff + jitter);
            backoff = (backoff * 2).min(self.sh.timeouts.heartbeat / 2);
        };
        if announced {
            // Cleared in memory; the next beat carries it.
            super::heartbeat::clear_wanted(&self.sh, addr);
        }
        r
    }

    /// Say in our heartbeat slot that we wait for the lock record at `addr`
    /// without trying to take it (a reader that needs a directory nobody
    /// holds: holders leave it alone for [`Host::politeness`] before taking
    /// it again, so the reader gets a quiet moment). Withdrawn when the
    /// returned guard drops.
    pub fn announce_wait(&self, addr: u64) -> Result<WaitAnnouncement<'_>, ClusterError> {
        super::heartbeat::set_wanted(&self.sh, addr)?;
        Ok(WaitAnnouncement { host: self, addr })
    }

    /// How long to leave a lock another host waits for: longer than its
    /// poll interval (at most H/2 plus jitter, see [`Host::lock`]).
    pub fn politeness(&self) -> Duration {
        self.sh.timeouts.heartbeat / 2 + Duration::from_millis(20)
    }

    /// Lock records other live hosts are waiting for (as of the last read
    /// of the heartbeat region, at most H ago).
    pub fn wanted_by_others(&self) -> Vec<u64> {
        lock(&self.sh.wanted_by_others).clone()
    }

    /// Release a lock we hold. In-place writes under it are flushed first,
    /// so journal replay may skip them once the generation moves on.
    pub fn unlock(&self, addr: u64) -> Result<(), ClusterError> {
        let Some(held) = lock(&self.sh.held).get(&addr).copied() else {
            return Err(ClusterError::LockState {
                addr,
                why: "not held by this host".into(),
            });
        };
        self.dev().flush()?;
        let dev = self.dev();
        loop {
            let img = read_sector(&dev, addr)?;
            let cur = LockRecord::decode(&img, addr)?;
            if !cur.holders.contains(&self.sh.me) {
                lock(&self.sh.held).remove(&addr);
                return Err(ClusterError::LockLost { addr });
            }
            let mut next = cur.clone();
            next.lock_gen += 1;
            next.write_nonce = nonce();
            next.transfer_to = None;
            next.holders.retain(|h| *h != self.sh.me);
            if next.holders.is_empty() {
                next.mode = LockMode::Free;
            }
            if let SectorCas::Won = cas_sector(&dev, addr, &img, &next.encode())? {
                lock(&self.sh.held).remove(&held.addr);
                return Ok(());
            }
        }
    }

    /// Current generation of a lock we hold (tags journal records).
    pub fn held(&self, addr: u64) -> Option<HeldLock> {
        lock(&self.sh.held).get(&addr).copied()
    }

    /// Live migration, source side: having stopped and flushed all I/O under
    /// the lock, mark it TRANSFER to `dst`. From this image exactly one of
    /// [`Host::accept_transfer`] (destination) or [`Host::cancel_transfer`]
    /// (source) can win.
    pub fn begin_transfer(&self, addr: u64, dst: Holder) -> Result<(), ClusterError> {
        let held = self
            .held(addr)
            .filter(|h| h.mode == LockMode::Exclusive)
            .ok_or_else(|| ClusterError::LockState {
                addr,
                why: "TRANSFER needs the lock held EXCLUSIVE by this host".into(),
            })?;
        self.dev().flush()?;
        let dev = self.dev();
        let img = read_sector(&dev, addr)?;
        let cur = LockRecord::decode(&img, addr)?;
        if cur.holders != [self.sh.me]
            || cur.mode != LockMode::Exclusive
            || cur.transfer_to.is_some()
        {
            return Err(ClusterError::LockLost { addr });
        }
        let mut next = cur.clone();
        next.lock_gen += 1;
        next.write_nonce = nonce();
        next.transfer_to = Some(dst);
        match cas_sector(&dev, addr, &img, &next.encode())? {
            SectorCas::Won => {
                lock(&self.sh.held).insert(
                    addr,
                    HeldLock {
                        lock_gen: next.lock_gen,
                        transferring: true,
                        ..held
                    },
                );
                Ok(())
            }
            SectorCas::Lost(_) => Err(ClusterError::LockLost { addr }),
        }
    }

    /// Live migration, destination side: take a lock marked TRANSFER to us.
    /// Returns false if the source cancelled (or nothing is offered to us).
    pub fn accept_transfer(&self, addr: u64, resource: u64) -> Result<bool, ClusterError> {
        self.finish_transfer(addr, resource, true)
    }

    /// Live migration, source side: take the lock back from TRANSFER.
    /// Returns false if the destination already accepted.
    pub fn cancel_transfer(&self, addr: u64) -> Result<bool, ClusterError> {
        let resource = self.held(addr).map(|h| h.resource).unwrap_or(0);
        self.finish_transfer(addr, resource, false)
    }

    fn finish_transfer(
        &self,
        addr: u64,
        resource: u64,
        accept: bool,
    ) -> Result<bool, ClusterError> {
        let dev = self.dev();
        let img = read_sector(&dev, addr)?;
        let cur = LockRecord::decode(&img, addr)?;
        let Some(dst) = cur.transfer_to else {
            return Ok(false);
        };
        if accept && dst != self.sh.me {
            return Ok(false);
        }
        if !accept && cur.holders != [self.sh.me] {
            return Ok(false);
        }
        let mut next = cur.clone();
        next.lock_gen += 1;
        next.write_nonce = nonce();
        next.transfer_to = None;
        next.holders = vec![self.sh.me];
        next.mode = LockMode::Exclusive;
        match cas_sector(&dev, addr, &img, &next.encode())? {
            SectorCas::Won => {
                lock(&self.sh.held).insert(
                    addr,
                    HeldLock {
                        addr,
                        resource: if accept { resource } else { cur.resource },
                        mode: LockMode::Exclusive,
                        lock_gen: next.lock_gen,
                        transferring: false,
                    },
                );
                Ok(true)
            }
            SectorCas::Lost(_) => {
                if !accept {
                    lock(&self.sh.held).remove(&addr);
                }
                Ok(false)
            }
        }
    }
}

/// Read and decode a lock record without any lock (observers, CLI).
pub fn read_lock(dev: &dyn BlockDev, addr: u64) -> Result<LockRecord, ClusterError> {
    let img = read_sector(dev, addr)?;
    Ok(LockRecord::decode(&img, addr)?)
}

/// A wait announced with [`Host::announce_wait`]; withdrawn on drop (in
/// memory; the next beat carries it).
#[derive(Debug)]
pub struct WaitAnnouncement<'a> {
    host: &'a Host,
    addr: u64,
}

impl Drop for WaitAnnouncement<'_> {
    fn drop(&mut self) {
        super::heartbeat::clear_wanted(&self.host.sh, self.addr);
    }
}

//! A host: one process that has joined the volume and owns a heartbeat
//! slot. Joining, the heartbeat and self-fence threads, clean exit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::dev::{BlockDev, DevError, FenceToken, FencedOp, SharedDev};
use crate::format::{HeartbeatSlot, Holder, LockMode, SlotState, SECTOR};
use crate::volume::Volume;

use super::clock::{BootClock, Clock};
use super::journal::{Journal, JournalLocation};
use super::liveness::{Observer, Verdict};
use super::sector_cas::{cas_sector, nonce, read_sector, SectorCas};
use super::timeouts::Timeouts;
use super::{ClusterError, HostDev};

/// Persistent-reservation fencing of a dead host before its locks are
/// broken (SCSI PREEMPT AND ABORT on devices that have it).
pub trait PrFencer: Send + Sync + std::fmt::Debug {
    /// Before joining writes anything: make sure this initiator may write
    /// (a host whose key was preempted registers a provisional one).
    fn prepare_join(&self) -> Result<(), ClusterError>;
    /// Register this incarnation's key (called at join, before its first
    /// write, and again for each new incarnation).
    fn register(&self, me: Holder) -> Result<(), ClusterError>;
    /// Remove `victim`'s key so none of its writes can land any more.
    fn preempt(&self, victim: Holder) -> Result<(), ClusterError>;
}

/// Things a host tells its embedder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEvent {
    /// All I/O has stopped; open handles fail with EIO. Rejoin to go on.
    Fenced(String),
    /// This host recovered a dead host's slot (journal replayed).
    Recovered { slot: u32, records: u64 },
}

/// How a host joins.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Identity of the host; a second live process with the same UUID is refused.
    pub host_uuid: [u8; 16],
    pub host_name: String,
    /// None: the volume's minimums.
    pub timeouts: Option<Timeouts>,
    pub clock: Arc<dyn Clock>,
    pub fencer: Option<Arc<dyn PrFencer>>,
    /// Give up joining after this long (waiting for a dead slot, say).
    pub join_timeout: Duration,
}

impl HostConfig {
    /// A host with a random identity and the volume's timeouts.
    pub fn new(host_name: &str) -> HostConfig {
        HostConfig {
            host_uuid: rand::random(),
            host_name: host_name.to_string(),
            timeouts: None,
            clock: Arc::new(BootClock),
            fencer: None,
            join_timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Debug)]
pub(crate) struct HbState {
    pub image: [u8; SECTOR],
    pub slot: HeartbeatSlot,
}

/// What a host holds of one lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLock {
    pub addr: u64,
    pub resource: u64,
    pub mode: LockMode,
    /// Generation after our last change: tags journal records.
    pub lock_gen: u64,
    /// Offered to another host (TRANSFER): no more writes under it.
    pub transferring: bool,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub vol: Volume,
    pub raw: SharedDev,
    pub slot: u32,
    pub slot_addr: u64,
    pub me: Holder,
    pub token: FenceToken,
    pub timeouts: Timeouts,
    pub clock: Arc<dyn Clock>,
    pub fencer: Option<Arc<dyn PrFencer>>,
    pub hb: Mutex<HbState>,
    /// Issue time (ns on our clock) of the last beat known to have landed.
    /// Atomic so I/O never waits behind a heartbeat write in progress.
    pub last_landed_ns: AtomicU64,
    pub fenced: AtomicBool,
    pub fence_reason: Mutex<Option<String>>,
    pub observer: Mutex<Observer>,
    /// Lock records other live hosts said (in their heartbeat slots, at
    /// the last region read) they are waiting for.
    pub wanted_by_others: Mutex<Vec<u64>>,
    pub journal: Mutex<Journal>,
    pub held: Mutex<BTreeMap<u64, HeldLock>>,
    pub stop: AtomicBool,
    pub events: Mutex<Option<Sender<HostEvent>>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn emit(&self, e: HostEvent) {
        if let Some(tx) = lock(&self.events).as_ref() {
            let _ = tx.send(e);
        }
    }

    /// Stop all I/O for good (this incarnation).
    pub fn fence(&self, why: &str) {
        if !self.fenced.swap(true, Ordering::SeqCst) {
            *lock(&self.fence_reason) = Some(why.to_string());
            tracing::error!(slot = self.slot, "host fenced: {why}");
            self.emit(HostEvent::Fenced(why.to_string()));
        }
    }

    /// May this host still issue I/O? Checked before every operation, so a
    /// host whose beats stopped landing stops even if its watchdog thread
    /// is starved.
    pub fn io_allowed(&self) -> Result<(), ClusterError> {
        if self.fenced.load(Ordering::SeqCst) {
            let why = lock(&self.fence_reason).clone().unwrap_or_default();
            return Err(ClusterError::Fenced(why));
        }
        let last = Duration::from_nanos(self.last_landed_ns.load(Ordering::SeqCst));
        if self.clock.now().saturating_sub(last) >= self.timeouts.self_fence {
            self.fence("no heartbeat landed within the self-fence timeout");
            return self.io_allowed();
        }
        Ok(())
    }

    pub fn set_last_landed(&self, issue: Duration) {
        self.last_landed_ns
            .store(issue.as_nanos() as u64, Ordering::SeqCst);
    }

    pub fn min_dead(&self) -> Duration {
        Timeouts::from_minimums(&self.vol.header.timeouts).dead_after
    }

    /// Read slot `slot` and judge it.
    pub fn judge(&self, slot: u32) -> Result<(HeartbeatSlot, [u8; SECTOR], Verdict), ClusterError> {
        let addr = self.vol.heartbeat_slot_addr(slot);
        let issued = self.clock.now();
        let img = read_sector(self.raw.as_ref(), addr)?;
        let completed = self.clock.now();
        let s = HeartbeatSlot::decode(&img, addr)?;
        let v = lock(&self.observer).observe(slot, &s, issued, completed, self.min_dead());
        Ok((s, img, v))
    }

    pub fn journal_location(&self, slot: u32, s: &HeartbeatSlot) -> JournalLocation {
        JournalLocation {
            addr: s.journal_addr,
            size: s.journal_len,
            slot,
            volume_uuid: self.vol.header.uuid,
        }
    }
}

/// A joined host. Cloning shares the host.
#[derive(Debug, Clone)]
pub struct Host {
    pub(crate) sh: Arc<Shared>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

fn live_image(
    old: &HeartbeatSlot,
    cfg: &HostConfig,
    t: &Timeouts,
    mount_nonce: u64,
) -> HeartbeatSlot {
    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    HeartbeatSlot {
        addr: old.addr,
        state: SlotState::Live,
        hb_gen: old.hb_gen + 1,
        counter: old.counter + 1,
        host_uuid: cfg.host_uuid,
        mount_nonce,
        interval_ms: ms(t.heartbeat),
        io_timeout_ms: ms(t.io_timeout),
        dead_after_ms: ms(t.dead_after),
        self_fence_ms: ms(t.self_fence),
        journal_addr: old.journal_addr,
        journal_len: old.journal_len,
        write_nonce: nonce(),
        recoverer: None,
        host_name: cfg.host_name.clone(),
        wanted_lock: 0,
    }
}

impl Host {
    /// Join the volume: claim a heartbeat slot by compare-and-write. Does
    /// not start the heartbeat threads ([`Host::start`]), so tests and the
    /// simulator can drive beats by hand.
    pub fn join(vol: Volume, cfg: HostConfig) -> Result<Host, ClusterError> {
        let t = Timeouts::for_volume(&vol.header.timeouts, cfg.timeouts)?;
        if let Some(f) = &cfg.fencer {
            f.prepare_join()?;
        }
        let raw = vol.dev.clone();
        let clock = cfg.clock.clone();
        // Waiting here sleeps in real time, so the give-up deadline is real
        // time too (a hand-moved test clock would never reach it).
        let started_real = std::time::Instant::now();
        let mut observer = Observer::default();
        let min_dead = Timeouts::from_minimums(&vol.header.timeouts).dead_after;
        // First sighting of each LIVE slot carrying our identity: if it beats
        // while we watch, a second process with our identity is running.
        let mut namesakes: std::collections::HashMap<u32, (u64, u64)> = Default::default();
        loop {
            if started_real.elapsed() > cfg.join_timeout {
                return Err(ClusterError::NoFreeSlot {
                    slots: vol.header.max_hosts,
                });
            }
            let issued = clock.now();
            let slots = read_region(&vol)?;
            let now = clock.now();
            let mut candidate = None;
            let mut dead_candidate = None;
            let mut watching_namesake = false;
            for (i, s) in slots.iter().enumerate() {
                let i = i as u32;
                let Ok(s) = s else { continue };
                let v = observer.observe(i, s, issued, now, min_dead);
                let own = s.host_uuid == cfg.host_uuid;
                if own && s.state == SlotState::Live {
                    let first = *namesakes.entry(i).or_insert((s.hb_gen, s.counter));
                    if first != (s.hb_gen, s.counter) {
                        return Err(ClusterError::DuplicateHost { slot: i });
                    }
                    if v == Verdict::Dead {
                        dead_candidate = Some(i);
                    } else {
                        watching_namesake = true;
                    }
                    continue;
                }
                match v {
                    Verdict::Free | Verdict::CleanExit => {
                        if candidate.is_none() || own {
                            candidate = Some(i);
                        }
                    }
                    Verdict::Dead => dead_candidate = dead_candidate.or(Some(i)),
                    Verdict::Live | Verdict::Recovering => {}
                }
            }
            let free_slot = if watching_namesake { None } else { candidate };
            let (i, new, new_img, issue) = if let Some(i) = free_slot {
                let addr = vol.heartbeat_slot_addr(i);
                let old_img = read_sector(raw.as_ref(), addr)?;
                let old = HeartbeatSlot::decode(&old_img, addr)?;
                if !matches!(old.state, SlotState::Free | SlotState::CleanExit) {
                    continue;
                }
                let new = live_image(&old, &cfg, &t, nonce());
                let issue = clock.now();
                let new_img = new.encode();
                match cas_sector(raw.as_ref(), addr, &old_img, &new_img)? {
                    SectorCas::Lost(_) => continue,
                    SectorCas::Won => (i, new, new_img, issue),
                }
            } else {
                let Some(d) = dead_candidate else {
                    std::thread::sleep(t.heartbeat.min(Duration::from_millis(200)));
                    continue;
                };
                // A stranded slot (perhaps our own earlier incarnation):
                // claim it by recovery.
                match claim_by_recovery(&vol, d, &cfg, &t)? {
                    Some((new, img, issue)) => (d, new, img, issue),
                    None => continue,
                }
            };
            let addr = vol.heartbeat_slot_addr(i);
            if let Some(f) = &cfg.fencer {
                // Before our first write: the journal head below.
                f.register(Holder {
                    slot: i as u16,
                    hb_gen: new.hb_gen,
                })?;
            }
            let mount_nonce = new.mount_nonce;
            let token = FenceToken {
                slot_addr: addr,
                hb_gen: new.hb_gen,
                mount_nonce,
            };
            let loc = JournalLocation {
                addr: new.journal_addr,
                size: new.journal_len,
                slot: i,
                volume_uuid: vol.header.uuid,
            };
            let journal = Journal::start(
                &FencedRaw {
                    raw: raw.as_ref(),
                    token,
                },
                loc,
                new.hb_gen,
            )?;
            let me = Holder {
                slot: i as u16,
                hb_gen: new.hb_gen,
            };
            tracing::info!(
                slot = i,
                hb_gen = new.hb_gen,
                "joined volume '{}'",
                vol.header.label
            );
            let sh = Shared {
                raw,
                slot: i,
                slot_addr: addr,
                me,
                token,
                timeouts: t,
                clock,
                fencer: cfg.fencer.clone(),
                hb: Mutex::new(HbState {
                    image: new_img,
                    slot: new,
                }),
                last_landed_ns: AtomicU64::new(issue.as_nanos() as u64),
                fenced: AtomicBool::new(false),
                fence_reason: Mutex::new(None),
                observer: Mutex::new(observer),
                wanted_by_others: Mutex::new(Vec::new()),
                journal: Mutex::new(journal),
                held: Mutex::new(BTreeMap::new()),
                stop: AtomicBool::new(false),
                events: Mutex::new(None),
                vol,
            };
            return Ok(Host {
                sh: Arc::new(sh),
                threads: Arc::new(Mutex::new(Vec::new())),
            });
        }
    }

    /// Start the heartbeat (every H) and self-fence watchdog threads.
    pub fn start(&self) {
        let mut th = lock(&self.threads);
        if !th.is_empty() {
            return;
        }
        let sh = self.sh.clone();
        th.push(std::thread::spawn(move || {
            let h = sh.timeouts.heartbeat;
            while !sh.stop.load(Ordering::SeqCst) && !sh.fenced.load(Ordering::SeqCst) {
                let next = sh.clock.now() + h;
                if let Err(e) = super::heartbeat::beat(&sh) {
                    tracing::warn!(slot = sh.slot, "heartbeat failed: {e}");
                }
                // Sleep in short steps so leave() need not wait up to H
                // for this thread (every short-lived command pays that).
                let until = std::time::Instant::now() + next.saturating_sub(sh.clock.now());
                loop {
                    let now = std::time::Instant::now();
                    if now >= until || sh.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep((until - now).min(Duration::from_millis(20)));
                }
            }
        }));
        let sh = self.sh.clone();
        th.push(std::thread::spawn(move || {
            let tick = sh.timeouts.heartbeat / 4;
            while !sh.stop.load(Ordering::SeqCst) && !sh.fenced.load(Ordering::SeqCst) {
                let _ = sh.io_allowed();
                let mut slept = Duration::ZERO;
                while slept < tick && !sh.stop.load(Ordering::SeqCst) {
                    let step = (tick - slept).min(Duration::from_millis(20));
                    std::thread::sleep(step);
                    slept += step;
                }
            }
        }));
    }

    /// Receive [`HostEvent`]s on this channel.
    pub fn subscribe(&self, tx: Sender<HostEvent>) {
        *lock(&self.sh.events) = Some(tx);
    }

    /// One heartbeat by hand (the threads call this every H).
    pub fn beat(&self) -> Result<(), ClusterError> {
        super::heartbeat::beat(&self.sh)
    }

    /// The fenced device all of this host's I/O goes through.
    pub fn dev(&self) -> HostDev {
        HostDev::new(self.sh.clone())
    }

    pub fn volume(&self) -> &Volume {
        &self.sh.vol
    }

    pub fn slot(&self) -> u32 {
        self.sh.slot
    }

    /// (slot, hb_gen): how lock records name this host.
    pub fn holder(&self) -> Holder {
        self.sh.me
    }

    pub fn timeouts(&self) -> Timeouts {
        self.sh.timeouts
    }

    pub fn is_fenced(&self) -> bool {
        self.sh.fenced.load(Ordering::SeqCst)
    }

    /// Check the self-fence deadline now (the watchdog does this every H/4).
    pub fn check_fence(&self) -> Result<(), ClusterError> {
        self.sh.io_allowed()
    }

    /// Locks this host holds.
    pub fn held_locks(&self) -> Vec<HeldLock> {
        lock(&self.sh.held).values().copied().collect()
    }

    /// Run a journaled metadata transaction: commit (flushed), then write in
    /// place.
    ///
    /// Every block must be protected by a lock this host holds EXCLUSIVE
    /// (not offered for TRANSFER), tagged with that lock's current
    /// generation. A failure once the commit has started fences the host:
    /// a half-applied transaction must not be followed by more writes.
    pub fn run_txn(&self, txn: &super::journal::Txn) -> Result<u64, ClusterError> {
        {
            let held = lock(&self.sh.held);
            for b in &txn.blocks {
                match held.get(&b.lock_addr) {
                    Some(h) if h.mode == LockMode::Exclusive && !h.transferring && h.lock_gen == b.lock_gen => {}
                    _ => {
                        return Err(ClusterError::LockState {
                            addr: b.lock_addr,
                            why: format!(
                                "journaled write of block {} needs this lock held EXCLUSIVE at generation {}",
                                b.addr, b.lock_gen
                            ),
                        })
                    }
                }
            }
        }
        let dev = self.dev();
        let r = lock(&self.sh.journal).run(&dev, txn);
        if let Err(e) = &r {
            self.sh.fence(&format!("journal transaction failed: {e}"));
        }
        r
    }

    /// Clean unmount: release every lock, checkpoint the journal, mark the
    /// slot CLEAN_EXIT (hb_gen + 1) so nobody waits for us, stop the threads.
    pub fn leave(self) -> Result<(), ClusterError> {
        let held: Vec<u64> = lock(&self.sh.held).keys().copied().collect();
        let mut first_err = None;
        for addr in held {
            match self.unlock(addr) {
                // Handed over (TRANSFER) or broken: nothing left to release.
                Ok(()) | Err(ClusterError::LockLost { .. }) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let dev = self.dev();
        let r = (|| {
            if let Some(e) = first_err {
                return Err(e);
            }
            lock(&self.sh.journal).checkpoint(&dev)?;
            self.sh.io_allowed()?;
            let mut hb = lock(&self.sh.hb);
            let mut s = hb.slot.clone();
            s.state = SlotState::CleanExit;
            s.hb_gen += 1;
            s.write_nonce = nonce();
            let img = s.encode();
            match cas_sector(self.sh.raw.as_ref(), self.sh.slot_addr, &hb.image, &img)? {
                SectorCas::Won => {
                    hb.image = img;
                    hb.slot = s;
                    Ok(())
                }
                SectorCas::Lost(_) => Err(ClusterError::Fenced(
                    "heartbeat slot was taken over before the clean exit".into(),
                )),
            }
        })();
        self.sh.stop.store(true, Ordering::SeqCst);
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
        r
    }

    /// Stop the threads without touching the disk (a crash, for tests).
    pub fn abandon(self) {
        self.sh.stop.store(true, Ordering::SeqCst);
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Read and decode every heartbeat slot in one I/O.
pub fn read_region(
    vol: &Volume,
) -> Result<Vec<Result<HeartbeatSlot, crate::format::FormatError>>, ClusterError> {
    let n = vol.header.max_hosts as usize;
    let mut buf = vec![0u8; n * SECTOR];
    vol.dev.read_at(&mut buf, vol.header.heartbeat_offset)?;
    Ok((0..n)
        .map(|i| {
            HeartbeatSlot::decode(
                &buf[i * SECTOR..(i + 1) * SECTOR],
                vol.heartbeat_slot_addr(i as u32),
            )
        })
        .collect())
}

/// Claim a dead host's slot when no slot is free: CAS it to RECOVERING
/// under our own identity (new generation, our mount nonce), replay its
/// journal with writes fenced by that RECOVERING image, then CAS it LIVE for
/// us. If we stall for D, another host takes the recovery over and our
/// fenced writes are refused from then on.
fn claim_by_recovery(
    vol: &Volume,
    slot: u32,
    cfg: &HostConfig,
    t: &Timeouts,
) -> Result<Option<(HeartbeatSlot, [u8; SECTOR], Duration)>, ClusterError> {
    let addr = vol.heartbeat_slot_addr(slot);
    let img = read_sector(vol.dev.as_ref(), addr)?;
    let s = HeartbeatSlot::decode(&img, addr)?;
    if s.state != SlotState::Live {
        return Ok(None);
    }
    let mount_nonce = nonce();
    let mut rec = live_image(&s, cfg, t, mount_nonce);
    if let Some(f) = &cfg.fencer {
        // Our key first (only a registrant may preempt); the replay below
        // writes as this RECOVERING incarnation.
        f.register(Holder {
            slot: slot as u16,
            hb_gen: rec.hb_gen,
        })?;
        f.preempt(Holder {
            slot: slot as u16,
            hb_gen: s.hb_gen,
        })?;
    }
    rec.state = SlotState::Recovering;
    rec.recoverer = Some(Holder {
        slot: slot as u16,
        hb_gen: rec.hb_gen,
    });
    let rec_img = rec.encode();
    if cas_sector(vol.dev.as_ref(), addr, &img, &rec_img)? != SectorCas::Won {
        return Ok(None);
    }

    let token = FenceToken {
        slot_addr: addr,
        hb_gen: rec.hb_gen,
        mount_nonce,
    };
    let loc = JournalLocation {
        addr: s.journal_addr,
        size: s.journal_len,
        slot,
        volume_uuid: vol.header.uuid,
    };
    let report = super::journal::replay(
        &FencedRaw {
            raw: vol.dev.as_ref(),
            token,
        },
        loc,
    )?;
    tracing::warn!(
        slot,
        records = report.records,
        "claimed a dead host's slot after replaying its journal"
    );
    let live = live_image(&rec, cfg, t, mount_nonce);
    let live_img = live.encode();
    let issue = cfg.clock.now();
    match cas_sector(vol.dev.as_ref(), addr, &rec_img, &live_img)? {
        SectorCas::Won => Ok(Some((live, live_img, issue))),
        SectorCas::Lost(_) => Ok(None),
    }
}

/// Fenced writes through the raw device before the `Shared` exists (the
/// journal head written while joining).
#[derive(Debug)]
struct FencedRaw<'a> {
    raw: &'a dyn BlockDev,
    token: FenceToken,
}

impl crate::dev::DevWrapper for FencedRaw<'_> {
    fn inner(&self) -> &dyn BlockDev {
        self.raw
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DevError> {
        self.fenced(FencedOp::Write(buf), offset)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DevError> {
        self.fenced(FencedOp::WriteZeroes(len), offset)
    }
    fn unmap(&self, offset: u64, len: u64) -> Result<(), DevError> {
        self.fenced(FencedOp::Unmap(len), offset)
    }
    /// The caller's fence is checked by reading the slot, and the write
    /// itself goes under this host's token.
    fn write_fenced(
        &self,
        op: FencedOp<'_>,
        offset: u64,
        fence: &FenceToken,
    ) -> Result<(), DevError> {
        crate::dev::check_then_apply(self, op, offset, fence)
    }
}

impl FencedRaw<'_> {
    fn fenced(&self, op: FencedOp<'_>, offset: u64) -> Result<(), DevError> {
        self.raw.write_fenced(op, offset, &self.token)
    }
}

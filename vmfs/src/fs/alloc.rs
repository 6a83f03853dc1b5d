//! Resource allocation inside resource clusters. A host takes a cluster's
//! lock record EXCLUSIVE, keeps it (and the decoded bitmap) while it
//! allocates from it, and releases it when idle. Bitmap changes reach the
//! disk only through the journal, as part of the [`Change`] that uses the
//! resources. A host starts at a *home* cluster derived from its heartbeat
//! slot, so hosts rarely contend for one cluster.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::cluster::{HeldLock, Host, HostDev};
use crate::dev::BlockDev;
use crate::format::cluster::ClusterHeader;
use crate::format::header::META_BLOCK;
use crate::format::{LockMode, ResourceKind, SECTOR};
use crate::volume::{cluster_lock_resource, Volume};

use super::change::Change;
use super::discard::{Discarder, Pending};
use super::error::{FsError, FsResult};

/// Clusters read per unlocked peek when looking for free space.
const PEEK_BATCH: u32 = 64;

/// Share of each small-block cluster that small-file data may not take
/// (1/8, at least one block): directories, xattr blocks and orphan tables
/// live only in small blocks, while a small file that finds no small
/// block moves to file blocks. Without it, small files could fill the
/// region and leave directories unable to grow on a volume with free
/// space.
const SMALL_RESERVE_SHARE: u32 = 8;

/// What an allocation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Metadata, file blocks, anything that cannot go elsewhere.
    Any,
    /// A small-block file's data: stays out of each cluster's reserve.
    SmallFileData,
}

/// Small blocks of a cluster of `resource_count` kept from small-file data.
pub fn small_reserve(resource_count: u32) -> u32 {
    (resource_count / SMALL_RESERVE_SHARE).max(1)
}

impl Use {
    /// Can this allocation be served from a cluster with header `h`?
    fn admits(self, h: &ClusterHeader) -> bool {
        let reserve = match self {
            Use::Any => 0,
            Use::SmallFileData => small_reserve(h.resource_count),
        };
        h.free_count() > reserve
    }
}

#[derive(Debug)]
struct HeldCluster {
    lock: HeldLock,
    header: ClusterHeader,
    last_used: Instant,
}

/// Per-host allocator state.
#[derive(Debug)]
pub struct Allocator {
    host: Host,
    dev: HostDev,
    vol: Volume,
    held: HashMap<(ResourceKind, u32), HeldCluster>,
    /// Next cluster to try, per kind.
    cursor: [u32; 4],
    /// How long to wait for a cluster another host holds when freeing into it.
    wait: Duration,
    /// Freed data blocks waiting for their discard (not handed out again
    /// until it is done).
    discards: Discarder,
    /// Clusters let go because another host wants them, and until when
    /// this host leaves them alone (that host is polling for the lock).
    cooling: HashMap<(ResourceKind, u32), Instant>,
    /// Clusters whose cached bitmap a change not yet committed (or
    /// abandoned) has altered: never let go before that change is done.
    staged: HashSet<(ResourceKind, u32)>,
    /// How long a cluster let go that way is left alone: longer than a
    /// waiting host's poll interval ([`Host::politeness`]).
    cool_down: Duration,
}

impl Allocator {
    pub fn new(host: Host) -> Allocator {
        let vol = host.volume().clone();
        let slot = u64::from(host.slot());
        let hosts = u64::from(vol.header.max_hosts.max(1));
        let mut cursor = [0u32; 4];
        for kind in ResourceKind::ALL {
            let n = u64::from(vol.header.region(kind).clusters);
            cursor[kind.index()] = (slot * n / hosts) as u32;
        }
        let t = host.timeouts();
        Allocator {
            discards: Discarder::new(std::sync::Arc::new(host.dev())),
            dev: host.dev(),
            wait: t.dead_after + t.io_timeout,
            cooling: HashMap::new(),
            staged: HashSet::new(),
            cool_down: host.politeness(),
            host,
            vol,
            held: HashMap::new(),
            cursor,
        }
    }

    fn lock_addr(&self, kind: ResourceKind, c: u32) -> u64 {
        self.vol.cluster_lock_addr(kind, c)
    }

    fn read_header(&self, kind: ResourceKind, c: u32) -> FsResult<ClusterHeader> {
        let addr = self.vol.cluster_header_addr(kind, c);
        let mut b = vec![0u8; META_BLOCK as usize - SECTOR];
        self.dev.read_at(&mut b, addr)?;
        let h = ClusterHeader::decode(&b, addr)?;
        if h.kind != kind || h.cluster != c {
            return Err(FsError::Corrupt {
                ino: 0,
                why: format!(
                    "cluster header at {addr} says {} cluster {}, expected {} cluster {c}",
                    h.kind.name(),
                    h.cluster,
                    kind.name()
                ),
            });
        }
        Ok(h)
    }

    /// Take cluster `c` EXCLUSIVE (waiting up to `wait` if `block`) and
    /// cache its header. `Ok(false)`: busy.
    fn take(&mut self, kind: ResourceKind, c: u32, block: bool) -> FsResult<bool> {
        if self.held.contains_key(&(kind, c)) {
            return Ok(true);
        }
        let addr = self.lock_addr(kind, c);
        let res = cluster_lock_resource(kind, c);
        let lock = if block {
            // While we wait, the holder may be waiting for a cluster we keep
            // (one no change of ours is using): let it have it.
            let host = self.host.clone();
            let wait = self.wait;
            let mut yield_clusters = || {
                if let Err(e) = self.yield_wanted() {
                    tracing::debug!("letting go of wanted clusters: {e}");
                }
            };
            match host.lock_with(addr, res, LockMode::Exclusive, wait, &mut yield_clusters) {
                Ok(l) => l,
                Err(crate::cluster::ClusterError::Busy { .. }) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        } else {
            match self.host.try_lock(addr, res, LockMode::Exclusive)? {
                Some(l) => l,
                None => return Ok(false),
            }
        };
        let header = match self.read_header(kind, c) {
            Ok(h) => h,
            Err(e) => {
                let _ = self.host.unlock(addr);
                return Err(e);
            }
        };
        self.held.insert(
            (kind, c),
            HeldCluster {
                lock,
                header,
                last_used: Instant::now(),
            },
        );
        Ok(true)
    }

    /// Find a cluster of `kind` with free resources (more than its reserve
    /// for a [`Use::SmallFileData`] allocation) and hold it.
    fn acquire_free(&mut self, kind: ResourceKind, use_: Use) -> FsResult<u32> {
        let n = self.vol.header.region(kind).clusters;
        let start = self.cursor[kind.index()] % n.max(1);
        let mut busy = Vec::new();
        let mut cooled = Vec::new();
        let now = Instant::now();
        self.cooling.retain(|_, until| *until > now);
        let mut step = 0u32;
        while step < n {
            let first = (start + step) % n;
            let batch = PEEK_BATCH.min(n - first).min(n - step);
            let mut buf = vec![0u8; (batch as u64 * META_BLOCK) as usize];
            self.dev.read_at(&mut buf, self.lock_addr(kind, first))?;
            for i in 0..batch {
                let c = first + i;
                if self.held.contains_key(&(kind, c)) {
                    continue;
                }
                let o = (i as u64 * META_BLOCK) as usize;
                let addr = self.vol.cluster_header_addr(kind, c);
                let usable = ClusterHeader::decode(&buf[o + SECTOR..o + META_BLOCK as usize], addr)
                    .map(|h| use_.admits(&h))
                    .unwrap_or(false);
                if !usable {
                    continue;
                }
                if self.cooling.contains_key(&(kind, c)) {
                    cooled.push(c);
                    continue;
                }
                match self.take(kind, c, false) {
                    Ok(true) => {}
                    Ok(false) => {
                        busy.push(c);
                        continue;
                    }
                    // A damaged lock record or header: never allocate from it.
                    Err(FsError::Format(_)) | Err(FsError::Corrupt { .. }) => continue,
                    Err(e) => return Err(e),
                }
                if use_.admits(&self.held[&(kind, c)].header) {
                    self.cursor[kind.index()] = c;
                    return Ok(c);
                }
            }
            step += batch;
        }
        // Only clusters this host just let go have space: take one back.
        for c in cooled {
            if self.take(kind, c, false)? && use_.admits(&self.held[&(kind, c)].header) {
                self.cursor[kind.index()] = c;
                return Ok(c);
            }
        }
        // Everything with free space is held by other hosts: wait for one.
        for c in busy {
            if self.take(kind, c, true)? && use_.admits(&self.held[&(kind, c)].header) {
                self.cursor[kind.index()] = c;
                return Ok(c);
            }
        }
        Err(FsError::NoSpace(format!("no free {} left", kind.name())))
    }

    /// Let go of held clusters another live host is waiting for, except
    /// those a change in progress has altered (their images commit with
    /// it). Done on every allocation and free and while this host waits for
    /// an inode lock, not only by the housekeeping thread, which a host
    /// busy with back-to-back operations may keep waiting: the waiter may
    /// hold the very lock this host waits for.
    pub fn yield_wanted(&mut self) -> FsResult<()> {
        let wanted = self.host.wanted_by_others();
        if wanted.is_empty() {
            return Ok(());
        }
        let give: Vec<_> = self
            .held
            .keys()
            .filter(|&&(kind, c)| {
                wanted.contains(&self.lock_addr(kind, c)) && !self.staged.contains(&(kind, c))
            })
            .copied()
            .collect();
        let until = Instant::now() + self.cool_down;
        for &k in &give {
            self.cooling.insert(k, until);
        }
        self.let_go(give)
    }

    /// Release the clusters `keys` (held). Another host may allocate in one
    /// as soon as it has it: no discard of ours may land after that, so
    /// every pending discard is done first. Returns the first unlock error.
    fn let_go(&mut self, keys: Vec<(ResourceKind, u32)>) -> FsResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.discards.drain();
        let mut first = None;
        for k in keys {
            self.held.remove(&k);
            if let Err(e) = self.host.unlock(self.lock_addr(k.0, k.1)) {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Allocate one resource of `kind`; its bitmap change is staged in `ch`.
    pub fn alloc(&mut self, ch: &mut Change, kind: ResourceKind) -> FsResult<u64> {
        self.alloc_for(ch, kind, Use::Any)
    }

    /// Allocate a small block for a small-block file's data: never one of
    /// a cluster's reserve ([`Use::SmallFileData`]). NoSpace here sends
    /// the file to file blocks (promotion), leaving the reserve for
    /// directories, which cannot move.
    pub fn alloc_small_file_data(&mut self, ch: &mut Change) -> FsResult<u64> {
        self.alloc_for(ch, ResourceKind::SmallBlock, Use::SmallFileData)
    }

    fn alloc_for(&mut self, ch: &mut Change, kind: ResourceKind, use_: Use) -> FsResult<u64> {
        self.yield_wanted()?;
        let cur = self.cursor[kind.index()];
        let c = match self.held.get(&(kind, cur)) {
            Some(h) if use_.admits(&h.header) => cur,
            _ => match self
                .held
                .iter()
                .find(|((k, _), h)| *k == kind && use_.admits(&h.header))
            {
                Some(((_, c), _)) => *c,
                None => self.acquire_free(kind, use_)?,
            },
        };
        let (c, i) = match self.free_not_pending(kind, c, ch) {
            Some(i) => (c, i),
            None => {
                // Every free block here waits for its discard.
                self.discards.drain();
                match self.free_not_pending(kind, c, ch) {
                    Some(i) => (c, i),
                    // The only free ones here are freed by this change (a
                    // block replaced in a full cluster): use another cluster.
                    None => self.elsewhere(kind, c, ch, use_)?,
                }
            }
        };
        let h = self.held.get_mut(&(kind, c)).expect("held above");
        h.header.set(i, true);
        h.last_used = Instant::now();
        ch.clusters.insert((kind.code(), c));
        self.staged.insert((kind, c));
        Ok(h.header.first_resource + u64::from(i))
    }

    /// A usable free resource of `kind` outside cluster `not`: in another
    /// held cluster, else in a newly acquired one.
    fn elsewhere(
        &mut self,
        kind: ResourceKind,
        not: u32,
        ch: &Change,
        use_: Use,
    ) -> FsResult<(u32, u32)> {
        let held: Vec<u32> = self
            .held
            .iter()
            .filter(|&(&(k, c), h)| k == kind && c != not && use_.admits(&h.header))
            .map(|(&(_, c), _)| c)
            .collect();
        if let Some(found) = held
            .into_iter()
            .find_map(|c| self.free_not_pending(kind, c, ch).map(|i| (c, i)))
        {
            return Ok(found);
        }
        let c = self.acquire_free(kind, use_)?;
        self.free_not_pending(kind, c, ch)
            .map(|i| (c, i))
            .ok_or_else(|| {
                FsError::NoSpace(format!(
                    "the only free {} were freed by this change",
                    kind.name()
                ))
            })
    }

    /// A free resource of held cluster `c` whose discard is not pending
    /// (queued, or to be queued when `ch` commits).
    fn free_not_pending(&self, kind: ResourceKind, c: u32, ch: &Change) -> Option<u32> {
        let h = &self.held[&(kind, c)].header;
        let mut from = 0;
        while from < h.resource_count {
            let i = h.find_free(from)?;
            if i < from {
                return None; // wrapped around
            }
            let key = (kind.code(), h.first_resource + u64::from(i));
            if !self.discards.is_pending(key) && !ch.discard.iter().any(|p| p.key == key) {
                return Some(i);
            }
            from = i + 1;
        }
        None
    }

    /// Is resource `r` of `kind` in use? (The caller holds the lock that
    /// protects the resource itself, so its bit cannot change meanwhile.)
    pub fn is_allocated(&self, kind: ResourceKind, r: u64) -> FsResult<bool> {
        if r >= self.vol.header.region(kind).count {
            return Ok(false);
        }
        let (c, i) = self.vol.cluster_of(kind, r);
        Ok(match self.held.get(&(kind, c)) {
            Some(h) => h.header.is_set(i),
            None => self.read_header(kind, c)?.is_set(i),
        })
    }

    /// `ch` has committed: queue the discards of the data blocks it freed;
    /// the clusters it changed may be let go again.
    pub fn committed(&mut self, ch: &mut Change) {
        self.discards.push(std::mem::take(&mut ch.discard));
        self.unstage(ch);
    }

    fn unstage(&mut self, ch: &Change) {
        for &(code, c) in &ch.clusters {
            if let Some(kind) = ResourceKind::from_code(code) {
                self.staged.remove(&(kind, c));
            }
        }
    }

    /// Free resource `r` of `kind` (staged in `ch`); data blocks are
    /// discarded on the device after the change commits.
    pub fn free(&mut self, ch: &mut Change, kind: ResourceKind, r: u64) -> FsResult<()> {
        let reg = *self.vol.header.region(kind);
        if r >= reg.count {
            return Err(FsError::Corrupt {
                ino: 0,
                why: format!("{} {r} is beyond the {} there are", kind.name(), reg.count),
            });
        }
        self.yield_wanted()?;
        let (c, i) = self.vol.cluster_of(kind, r);
        // Let go moments ago for a host that waits for it: let that host
        // have its turn first.
        if let Some(&until) = self.cooling.get(&(kind, c)) {
            let now = Instant::now();
            if until > now && !self.held.contains_key(&(kind, c)) {
                std::thread::sleep(until - now);
            }
            self.cooling.remove(&(kind, c));
        }
        if !self.take(kind, c, true)? {
            return Err(FsError::Busy {
                ino: 0,
                why: format!("{} cluster {c} is held by another host", kind.name()),
            });
        }
        let h = self.held.get_mut(&(kind, c)).expect("taken above");
        if !h.header.set(i, false) {
            return Err(FsError::Corrupt {
                ino: 0,
                why: format!("freeing {} {r}, which is already free", kind.name()),
            });
        }
        h.last_used = Instant::now();
        ch.clusters.insert((kind.code(), c));
        self.staged.insert((kind, c));
        if matches!(kind, ResourceKind::FileBlock | ResourceKind::SmallBlock) {
            ch.discard.push(Pending {
                key: (kind.code(), r),
                off: self.vol.resource_addr(kind, r),
                len: u64::from(reg.resource_size),
            });
        }
        Ok(())
    }

    /// Add the header images of the clusters `ch` touched.
    pub fn seal(&self, ch: &mut Change) {
        let touched: Vec<_> = ch.clusters.iter().copied().collect();
        for (code, c) in touched {
            let kind = ResourceKind::from_code(code).expect("codes come from kinds");
            let h = &self.held[&(kind, c)];
            ch.put(h.header.addr, h.header.encode(), &h.lock);
        }
    }

    /// A change failed before or during commit: the cached bitmaps may hold
    /// bits that never reached the disk. Re-read them (the locks are still
    /// ours), or let them go if that fails.
    pub fn invalidate(&mut self, ch: &Change) {
        self.unstage(ch);
        for &(code, c) in &ch.clusters {
            let kind = ResourceKind::from_code(code).expect("codes come from kinds");
            match self.read_header(kind, c) {
                Ok(h) => {
                    if let Some(held) = self.held.get_mut(&(kind, c)) {
                        held.header = h;
                    }
                }
                Err(_) => {
                    self.held.remove(&(kind, c));
                    let _ = self.host.unlock(self.lock_addr(kind, c));
                }
            }
        }
    }

    /// Release clusters unused for at least `idle`, and clusters another
    /// live host says (in its heartbeat slot) it is waiting for, however
    /// busy. Another host freeing blocks into a cluster must take it and
    /// waits at most D + T: a host that keeps allocating from its home
    /// cluster would otherwise starve it (a truncate or unlink there failing
    /// with EBUSY). A cluster let go for a waiter is left alone for
    /// `cool_down`, so the waiter's next poll finds it free; this host
    /// allocates elsewhere meanwhile, and frees into it only after that.
    pub fn release_idle(&mut self, idle: Duration) -> FsResult<()> {
        let now = Instant::now();
        let wanted = self.host.wanted_by_others();
        let old: Vec<_> = self
            .held
            .iter()
            .filter(|(&(kind, c), h)| {
                now.duration_since(h.last_used) >= idle || wanted.contains(&self.lock_addr(kind, c))
            })
            .map(|(k, _)| *k)
            .collect();
        for k in &old {
            if now.duration_since(self.held[k].last_used) < idle {
                self.cooling.insert(*k, now + self.cool_down);
            }
        }
        self.let_go(old)
    }

    /// Release every cluster held.
    pub fn release_all(&mut self) -> FsResult<()> {
        self.release_idle(Duration::ZERO)
    }

    /// Clusters currently held (for tests and metrics).
    pub fn held_count(&self) -> usize {
        self.held.len()
    }
}

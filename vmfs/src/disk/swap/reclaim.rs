//! Reclaiming the swap files of host incarnations that are over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::{read_region, Verdict};
use crate::format::{Holder, SlotState};
use crate::fs::{Fs, FsError};

use super::super::error::{DiskError, DiskResult};
use super::registry::{entries, RegistryEntry, RECLAIM_LOG, REGISTRY_DIR};
use super::{lookup_path, parent_of};

/// One swap file given back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reclaimed {
    /// The swap file's path.
    pub path: String,
    /// The dead incarnation that held it.
    pub holder: Holder,
    /// Bytes it held (0 if it was gone already).
    pub bytes: u64,
}

impl std::fmt::Display for Reclaimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "reclaimed swap file {} ({} bytes) of dead host slot {} (generation {})",
            self.path, self.bytes, self.holder.slot, self.holder.hb_gen
        )
    }
}

/// Is incarnation `h` over: its slot moved to another generation and is
/// not being recovered (so its journal has been replayed)?
fn incarnation_over(fs: &Fs, h: Holder) -> DiskResult<bool> {
    let slots = read_region(fs.host().volume()).map_err(|e| DiskError::Fs {
        path: format!("/{REGISTRY_DIR}"),
        op: "reading the heartbeat region",
        source: e.into(),
    })?;
    Ok(match slots.get(usize::from(h.slot)) {
        Some(Ok(s)) => s.hb_gen != h.hb_gen && s.state != SlotState::Recovering,
        // Damaged slot: never act on what we cannot read.
        Some(Err(_)) => false,
        None => true,
    })
}

/// Scan the registry once: delete the swap files of every incarnation
/// that is over. A holder still LIVE in its slot that this host has seen
/// silent for D is probed by opening its file for write, which runs
/// recovery of its slot and breaks its lock (as any lock request does).
/// Call it repeatedly (a [`Reclaimer`]): silence is measured across calls.
pub fn reclaim(fs: &Fs) -> DiskResult<Vec<Reclaimed>> {
    let me = fs.host().holder();
    let mut done = Vec::new();
    for e in entries(fs)? {
        if e.holder == me || !e.target.ends_with(".vswp") {
            continue;
        }
        if !incarnation_over(fs, e.holder)? {
            // Touch its lock only once its slot looks dead: probing a live
            // holder could race its own open of a file it is creating.
            if !looks_dead(fs, e.holder) {
                continue;
            }
            probe(fs, &e);
            if !incarnation_over(fs, e.holder)? {
                continue;
            }
        }
        if let Some(r) = reclaim_entry(fs, &e)? {
            tracing::info!("{r}");
            log_reclaim(fs, &r);
            done.push(r);
        }
    }
    Ok(done)
}

/// Has `h`'s slot (still at `h`'s generation) been silent for D?
fn looks_dead(fs: &Fs, h: Holder) -> bool {
    matches!(
        fs.host().judge_slot(u32::from(h.slot)),
        Ok((s, Verdict::Dead)) if s.hb_gen == h.hb_gen
    )
}

/// Try to take the file's lock: breaks it if its holder is dead.
fn probe(fs: &Fs, e: &RegistryEntry) {
    if let Ok(ino) = lookup_path(fs, &e.target) {
        if let Ok(fh) = fs.open(ino, true) {
            let _ = fs.close(fh);
        }
    }
}

/// Delete the target of a dead incarnation's link, then the link.
fn reclaim_entry(fs: &Fs, e: &RegistryEntry) -> DiskResult<Option<Reclaimed>> {
    let mut r = None;
    match parent_of(fs, &e.target) {
        Ok((dir, leaf)) => {
            let bytes = fs
                .lookup(dir, leaf.as_bytes())
                .map(|a| a.allocated)
                .unwrap_or(0);
            match fs.unlink(dir, leaf.as_bytes()) {
                Ok(()) => {
                    r = Some(Reclaimed {
                        path: e.target.clone(),
                        holder: e.holder,
                        bytes,
                    })
                }
                Err(FsError::NotFound(_)) => {}
                // Held by a live host: taken over by a VMM, which
                // registered it under its own name. Only our stale link goes.
                Err(FsError::Busy { .. }) => {}
                Err(err) => return Err(DiskError::fs(&e.target, "reclaiming the swap file", err)),
            }
        }
        Err(FsError::NotFound(_)) => {}
        Err(err) => return Err(DiskError::fs(&e.target, "looking up the swap file", err)),
    }
    super::registry_unregister(fs, &e.name)?;
    Ok(r)
}

/// Append a line to the reclaim log (best effort: another host appending
/// at the same moment makes us skip the line, the tracing log has it).
fn log_reclaim(fs: &Fs, r: &Reclaimed) {
    let go = || -> Result<(), FsError> {
        let dir = fs.lookup(fs.root(), REGISTRY_DIR.as_bytes())?.ino;
        let ino = match fs.create(dir, RECLAIM_LOG.as_bytes(), 0o644, 0, 0) {
            Ok(a) => a.ino,
            Err(FsError::Exists(_)) => fs.lookup(dir, RECLAIM_LOG.as_bytes())?.ino,
            Err(e) => return Err(e),
        };
        let fh = fs.open(ino, true)?;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let me = fs.host().holder();
        let line = format!("{secs} slot {} (generation {}) {r}\n", me.slot, me.hb_gen);
        let w = fs
            .getattr(ino)
            .and_then(|a| fs.write(fh, a.size, line.as_bytes()))
            .and_then(|_| fs.fsync(fh));
        let c = fs.close(fh);
        w.and(c)
    };
    for _ in 0..3 {
        match go() {
            Ok(()) => return,
            Err(FsError::Busy { .. }) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                tracing::warn!("recording the reclaim of {}: {e}", r.path);
                return;
            }
        }
    }
}

/// A background thread scanning the registry every `interval`; each
/// reclaim is logged and passed to `on_reclaim`. Stops when dropped.
pub struct Reclaimer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reclaimer {
    pub fn start(
        fs: Fs,
        interval: Duration,
        on_reclaim: impl Fn(&Reclaimed) + Send + 'static,
    ) -> Reclaimer {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vmfs-swap-reclaim".into())
            .spawn(move || {
                while !s2.load(Ordering::SeqCst) {
                    match reclaim(&fs) {
                        Ok(v) => v.iter().for_each(&on_reclaim),
                        Err(e) => tracing::warn!("swap reclaim scan: {e}"),
                    }
                    let mut slept = Duration::ZERO;
                    while slept < interval && !s2.load(Ordering::SeqCst) {
                        let step = Duration::from_millis(50).min(interval - slept);
                        std::thread::sleep(step);
                        slept += step;
                    }
                }
            })
            .expect("spawning the swap reclaim thread");
        Reclaimer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

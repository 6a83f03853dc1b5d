//! Discards of freed data blocks, off the operation's critical path.
//!
//! A discard (UNMAP, or a hole punched in an image file) can cost
//! milliseconds — on a filesystem mounted with `discard` it reaches the disk
//! synchronously — and it is only advice: a freed block is zeroed when it is
//! next allocated. So once the transaction that frees a block has committed,
//! the block is queued here and a worker thread discards it (adjacent blocks
//! merged into one call). Until that is done the block is *pending*: the
//! allocator does not hand it out again (a late discard would destroy new
//! data), and a cluster is not released to other hosts before its pending
//! discards are finished ([`Discarder::drain`]).

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::dev::BlockDev;

/// (resource kind code, resource number)
pub type Key = (u8, u64);

/// One freed block to discard.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    pub key: Key,
    /// Device offset and length.
    pub off: u64,
    pub len: u64,
}

#[derive(Debug, Default)]
struct Queue {
    todo: Vec<Pending>,
    /// Queued or being discarded.
    pending: HashSet<Key>,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    q: Mutex<Queue>,
    cv: Condvar,
}

fn lock(sh: &Shared) -> MutexGuard<'_, Queue> {
    sh.q.lock().unwrap_or_else(|e| e.into_inner())
}

/// The discard queue and its worker thread (stopped when dropped, after
/// finishing what is queued).
#[derive(Debug)]
pub struct Discarder {
    sh: Arc<Shared>,
}

impl Discarder {
    pub fn new(dev: Arc<dyn BlockDev>) -> Discarder {
        let sh = Arc::new(Shared::default());
        let w = sh.clone();
        std::thread::Builder::new()
            .name("vmfs-discard".into())
            .spawn(move || worker(&w, dev.as_ref()))
            .expect("spawning the discard thread");
        Discarder { sh }
    }

    /// Queue blocks whose freeing has committed.
    pub fn push(&self, blocks: Vec<Pending>) {
        if blocks.is_empty() {
            return;
        }
        let mut q = lock(&self.sh);
        for b in &blocks {
            q.pending.insert(b.key);
        }
        q.todo.extend(blocks);
        self.sh.cv.notify_all();
    }

    /// Is this block still waiting for its discard?
    pub fn is_pending(&self, key: Key) -> bool {
        lock(&self.sh).pending.contains(&key)
    }

    /// Wait until every queued discard is done.
    pub fn drain(&self) {
        let mut q = lock(&self.sh);
        while !q.pending.is_empty() {
            q = self.sh.cv.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Discarder {
    fn drop(&mut self) {
        lock(&self.sh).stop = true;
        self.sh.cv.notify_all();
    }
}

fn worker(sh: &Shared, dev: &dyn BlockDev) {
    loop {
        let batch = {
            let mut q = lock(sh);
            while q.todo.is_empty() && !q.stop {
                q = sh.cv.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if q.todo.is_empty() {
                return;
            }
            std::mem::take(&mut q.todo)
        };
        for (off, len) in coalesce(batch.iter().map(|b| (b.off, b.len)).collect()) {
            // A failed discard only leaves stale bytes in a free block; a
            // block is zeroed when it is next allocated.
            if let Err(e) = dev.unmap(off, len) {
                tracing::warn!("discard of freed blocks at {off} (+{len}) failed: {e}");
            }
        }
        let mut q = lock(sh);
        for b in &batch {
            q.pending.remove(&b.key);
        }
        sh.cv.notify_all();
    }
}

/// Merge adjacent device ranges (blocks freed together are often
/// neighbours), so a truncate discards with a few calls, not one per block.
fn coalesce(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (off, len) in ranges {
        match out.last_mut() {
            Some((o, l)) if *o + *l == off => *l += len,
            _ => out.push((off, len)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::MemDev;

    #[test]
    fn adjacent_discards_merge() {
        let got = coalesce(vec![(30, 10), (0, 10), (10, 10), (50, 5), (40, 10)]);
        assert_eq!(got, vec![(0, 20), (30, 25)]);
    }

    #[test]
    fn pending_until_discarded() {
        let dev = Arc::new(MemDev::new(1 << 20, 512));
        dev.write_at(&[7u8; 4096], 8192).unwrap();
        let d = Discarder::new(dev.clone());
        d.push(vec![Pending {
            key: (1, 2),
            off: 8192,
            len: 4096,
        }]);
        d.drain();
        assert!(!d.is_pending((1, 2)));
        let mut b = vec![1u8; 4096];
        dev.read_at(&mut b, 8192).unwrap();
        assert!(b.iter().all(|&x| x == 0), "discarded range reads zeros");
    }
}

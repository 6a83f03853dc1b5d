//! Per-LUN block-range lock: readers share, writers (and COMPARE AND WRITE)
//! exclude every overlapping command from every session.

use std::sync::{Condvar, Mutex};

#[derive(Debug, Default)]
pub struct RangeLock {
    held: Mutex<Vec<Held>>,
    changed: Condvar,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    id: u64,
    start: u64,
    end: u64,
    exclusive: bool,
}

/// A process-wide unique id for a held range.
fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Releases its range when dropped.
pub struct RangeGuard<'a> {
    lock: &'a RangeLock,
    id: u64,
}

impl RangeLock {
    pub fn new() -> RangeLock {
        RangeLock::default()
    }

    /// Blocks until `[start, start+len)` can be held in the requested mode.
    pub fn lock(&self, start: u64, len: u64, exclusive: bool) -> RangeGuard<'_> {
        let id = next_id();
        let end = start.saturating_add(len.max(1));
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let conflict = held
                .iter()
                .any(|h| h.start < end && start < h.end && (h.exclusive || exclusive));
            if !conflict {
                break;
            }
            held = self.changed.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        held.push(Held {
            id,
            start,
            end,
            exclusive,
        });
        RangeGuard { lock: self, id }
    }
}

impl RangeLock {
    /// Takes the range only if that needs no waiting.
    pub fn try_lock(&self, start: u64, len: u64, exclusive: bool) -> Option<RangeGuard<'_>> {
        let end = start.saturating_add(len.max(1));
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held
            .iter()
            .any(|h| h.start < end && start < h.end && (h.exclusive || exclusive))
        {
            return None;
        }
        let id = next_id();
        held.push(Held {
            id,
            start,
            end,
            exclusive,
        });
        Some(RangeGuard { lock: self, id })
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.lock.held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|h| h.id != self.id);
        drop(held);
        self.lock.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn exclusive_ranges_serialise() {
        let l = Arc::new(RangeLock::new());
        let counter = Arc::new(Mutex::new((0u32, 0u32)));
        let mut hs = Vec::new();
        for _ in 0..8 {
            let (l, c) = (l.clone(), counter.clone());
            hs.push(std::thread::spawn(move || {
                for _ in 0..200 {
                    let _g = l.lock(10, 5, true);
                    let mut v = c.lock().unwrap();
                    v.0 += 1;
                    assert_eq!(v.0, 1, "two holders inside one exclusive range");
                    v.0 -= 1;
                    v.1 += 1;
                }
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(counter.lock().unwrap().1, 1600);
        let _a = l.lock(0, 10, false);
        let _b = l.lock(5, 10, false);
        let _c = l.lock(100, 1, true);
        assert!(l.try_lock(8, 4, true).is_none(), "overlaps shared ranges");
        assert!(l.try_lock(8, 4, false).is_some(), "shared with shared");
        assert!(l.try_lock(100, 1, false).is_none(), "overlaps exclusive");
        assert!(l.try_lock(200, 1, true).is_some(), "free range");
    }
}

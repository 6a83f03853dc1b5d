//! Read-ahead over the inode table. A check reads every allocated inode
//! twice (its lock record in phase 2b, its body in the walk), each a small
//! read of its own; on 100,000 inodes that is 200,000 device round trips.
//! Reads inside the inode table are served from 256 KiB windows (64
//! inodes) read whole and kept (the last 64 windows); everything else —
//! above all the heartbeat region, whose two samples must both come from
//! the device — goes straight through. Every write, zeroing, unmap and
//! compare-and-write first drops the windows it overlaps, so a repair
//! never reads back a stale image.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use vmfs::dev::{BlockDev, CasOutcome, DevError, FenceToken, FencedOp, SharedDev};

/// Bytes read per window.
const WINDOW: u64 = 256 << 10;
/// Windows kept.
const KEEP: usize = 64;

#[derive(Debug, Default)]
struct Windows {
    /// The byte range served from windows (none until the header is known).
    range: Option<(u64, u64)>,
    data: HashMap<u64, Arc<Vec<u8>>>,
    order: VecDeque<u64>,
}

/// A device with read-ahead over one range.
#[derive(Debug)]
pub struct ReadAhead {
    inner: SharedDev,
    w: Mutex<Windows>,
}

impl ReadAhead {
    pub fn new(inner: SharedDev) -> ReadAhead {
        ReadAhead {
            inner,
            w: Mutex::new(Windows::default()),
        }
    }

    /// Serve reads inside `start..end` from windows (clears what is kept).
    pub fn cache(&self, start: u64, end: u64) {
        let mut w = self.lock();
        *w = Windows {
            range: Some((start, end.min(self.inner.size()))),
            ..Windows::default()
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.w.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drop the windows overlapping `off..off + len`.
    fn invalidate(&self, off: u64, len: u64) {
        let mut w = self.lock();
        let Some((start, _)) = w.range else {
            return;
        };
        let end = off.saturating_add(len);
        let hit: Vec<u64> = w
            .data
            .keys()
            .copied()
            .filter(|&s| s < end && off < s + WINDOW && s >= start)
            .collect();
        for s in hit {
            w.data.remove(&s);
            w.order.retain(|&x| x != s);
        }
    }
}

impl vmfs::dev::DevWrapper for ReadAhead {
    fn inner(&self) -> &dyn BlockDev {
        &*self.inner
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DevError> {
        let len = buf.len() as u64;
        let mut w = self.lock();
        let Some((start, end)) = w.range else {
            drop(w);
            return self.inner.read_at(buf, offset);
        };
        let ws = start + offset.saturating_sub(start) / WINDOW * WINDOW;
        let we = (ws + WINDOW).min(end);
        if offset < start || offset.saturating_add(len) > we {
            drop(w);
            return self.inner.read_at(buf, offset);
        }
        let data = match w.data.get(&ws) {
            Some(d) => d.clone(),
            None => {
                let mut d = vec![0u8; (we - ws) as usize];
                self.inner.read_at(&mut d, ws)?;
                let d = Arc::new(d);
                w.data.insert(ws, d.clone());
                w.order.push_back(ws);
                if w.order.len() > KEEP {
                    if let Some(old) = w.order.pop_front() {
                        w.data.remove(&old);
                    }
                }
                d
            }
        };
        let o = (offset - ws) as usize;
        buf.copy_from_slice(&data[o..o + buf.len()]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DevError> {
        self.invalidate(offset, buf.len() as u64);
        self.inner.write_at(buf, offset)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DevError> {
        self.invalidate(offset, len);
        self.inner.write_zeroes(offset, len)
    }
    fn unmap(&self, offset: u64, len: u64) -> Result<(), DevError> {
        self.invalidate(offset, len);
        self.inner.unmap(offset, len)
    }
    fn compare_and_write(
        &self,
        offset: u64,
        expected: &[u8],
        new: &[u8],
    ) -> Result<CasOutcome, DevError> {
        self.invalidate(offset, new.len() as u64);
        self.inner.compare_and_write(offset, expected, new)
    }
    fn write_fenced(
        &self,
        op: FencedOp<'_>,
        offset: u64,
        fence: &FenceToken,
    ) -> Result<(), DevError> {
        self.invalidate(offset, op.len());
        self.inner.write_fenced(op, offset, fence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmfs::dev::MemDev;

    #[test]
    fn serves_windows_and_sees_writes() {
        let mem: SharedDev = Arc::new(MemDev::new(4 << 20, 512));
        let pattern: Vec<u8> = (0..(4u32 << 20)).map(|i| (i / 512) as u8).collect();
        mem.write_at(&pattern, 0).unwrap();
        let ra = ReadAhead::new(mem.clone());
        ra.cache(1 << 20, 3 << 20);
        for off in [
            0u64,
            (1 << 20) + 4096,
            (3 << 20) - 512,
            (1 << 20) + WINDOW - 512,
        ] {
            let mut b = vec![0u8; 512];
            ra.read_at(&mut b, off).unwrap();
            assert_eq!(b, pattern[off as usize..off as usize + 512]);
        }
        // A read crossing a window boundary goes to the device.
        let mut b = vec![0u8; 1024];
        ra.read_at(&mut b, (1 << 20) + WINDOW - 512).unwrap();
        assert_eq!(b, pattern[(1 << 20) + WINDOW as usize - 512..][..1024]);
        // A write through the wrapper is seen by the next read.
        ra.write_at(&[7u8; 512], (1 << 20) + 4096).unwrap();
        let mut b = vec![0u8; 512];
        ra.read_at(&mut b, (1 << 20) + 4096).unwrap();
        assert_eq!(b, vec![7u8; 512]);
        // So is a compare-and-write.
        let cas = ra
            .compare_and_write((1 << 20) + 4096, &[7u8; 512], &[9u8; 512])
            .unwrap();
        assert!(matches!(cas, CasOutcome::Done));
        ra.read_at(&mut b, (1 << 20) + 4096).unwrap();
        assert_eq!(b, vec![9u8; 512]);
    }
}

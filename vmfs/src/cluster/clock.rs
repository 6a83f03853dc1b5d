//! Clocks. Owners time their own deadlines on CLOCK_BOOTTIME (it keeps
//! counting through suspend, unlike CLOCK_MONOTONIC); observers judge
//! liveness on their own clock. Wall clocks are never compared across hosts.

use std::sync::Mutex;
use std::time::Duration;

/// A monotonic clock.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since an arbitrary fixed origin.
    fn now(&self) -> Duration;
}

/// CLOCK_BOOTTIME.
#[derive(Debug, Default, Clone, Copy)]
pub struct BootClock;

impl Clock for BootClock {
    fn now(&self) -> Duration {
        // SAFETY: timespec is plain data; all-zero is valid.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: clock_gettime writes one timespec through a valid pointer.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        assert_eq!(r, 0, "CLOCK_BOOTTIME is always available on Linux");
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

/// A clock moved by hand: tests and the simulator.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: Mutex<Duration>,
}

impl ManualClock {
    pub fn new(start: Duration) -> ManualClock {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    pub fn advance(&self, d: Duration) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

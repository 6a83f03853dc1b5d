//! The protocol's four timeouts and the rule that ties them.

use std::time::Duration;

use crate::format::TimeoutMinimums;

use super::ClusterError;

/// A host's timeouts. Defaults: T = 8 s, H = 3 s, F = 16 s, D = 25 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// H: interval between beats.
    pub heartbeat: Duration,
    /// T: longest an I/O may take before it is treated as lost.
    pub io_timeout: Duration,
    /// F: a host whose last landed beat was issued longer ago than this
    /// stops all I/O.
    pub self_fence: Duration,
    /// D: an observer that has seen a slot's counter unchanged for this long
    /// (on its own clock) may declare the host dead.
    pub dead_after: Duration,
}

impl Timeouts {
    /// The volume's minimums.
    pub fn from_minimums(m: &TimeoutMinimums) -> Timeouts {
        Timeouts {
            heartbeat: Duration::from_millis(u64::from(m.heartbeat_ms)),
            io_timeout: Duration::from_millis(u64::from(m.io_timeout_ms)),
            self_fence: Duration::from_millis(u64::from(m.self_fence_ms)),
            dead_after: Duration::from_millis(u64::from(m.dead_after_ms)),
        }
    }

    /// The minimums a volume formatted with these timeouts records.
    pub fn to_minimums(self) -> TimeoutMinimums {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        TimeoutMinimums {
            io_timeout_ms: ms(self.io_timeout),
            heartbeat_ms: ms(self.heartbeat),
            self_fence_ms: ms(self.self_fence),
            dead_after_ms: ms(self.dead_after),
        }
    }

    /// The defaults scaled by `f` (tests: `scaled(1.0 / 30.0)` gives H = 100 ms).
    pub fn scaled(f: f64) -> Timeouts {
        let d = Timeouts::from_minimums(&TimeoutMinimums::default());
        let s = |x: Duration| Duration::from_secs_f64(x.as_secs_f64() * f);
        Timeouts {
            heartbeat: s(d.heartbeat),
            io_timeout: s(d.io_timeout),
            self_fence: s(d.self_fence),
            dead_after: s(d.dead_after),
        }
    }

    /// The safety rule: D must exceed F + T, so that by the time an observer
    /// breaks a silent host's locks, that host has stopped issuing I/O (F)
    /// and its last I/O has completed or been abandoned (T); and F > H so a
    /// healthy host is never fenced by one late beat.
    pub fn check(&self) -> Result<(), ClusterError> {
        if self.heartbeat.is_zero() || self.self_fence < self.heartbeat * 2 {
            return Err(ClusterError::BadTimeouts(format!(
                "self-fence F ({:?}) must be at least twice the heartbeat H ({:?})",
                self.self_fence, self.heartbeat
            )));
        }
        if self.dead_after <= self.self_fence + self.io_timeout {
            return Err(ClusterError::BadTimeouts(format!(
                "dead-after D ({:?}) must exceed self-fence F ({:?}) + I/O timeout T ({:?})",
                self.dead_after, self.self_fence, self.io_timeout
            )));
        }
        Ok(())
    }

    /// Use `want` if it is at or above the volume's minimums in every
    /// field (hosts may only go upward), else an error naming the field.
    pub fn for_volume(
        min: &TimeoutMinimums,
        want: Option<Timeouts>,
    ) -> Result<Timeouts, ClusterError> {
        let floor = Timeouts::from_minimums(min);
        let t = want.unwrap_or(floor);
        for (name, v, m) in [
            ("heartbeat", t.heartbeat, floor.heartbeat),
            ("I/O timeout", t.io_timeout, floor.io_timeout),
            ("self-fence", t.self_fence, floor.self_fence),
            ("dead-after", t.dead_after, floor.dead_after),
        ] {
            if v < m {
                return Err(ClusterError::BadTimeouts(format!(
                    "{name} {v:?} is below the volume's minimum {m:?}"
                )));
            }
        }
        t.check()?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_scaled_defaults_are_safe() {
        let d = Timeouts::from_minimums(&TimeoutMinimums::default());
        d.check().unwrap();
        let s = Timeouts::scaled(1.0 / 30.0);
        assert_eq!(s.heartbeat, Duration::from_millis(100));
        s.check().unwrap();
    }

    #[test]
    fn hosts_may_only_go_upward() {
        let m = TimeoutMinimums::default();
        let mut t = Timeouts::from_minimums(&m);
        t.heartbeat = Duration::from_secs(1);
        assert!(Timeouts::for_volume(&m, Some(t)).is_err());
        let mut t = Timeouts::from_minimums(&m);
        t.dead_after = Duration::from_secs(60);
        assert_eq!(Timeouts::for_volume(&m, Some(t)).unwrap(), t);
    }

    #[test]
    fn unsafe_combinations_are_refused() {
        let mut t = Timeouts::scaled(1.0);
        t.dead_after = t.self_fence + t.io_timeout;
        assert!(t.check().is_err());
    }
}

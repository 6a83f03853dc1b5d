//! Judging other hosts' liveness: a slot is dead when its (hb_gen, counter)
//! has not changed for D on the *observer's* clock. Wall clocks are never
//! compared across hosts.

use std::collections::HashMap;
use std::time::Duration;

use crate::format::{HeartbeatSlot, SlotState};

#[derive(Debug, Clone, Copy)]
struct Seen {
    hb_gen: u64,
    counter: u64,
    since: Duration,
}

/// What an observer concludes about a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Verdict {
    Free,
    CleanExit,
    /// LIVE and its counter moved within D (or not watched for D yet).
    Live,
    /// LIVE but silent for at least D on our clock.
    Dead,
    Recovering,
}

/// Remembers when each slot's beat last changed.
#[derive(Debug, Default)]
pub struct Observer {
    seen: HashMap<u32, Seen>,
}

impl Observer {
    /// Record a read of slot `slot` issued at `issued` and completed at
    /// `completed` (our clock), and judge it. Silence is measured
    /// conservatively: from the *completion* of the first read that showed
    /// this image to the *issue* of the read that still shows it. `min_dead`
    /// is the volume's minimum D; the slot's advertised D is honoured if longer.
    pub fn observe(
        &mut self,
        slot: u32,
        s: &HeartbeatSlot,
        issued: Duration,
        completed: Duration,
        min_dead: Duration,
    ) -> Verdict {
        let now = issued;
        let e = self.seen.entry(slot).or_insert(Seen {
            hb_gen: s.hb_gen,
            counter: s.counter,
            since: completed,
        });
        if e.hb_gen != s.hb_gen || e.counter != s.counter {
            *e = Seen {
                hb_gen: s.hb_gen,
                counter: s.counter,
                since: completed,
            };
        }
        match s.state {
            SlotState::Free => Verdict::Free,
            SlotState::CleanExit => Verdict::CleanExit,
            SlotState::Recovering => Verdict::Recovering,
            SlotState::Live => {
                let d = min_dead.max(Duration::from_millis(u64::from(s.dead_after_ms)));
                if now.saturating_sub(e.since) >= d {
                    Verdict::Dead
                } else {
                    Verdict::Live
                }
            }
        }
    }

    /// How long slot `slot` has looked unchanged (zero if never seen).
    pub fn silent_for(&self, slot: u32, now: Duration) -> Duration {
        self.seen
            .get(&slot)
            .map(|e| now.saturating_sub(e.since))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_only_after_d_of_silence_on_our_clock() {
        let mut o = Observer::default();
        let mut s = HeartbeatSlot::free(512, 0, 0);
        s.state = SlotState::Live;
        s.dead_after_ms = 1000;
        let d = Duration::from_millis(500);
        let t = Duration::from_secs(100);
        assert_eq!(o.observe(0, &s, t, t, d), Verdict::Live);
        assert_eq!(
            o.observe(
                0,
                &s,
                t + Duration::from_millis(999),
                t + Duration::from_millis(999),
                d
            ),
            Verdict::Live
        );
        s.counter += 1; // a beat resets the watch
        assert_eq!(
            o.observe(
                0,
                &s,
                t + Duration::from_millis(1500),
                t + Duration::from_millis(1500),
                d
            ),
            Verdict::Live
        );
        assert_eq!(
            o.observe(
                0,
                &s,
                t + Duration::from_millis(2499),
                t + Duration::from_millis(2499),
                d
            ),
            Verdict::Live
        );
        assert_eq!(
            o.observe(
                0,
                &s,
                t + Duration::from_millis(2500),
                t + Duration::from_millis(2500),
                d
            ),
            Verdict::Dead
        );
        s.state = SlotState::CleanExit;
        assert_eq!(
            o.observe(
                0,
                &s,
                t + Duration::from_secs(9),
                t + Duration::from_secs(9),
                d
            ),
            Verdict::CleanExit
        );
    }
}

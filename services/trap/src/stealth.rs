//! Timing stealth at idle.
//!
//! Under load, canary and unknown-key requests ride the same group commits, so they wait
//! for the same transactions and their latencies cannot differ. At idle, though, each
//! request gets a transaction of its own, and a canary hit's (the hit row plus its two
//! incidents) takes a few statements longer than an unknown key's counter update: a
//! patient prober sending one request at a time could measure that difference and tell
//! canaries from unknown keys.
//!
//! So every authenticated answer whose commit held it alone is held until a floor: the
//! 98th percentile of the processing time of recent canary hits that committed alone, plus
//! 1 ms, at least 3 ms (10 ms until enough have been seen, at most 50 ms). Both kinds are
//! then answered at the same moment after arrival; requests slower than the floor go out
//! at once. Shared commits (load) are never held, so this costs no throughput.
//!
//! Two details matter as much as the floor (both measured by
//! `services/keytrap/tests/timing.rs`, which failed without each):
//! - a request is held to the floor as it was *before* its own sample is learned; a
//!   canary whose own slow commit raised the floor it is held to would come out later
//!   than unknown keys, whose times never teach the floor;
//! - the hold ends by a precise sleep (the blocking pool's `nanosleep`), not tokio's
//!   millisecond timer wheel, whose wake-up moment differed by 0.1-0.15 ms between the
//!   two kinds.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Floor used until [`MIN_SAMPLES`] idle canary hits have been seen.
const INITIAL_FLOOR: Duration = Duration::from_millis(10);
/// Largest floor, whatever the samples say (a stalled disk must not stall every answer).
const MAX_FLOOR: Duration = Duration::from_millis(50);
/// Smallest floor, and the margin above the learned percentile: both kinds must be held
/// nearly always, or the difference shows again in the requests that are not.
const MIN_FLOOR: Duration = Duration::from_millis(3);
const MARGIN: Duration = Duration::from_millis(1);
const MIN_SAMPLES: usize = 32;
const WINDOW: usize = 128;

/// Learns the idle processing time of canary hits and says how long to hold answers.
pub struct Equalizer {
    samples: Mutex<VecDeque<u64>>,
    floor_us: AtomicU64,
}

impl Default for Equalizer {
    fn default() -> Self {
        Equalizer {
            samples: Mutex::new(VecDeque::with_capacity(WINDOW)),
            floor_us: AtomicU64::new(micros(INITIAL_FLOOR)),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Equalizer {
    /// The current floor.
    pub fn floor(&self) -> Duration {
        Duration::from_micros(self.floor_us.load(Ordering::Relaxed))
    }

    /// A canary hit that committed alone took `took` from arrival to commit.
    pub fn observe_hit(&self, took: Duration) {
        let Ok(mut s) = self.samples.lock() else {
            return;
        };
        if s.len() == WINDOW {
            s.pop_front();
        }
        s.push_back(micros(took));
        if s.len() < MIN_SAMPLES {
            return;
        }
        let mut sorted: Vec<u64> = s.iter().copied().collect();
        sorted.sort_unstable();
        let p98 = sorted[(sorted.len() * 98 / 100).min(sorted.len() - 1)];
        let floor = (p98 + micros(MARGIN)).clamp(micros(MIN_FLOOR), micros(MAX_FLOOR));
        self.floor_us.store(floor, Ordering::Relaxed);
    }

    /// How long to hold an answer that took `took` so far and whose commit held `batch`
    /// events: `None` for shared commits and for requests already past the floor.
    pub fn hold(&self, took: Duration, batch: usize) -> Option<Duration> {
        if batch != 1 {
            return None;
        }
        self.floor().checked_sub(took).filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_learns_from_idle_hits_and_is_bounded() {
        let e = Equalizer::default();
        assert_eq!(e.floor(), INITIAL_FLOOR);
        assert_eq!(
            e.hold(Duration::from_millis(3), 1),
            Some(Duration::from_millis(7))
        );
        assert_eq!(
            e.hold(Duration::from_millis(3), 2),
            None,
            "shared commits are not held"
        );
        assert_eq!(
            e.hold(Duration::from_millis(12), 1),
            None,
            "late answers go at once"
        );
        for i in 0..100u64 {
            e.observe_hit(Duration::from_micros(1_000 + i * 10));
        }
        // p98 of 1000..1990 µs, plus the margin, but never under the minimum.
        assert_eq!(e.floor(), MIN_FLOOR);
        for i in 0..WINDOW as u64 {
            e.observe_hit(Duration::from_micros(4_000 + i * 10));
        }
        // p98 of 4000..5270 µs is 5250 µs; plus 1 ms.
        assert_eq!(e.floor(), Duration::from_micros(6_250));
        for _ in 0..WINDOW {
            e.observe_hit(Duration::from_secs(5));
        }
        assert_eq!(e.floor(), MAX_FLOOR);
    }
}

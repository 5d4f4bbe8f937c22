//! The SDK's estimate of its clock's offset to the cluster's clock, so it can apply a change at
//! the server's `effective_at` even when the local clock is off.
//!
//! Samples come from watch messages (the server's clock when it sent them, against the local
//! clock when they arrived) and from keepalive round trips. A one-way sample `server - arrived`
//! is the offset minus the message's delay, so it never overestimates: the largest recent one is
//! the closest, and a sample held up by a busy network or scheduler is simply smaller. A
//! round-trip sample (server against the round trip's midpoint) is good to half the round trip
//! but skewed by the server's processing; it is used (median of recent ones) only before any
//! watch message has arrived. Times are in microseconds.
//!
//! One-way samples are kept as the best (largest) per 2-second period over the last 30 s, so
//! the estimate follows a drifting clock and does not depend on how many samples arrive: every
//! SDK in a process shares one estimator ([`ClockOffset::process`]), since they share the local
//! clock, and thousands of them feeding it in bursts only improve it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::Mutex;

/// Round-trip samples kept.
const WINDOW: usize = 15;
/// One-way samples: the best of each period of this length (µs) ...
const PERIOD_US: i64 = 2_000_000;
/// ... over this many periods.
const PERIODS: usize = 15;

/// The offset estimator: `server_clock ≈ local_clock + offset`.
#[derive(Debug, Default)]
pub struct ClockOffset {
    samples: Mutex<Samples>,
    /// The estimate, computed when a sample arrives so reading it is one load.
    estimate_us: AtomicI64,
}

#[derive(Debug, Default)]
struct Samples {
    /// (period, best sample in it), oldest first.
    one_way: VecDeque<(i64, i64)>,
    round_trip: VecDeque<i64>,
}

fn push_round_trip(window: &mut VecDeque<i64>, sample: i64) {
    if window.len() == WINDOW {
        window.pop_front();
    }
    window.push_back(sample);
}

impl ClockOffset {
    /// The estimator shared by every SDK in this process.
    pub fn process() -> std::sync::Arc<ClockOffset> {
        static PROCESS: std::sync::OnceLock<std::sync::Arc<ClockOffset>> = std::sync::OnceLock::new();
        PROCESS.get_or_init(Default::default).clone()
    }

    /// Adds a one-way sample: the server's clock when it sent a message, and the local clock
    /// when the message arrived (both unix µs).
    pub fn one_way(&self, server_us: i64, received_local_us: i64) {
        let sample = server_us - received_local_us;
        let period = received_local_us.div_euclid(PERIOD_US);
        let mut s = self.samples.lock();
        match s.one_way.back_mut() {
            Some((p, best)) if *p == period => {
                if sample <= *best {
                    return;
                }
                *best = sample;
            }
            Some((p, _)) if *p > period => return,
            _ => {
                if s.one_way.len() == PERIODS {
                    s.one_way.pop_front();
                }
                s.one_way.push_back((period, sample));
            }
        }
        // Periods that fell out of the 30 s window no longer count.
        while s
            .one_way
            .front()
            .is_some_and(|(p, _)| *p + (PERIODS as i64) <= period)
        {
            s.one_way.pop_front();
        }
        self.update(&s);
    }

    /// Adds a round-trip sample: the local clock when the request left and when the answer
    /// arrived, and the server's clock in the answer (all unix µs).
    pub fn round_trip(&self, sent_local_us: i64, server_us: i64, received_local_us: i64) {
        let midpoint = sent_local_us + (received_local_us - sent_local_us) / 2;
        let mut s = self.samples.lock();
        push_round_trip(&mut s.round_trip, server_us - midpoint);
        self.update(&s);
    }

    fn update(&self, s: &Samples) {
        let estimate = match s.one_way.iter().map(|(_, best)| *best).max() {
            Some(best) => best,
            None => {
                let mut sorted: Vec<i64> = s.round_trip.iter().copied().collect();
                sorted.sort_unstable();
                sorted.get(sorted.len() / 2).copied().unwrap_or(0)
            }
        };
        self.estimate_us.store(estimate, Ordering::Release);
    }

    /// The current estimate in milliseconds (0 before any sample).
    pub fn offset_ms(&self) -> i64 {
        self.offset_us() / 1000
    }

    /// The current estimate in microseconds (0 before any sample).
    pub fn offset_us(&self) -> i64 {
        self.estimate_us.load(Ordering::Acquire)
    }
}

/// A server time in µs: the µs field, or the middle of the millisecond from a node that sends
/// only milliseconds.
pub(crate) fn server_us(us: i64, ms: i64) -> i64 {
    if us != 0 {
        us
    } else {
        ms * 1000 + 500
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_delayed_message_gives_the_estimate() {
        let c = ClockOffset::default();
        assert_eq!(c.offset_us(), 0);
        // The server runs 250 ms ahead; messages take 100-900 µs; one was held up 400 ms.
        c.one_way(10_250_000, 10_000_900);
        c.one_way(12_250_000, 12_000_100);
        c.one_way(12_250_500, 12_001_500);
        c.one_way(14_250_000, 14_400_000);
        assert_eq!(c.offset_us(), 249_900);
        assert_eq!(c.offset_ms(), 249);
    }

    #[test]
    fn round_trips_count_until_a_watch_message_arrives() {
        let c = ClockOffset::default();
        c.round_trip(16_000_000, 16_250_600, 16_001_000);
        c.round_trip(18_000_000, 18_250_500, 18_001_000);
        c.round_trip(20_000_000, 20_290_500, 20_001_000);
        assert_eq!(c.offset_us(), 250_100);
        c.one_way(22_250_000, 22_000_200);
        assert_eq!(c.offset_us(), 249_800);
    }

    #[test]
    fn samples_older_than_the_window_no_longer_count() {
        let c = ClockOffset::default();
        c.one_way(1_000_000, 0);
        assert_eq!(c.offset_us(), 1_000_000);
        // 30 s later the clocks agree (the local clock was stepped): the old best is forgotten.
        let later = PERIOD_US * PERIODS as i64;
        c.one_way(later, later + 5_000);
        assert_eq!(c.offset_us(), -5_000);
    }

    #[test]
    fn many_samples_in_one_period_keep_the_best() {
        let c = ClockOffset::default();
        for delay in (100..10_000).rev() {
            c.one_way(1_000_000, 1_000_000 + delay);
        }
        assert_eq!(c.offset_us(), -100);
    }
}

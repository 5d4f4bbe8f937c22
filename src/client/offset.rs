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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::Mutex;

/// Samples kept of each kind (one-way samples come every 2 s per watch).
const WINDOW: usize = 15;

/// The offset estimator: `server_clock ≈ local_clock + offset`.
#[derive(Debug, Default)]
pub struct ClockOffset {
    samples: Mutex<Samples>,
    /// The estimate, computed when a sample arrives so reading it is one load.
    estimate_us: AtomicI64,
}

#[derive(Debug, Default)]
struct Samples {
    one_way: VecDeque<i64>,
    round_trip: VecDeque<i64>,
}

fn push(window: &mut VecDeque<i64>, sample: i64) {
    if window.len() == WINDOW {
        window.pop_front();
    }
    window.push_back(sample);
}

impl ClockOffset {
    /// Adds a one-way sample: the server's clock when it sent a message, and the local clock
    /// when the message arrived (both unix µs).
    pub fn one_way(&self, server_us: i64, received_local_us: i64) {
        let mut s = self.samples.lock();
        push(&mut s.one_way, server_us - received_local_us);
        self.update(&s);
    }

    /// Adds a round-trip sample: the local clock when the request left and when the answer
    /// arrived, and the server's clock in the answer (all unix µs).
    pub fn round_trip(&self, sent_local_us: i64, server_us: i64, received_local_us: i64) {
        let midpoint = sent_local_us + (received_local_us - sent_local_us) / 2;
        let mut s = self.samples.lock();
        push(&mut s.round_trip, server_us - midpoint);
        self.update(&s);
    }

    fn update(&self, s: &Samples) {
        let estimate = match s.one_way.iter().max() {
            Some(best) => *best,
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
    fn old_samples_leave_the_window() {
        let c = ClockOffset::default();
        for _ in 0..WINDOW {
            c.one_way(1_000_000, 0);
        }
        for _ in 0..WINDOW {
            c.one_way(0, 5_000);
        }
        assert_eq!(c.offset_us(), -5_000);
    }
}

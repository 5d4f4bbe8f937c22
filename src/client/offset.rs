//! The SDK's estimate of its clock's offset to the cluster's clock, so it can apply a change at
//! the server's `effective_at` even when the local clock is off.
//!
//! Samples come from watch progress messages (the server's clock when it sent them) and from
//! keepalive round trips (the server's clock against the midpoint of the round trip, NTP
//! style). A one-way sample `server - received` underestimates the offset by the one-way
//! delay; a round-trip sample is good to half the round trip. The estimate is the median of the
//! recent samples, which ignores the odd sample delayed by a busy network or scheduler.

use std::collections::VecDeque;

use parking_lot::Mutex;

/// Samples kept.
const WINDOW: usize = 15;

/// The offset estimator: `server_clock ≈ local_clock + offset`.
#[derive(Debug, Default)]
pub struct ClockOffset {
    samples: Mutex<VecDeque<i64>>,
}

impl ClockOffset {
    /// Adds a one-way sample: the server's clock when it sent a message, and the local clock
    /// when the message arrived.
    pub fn one_way(&self, server_ms: i64, received_local_ms: i64) {
        self.add(server_ms - received_local_ms);
    }

    /// Adds a round-trip sample: the local clock when the request left and when the answer
    /// arrived, and the server's clock in the answer.
    pub fn round_trip(&self, sent_local_ms: i64, server_ms: i64, received_local_ms: i64) {
        let midpoint = sent_local_ms + (received_local_ms - sent_local_ms) / 2;
        self.add(server_ms - midpoint);
    }

    fn add(&self, sample: i64) {
        let mut s = self.samples.lock();
        if s.len() == WINDOW {
            s.pop_front();
        }
        s.push_back(sample);
    }

    /// The current estimate in milliseconds (0 before any sample).
    pub fn offset_ms(&self) -> i64 {
        let s = self.samples.lock();
        if s.is_empty() {
            return 0;
        }
        let mut sorted: Vec<i64> = s.iter().copied().collect();
        sorted.sort_unstable();
        sorted[sorted.len() / 2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_ignores_a_delayed_sample() {
        let c = ClockOffset::default();
        assert_eq!(c.offset_ms(), 0);
        // The server runs 250 ms ahead; messages take 1-2 ms; one was held up 400 ms.
        c.one_way(10_250, 10_001);
        c.one_way(12_250, 12_002);
        c.one_way(14_250, 14_401);
        c.round_trip(16_000, 16_251, 16_002);
        assert_eq!(c.offset_ms(), 249);
    }

    #[test]
    fn old_samples_leave_the_window() {
        let c = ClockOffset::default();
        for _ in 0..WINDOW {
            c.one_way(1_000, 0);
        }
        for _ in 0..WINDOW {
            c.one_way(0, 5);
        }
        assert_eq!(c.offset_ms(), -5);
    }
}

//! The SDK's estimate of its clock's offset to the cluster's clock, so it can apply a change at
//! the server's `effective_at` even when the local clock is off.
//!
//! Samples come from watch progress messages (the server's clock when it sent them) and from
//! keepalive round trips (the server's clock against the midpoint of the round trip, NTP
//! style). A one-way sample `server - received` underestimates the offset by the one-way
//! delay; a round-trip sample is good to half the round trip. The estimate is the median of the
//! recent samples, which ignores the odd sample delayed by a busy network or scheduler.
//!
//! The server's clock comes in whole milliseconds, so a sample takes the middle of that
//! millisecond (+500 µs); local times are in microseconds. The estimate is kept in microseconds,
//! which keeps instances on one clock within a fraction of a millisecond of each other.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::Mutex;

/// Samples kept.
const WINDOW: usize = 15;

/// The offset estimator: `server_clock ≈ local_clock + offset`.
#[derive(Debug, Default)]
pub struct ClockOffset {
    samples: Mutex<VecDeque<i64>>,
    /// The median of `samples`, computed when a sample arrives so reading it is one load.
    estimate_us: AtomicI64,
}

impl ClockOffset {
    /// Adds a one-way sample: the server's clock (ms) when it sent a message, and the local
    /// clock (µs) when the message arrived.
    pub fn one_way(&self, server_ms: i64, received_local_us: i64) {
        self.add(server_ms * 1000 + 500 - received_local_us);
    }

    /// Adds a round-trip sample: the local clock (µs) when the request left and when the answer
    /// arrived, and the server's clock (ms) in the answer.
    pub fn round_trip(&self, sent_local_us: i64, server_ms: i64, received_local_us: i64) {
        let midpoint = sent_local_us + (received_local_us - sent_local_us) / 2;
        self.add(server_ms * 1000 + 500 - midpoint);
    }

    fn add(&self, sample: i64) {
        let mut s = self.samples.lock();
        if s.len() == WINDOW {
            s.pop_front();
        }
        s.push_back(sample);
        let mut sorted: Vec<i64> = s.iter().copied().collect();
        sorted.sort_unstable();
        self.estimate_us
            .store(sorted[sorted.len() / 2], Ordering::Release);
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
    fn the_median_ignores_a_delayed_sample() {
        let c = ClockOffset::default();
        assert_eq!(c.offset_ms(), 0);
        // The server runs 250 ms ahead; messages take 1-2 ms; one was held up 400 ms.
        c.one_way(10_250, 10_001_000);
        c.one_way(12_250, 12_002_000);
        c.one_way(14_250, 14_401_000);
        c.round_trip(16_000_000, 16_251, 16_002_000);
        assert_eq!(c.offset_us(), 249_500);
        assert_eq!(c.offset_ms(), 249);
    }

    #[test]
    fn old_samples_leave_the_window() {
        let c = ClockOffset::default();
        for _ in 0..WINDOW {
            c.one_way(1_000, 0);
        }
        for _ in 0..WINDOW {
            c.one_way(0, 5_500);
        }
        assert_eq!(c.offset_us(), -5_000);
    }
}

//! Per-caller limits: a token bucket for the request rate and a count of open watches, so one
//! misbehaving client (or one leaked token) cannot starve the others. Callers are keyed by
//! identity (by remote address while authentication is off). The table is bounded: idle
//! entries are dropped when it fills.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::Error;

/// Most callers tracked at once; past it, idle ones are forgotten.
const MAX_CALLERS: usize = 100_000;

/// The limits a node enforces per caller (0: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitConfig {
    /// Calls per second (a burst of one second's worth is allowed).
    pub requests_per_second: u32,
    /// Watch streams open at once on one node.
    pub open_watches: usize,
}

impl Default for LimitConfig {
    fn default() -> Self {
        // Generous: one identity is often a whole fleet (a service token shared by every
        // instance), and a 10,000-instance fleet's watches all count against it.
        LimitConfig {
            requests_per_second: 20_000,
            open_watches: 50_000,
        }
    }
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    watches: Arc<AtomicUsize>,
}

/// The limiter of one node.
pub struct Limiter {
    config: LimitConfig,
    callers: Mutex<HashMap<String, Bucket>>,
}

/// One open watch counted against its caller, released when dropped.
#[derive(Debug, Clone)]
pub struct WatchPermit(#[allow(dead_code)] Arc<PermitInner>);

#[derive(Debug)]
struct PermitInner(Arc<AtomicUsize>);

impl Drop for PermitInner {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Limiter {
    pub fn new(config: LimitConfig) -> Limiter {
        Limiter {
            config,
            callers: Mutex::new(HashMap::new()),
        }
    }

    /// The bucket of `who`, made on first sight (allocating its key only then).
    fn bucket<'a>(
        &self,
        callers: &'a mut HashMap<String, Bucket>,
        who: &str,
        now: Instant,
    ) -> Option<&'a mut Bucket> {
        if !callers.contains_key(who) {
            if callers.len() >= MAX_CALLERS {
                // Forget callers idle for a while and holding no watch.
                callers.retain(|_, b| {
                    b.watches.load(Ordering::Relaxed) > 0
                        || now.duration_since(b.refilled) < Duration::from_secs(10)
                });
            }
            callers.insert(
                who.to_string(),
                Bucket {
                    tokens: f64::from(self.config.requests_per_second),
                    refilled: now,
                    watches: Arc::new(AtomicUsize::new(0)),
                },
            );
        }
        callers.get_mut(who)
    }

    /// Counts one call by `who`: `RESOURCE_EXHAUSTED` saying when to retry once over the rate.
    pub fn admit(&self, who: &str) -> Result<(), (Error, Duration)> {
        let rate = self.config.requests_per_second;
        if rate == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut callers = self.callers.lock();
        let Some(b) = self.bucket(&mut callers, who, now) else {
            return Ok(());
        };
        let rate = f64::from(rate);
        b.tokens = (b.tokens + now.duration_since(b.refilled).as_secs_f64() * rate).min(rate);
        b.refilled = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - b.tokens) / rate).max(Duration::from_millis(1));
        Err((
            Error::ResourceExhausted(format!(
                "{who} is over its limit of {rate} calls per second on this node; retry in {} ms",
                wait.as_millis()
            )),
            wait,
        ))
    }

    /// Opens one watch for `who`: `RESOURCE_EXHAUSTED` once it holds the most allowed.
    pub fn open_watch(&self, who: &str) -> Result<WatchPermit, (Error, Duration)> {
        let mut callers = self.callers.lock();
        let Some(b) = self.bucket(&mut callers, who, Instant::now()) else {
            return Err((
                Error::internal("the limiter lost a caller it had just added"),
                Duration::from_secs(1),
            ));
        };
        let limit = self.config.open_watches;
        let open = b.watches.fetch_add(1, Ordering::Relaxed);
        if limit != 0 && open >= limit {
            b.watches.fetch_sub(1, Ordering::Relaxed);
            return Err((
                Error::ResourceExhausted(format!(
                    "{who} holds {limit} open watches on this node, its most; close some, or retry on another node"
                )),
                Duration::from_secs(1),
            ));
        }
        Ok(WatchPermit(Arc::new(PermitInner(b.watches.clone()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_over_its_rate_is_told_when_to_retry_and_others_are_not_affected() {
        let l = Limiter::new(LimitConfig {
            requests_per_second: 5,
            open_watches: 0,
        });
        for _ in 0..5 {
            l.admit("a").unwrap();
        }
        let (e, wait) = l.admit("a").unwrap_err();
        assert!(matches!(e, Error::ResourceExhausted(_)));
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(200));
        l.admit("b").unwrap();
    }

    #[test]
    fn watches_are_counted_until_their_permit_goes() {
        let l = Limiter::new(LimitConfig {
            requests_per_second: 0,
            open_watches: 2,
        });
        let a = l.open_watch("a").unwrap();
        let b = a.clone();
        let _c = l.open_watch("a").unwrap();
        assert!(l.open_watch("a").is_err());
        l.open_watch("other").unwrap();
        drop(a);
        assert!(l.open_watch("a").is_err(), "a clone still holds it");
        drop(b);
        l.open_watch("a").unwrap();
    }
}

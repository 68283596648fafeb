//! The clock the engine reads time from: the system clock, or (for tests,
//! feature `internals`) a manual clock that moves only when told to.
#![cfg_attr(not(feature = "internals"), allow(unreachable_pub))]

use std::time::{SystemTime, UNIX_EPOCH};

/// Where a store reads the current time (message times, the duplicate
/// window, `max_age`, redelivery deadlines). Not part of the API; for tests
/// (feature `internals`).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Unix nanoseconds now.
    fn now_ns(&self) -> i64;
}

/// Unix nanoseconds now, by the system clock.
pub(crate) fn system_now_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// The system clock (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        system_now_ns()
    }
}

/// A clock that stands still until [`ManualClock::advance`] moves it.
#[cfg(any(test, feature = "internals"))]
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

#[cfg(any(test, feature = "internals"))]
impl ManualClock {
    /// A clock standing at the system's time now.
    pub fn new() -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(system_now_ns()))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: std::time::Duration) {
        let ns = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        self.0.fetch_add(ns, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(any(test, feature = "internals"))]
impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

#[cfg(any(test, feature = "internals"))]
impl Clock for ManualClock {
    fn now_ns(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

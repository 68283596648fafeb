//! Time as the stream stores it: unix nanoseconds, and conversions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix nanoseconds now by the system clock, for names and ids (what the
/// engine stores is timed by the store's clock, [`super::Stream::now`]).
pub(crate) use crate::clock::system_now_ns as now_ns;

/// Unix nanoseconds to a `SystemTime`.
pub(crate) fn to_system_time(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
}

/// A `SystemTime` as unix nanoseconds.
pub(crate) fn from_system_time(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

pub(super) fn dur_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

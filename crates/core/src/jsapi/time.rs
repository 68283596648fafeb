//! Times and durations as the JetStream API's JSON writes them: Go's
//! `time.Time` (RFC 3339, UTC, up to nine fraction digits with trailing
//! zeros dropped, `Z`) and `time.Duration` (integer nanoseconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Go's zero `time.Time` as JSON: "no time" (a stream without messages
/// has it as `first_ts`).
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

const NANOS_PER_SEC: u32 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// `t` as Go's `time.Time` marshals it in UTC: `2024-01-02T03:04:05.5Z`
/// (RFC 3339, nanoseconds with trailing zeros dropped, no fraction for a
/// whole second).
pub fn format_time(t: SystemTime) -> String {
    let (secs, nanos) = unix(t);
    let days = secs.div_euclid(SECS_PER_DAY);
    let of_day = secs.rem_euclid(SECS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    let mut out = format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}");
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// An RFC 3339 time as Go reads it (any offset, any number of fraction
/// digits). `None` for Go's zero time ([`GO_ZERO_TIME`]) and for text that
/// is not such a time.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    parse_rfc3339(s).ok().flatten()
}

/// Go's `time.Duration` (nanoseconds) for `d`, saturating at `i64::MAX`
/// (about 292 years).
pub fn duration_to_nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The duration of `nanos` nanoseconds; zero for a negative count.
pub fn nanos_to_duration(nanos: i64) -> Duration {
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

/// `t` clamped to what nats-server can compare: it orders start times as
/// `i64` nanoseconds since the Unix epoch, so an earlier time is the epoch
/// and a later one wraps around to the past unless clamped.
pub fn clamp_to_unix_nanos(t: SystemTime) -> SystemTime {
    let latest = UNIX_EPOCH + Duration::from_nanos(i64::MAX.unsigned_abs());
    t.clamp(UNIX_EPOCH, latest)
}

/// Seconds since the epoch (negative before it) and the nanoseconds past
/// that second.
fn unix(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (-secs, 0),
                n => (-secs - 1, NANOS_PER_SEC - n),
            }
        }
    }
}

/// Days since 1970-01-01 as (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Both in range by construction (1..=12, 1..=31).
    (y, m as u32, d as u32)
}

/// Days since 1970-01-01 of a date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch of Go's zero time, 0001-01-01T00:00:00Z.
fn go_zero_secs() -> i64 {
    days_from_civil(1, 1, 1) * SECS_PER_DAY
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; `Ok(None)` for Go's
/// zero time.
pub(crate) fn parse_rfc3339(s: &str) -> Result<Option<SystemTime>, String> {
    let bad = || format!("not an RFC 3339 time: {s:?}");
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Result<u32, String> {
        let digits = b.get(from..from + len).ok_or_else(bad)?;
        digits.iter().try_fold(0u32, |n, c| {
            if c.is_ascii_digit() {
                Ok(n * 10 + u32::from(c - b'0'))
            } else {
                Err(bad())
            }
        })
    };
    let sep = |at: usize, want: &[u8]| -> Result<(), String> {
        match b.get(at) {
            Some(c) if want.contains(c) => Ok(()),
            _ => Err(bad()),
        }
    };
    let year = num(0, 4)?;
    sep(4, b"-")?;
    let month = num(5, 2)?;
    sep(7, b"-")?;
    let day = num(8, 2)?;
    sep(10, b"Tt")?;
    let hour = num(11, 2)?;
    sep(13, b":")?;
    let minute = num(14, 2)?;
    sep(16, b":")?;
    let second = num(17, 2)?;
    let mut at = 19;
    let mut nanos = 0u32;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 9 {
                nanos = nanos * 10 + u32::from(b[at] - b'0');
            }
            at += 1;
        }
        let digits = at - start;
        if digits == 0 {
            return Err(bad());
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let offset_secs: i64 = match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if at + 6 == b.len() => {
            sep(at + 3, b":")?;
            let (h, m) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let off = i64::from(h * 3600 + m * 60);
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return Err(bad()),
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return Err(bad());
    }
    let secs = days_from_civil(i64::from(year), month, day) * SECS_PER_DAY
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset_secs;
    if secs == go_zero_secs() && nanos == 0 {
        return Ok(None);
    }
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    };
    t.map(Some).ok_or_else(bad)
}

/// Serde for a Go `time.Time` field (never omitted): `None` is Go's zero
/// time; the zero time, `null` and a missing field read as `None`.
pub(crate) mod go_time {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_time(*t)),
            None => s.serialize_str(super::GO_ZERO_TIME),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => super::parse_rfc3339(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Serde for a Go `*time.Time` field with `omitempty` (use with
/// `skip_serializing_if = "Option::is_none"`): `None` is no field.
pub(crate) mod go_time_omitempty {
    use std::time::SystemTime;

    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_time(*t)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        super::go_time::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn times_format_as_go_marshals_them() {
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_time(at(1_704_164_645, 500_000_000)),
            "2024-01-02T03:04:05.5Z"
        );
        assert_eq!(
            format_time(at(1_796_599_581, 236_399_014)),
            "2026-12-06T23:26:21.236399014Z"
        );
        assert_eq!(
            format_time(at(1_796_599_602, 2_028_000)),
            "2026-12-06T23:26:42.002028Z"
        );
        assert_eq!(format_time(at(951_782_400, 0)), "2000-02-29T00:00:00Z");
        let before = UNIX_EPOCH - Duration::new(1, 250_000_000);
        assert_eq!(format_time(before), "1969-12-31T23:59:58.75Z");
    }

    #[test]
    fn times_parse_and_go_zero_time_is_none() {
        assert_eq!(parse_time(GO_ZERO_TIME), None);
        assert_eq!(parse_time("0001-01-01T02:00:00+02:00"), None);
        assert_eq!(
            parse_time("2024-01-02T03:04:05.5Z"),
            Some(at(1_704_164_645, 500_000_000))
        );
        assert_eq!(
            parse_time("2024-01-02T05:04:05.123456789123+02:00"),
            Some(at(1_704_164_645, 123_456_789))
        );
        assert_eq!(
            parse_time("2024-01-01T23:04:05-04:00"),
            Some(at(1_704_164_645, 0))
        );
        assert_eq!(
            parse_time("1969-12-31T23:59:58.75Z"),
            Some(UNIX_EPOCH - Duration::new(1, 250_000_000))
        );
        assert!(parse_time("2024-05-01T10:00:00.1234Z").is_some());
        for bad in [
            "",
            "2024-01-02",
            "2024-01-02T03:04:05",
            "2024-01-02T03:04:05.Z",
            "2024-02-30T03:04:05Z",
            "2023-02-29T03:04:05Z",
            "2024-01-02T24:04:05Z",
            "2024-01-02T03:04:60Z",
            "2024-01-02 03:04:05Z",
            "2024-01-02T03:04:05Zjunk",
            "2024-01-02T03:04:05+0200",
        ] {
            assert_eq!(parse_rfc3339(bad).ok(), None, "{bad}");
        }
    }

    #[test]
    fn times_round_trip() {
        for t in [
            UNIX_EPOCH,
            at(1, 1),
            at(1_700_000_000, 123_456_789),
            at(4_102_444_800, 999_999_999),
            UNIX_EPOCH - Duration::from_secs(86_400 * 365 * 100),
            clamp_to_unix_nanos(at(u64::MAX / 4, 0)),
        ] {
            assert_eq!(parse_time(&format_time(t)), Some(t), "{}", format_time(t));
        }
    }

    #[test]
    fn durations_are_nanoseconds() {
        assert_eq!(duration_to_nanos(Duration::from_millis(5)), 5_000_000);
        assert_eq!(duration_to_nanos(Duration::MAX), i64::MAX);
        assert_eq!(nanos_to_duration(-1), Duration::ZERO);
        assert_eq!(nanos_to_duration(1_500), Duration::from_nanos(1_500));
    }

    #[test]
    fn start_times_clamp_to_what_nats_server_compares() {
        assert_eq!(
            clamp_to_unix_nanos(UNIX_EPOCH - Duration::from_secs(1)),
            UNIX_EPOCH
        );
        let t = at(1_700_000_000, 0);
        assert_eq!(clamp_to_unix_nanos(t), t);
        assert_eq!(
            clamp_to_unix_nanos(at(u64::MAX / 2, 0)),
            UNIX_EPOCH + Duration::from_nanos(i64::MAX as u64)
        );
    }
}

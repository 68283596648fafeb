//! Parsers for command-line values: sizes, durations, times and headers.
//! Each error says what was expected, with an example.

use std::time::{Duration, SystemTime};

/// A byte count: `1048576`, `512KiB`, `64MiB`, `1GB`, `10k` (one grammar
/// with `durabus-bench`).
pub(crate) use durabus_workloads::args::size;

/// A non-zero duration: `90s`, `2m`, `1h30m`, `7days`.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. 90s, 2m, 1h30m or 7d"))?;
    if d.is_zero() {
        return Err(format!("{s:?} is zero; leave the option out for unlimited"));
    }
    Ok(d)
}

/// A point in time: RFC 3339 (`2026-11-23T10:00:00Z`,
/// `2026-11-23T12:00:00+02:00`) or an age (`10m`, `2h`) meaning that long ago.
pub(crate) fn since(s: &str) -> Result<SystemTime, String> {
    let t = s.trim();
    if let Ok(age) = humantime::parse_duration(t) {
        return SystemTime::now()
            .checked_sub(age)
            .ok_or_else(|| format!("{s:?} reaches back before the epoch"));
    }
    rfc3339(t).ok_or_else(|| {
        format!(
            "{s:?} is neither an RFC 3339 time nor a duration; write e.g. 2026-11-23T10:00:00Z or 10m"
        )
    })
}

/// Parses RFC 3339 with `Z`, a numeric offset (`+02:00`), or no zone (UTC).
fn rfc3339(t: &str) -> Option<SystemTime> {
    if let Ok(time) = humantime::parse_rfc3339_weak(t) {
        return Some(time);
    }
    // humantime knows only UTC; take a trailing ±HH:MM offset off ourselves.
    let (local, offset) = t.split_at(t.len().checked_sub(6)?);
    let sign = match offset.as_bytes().first()? {
        b'+' => 1i64,
        b'-' => -1i64,
        _ => return None,
    };
    let (hours, minutes) = offset.get(1..)?.split_once(':')?;
    let hours: u64 = hours.parse().ok()?;
    let minutes: u64 = minutes.parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let shift = Duration::from_secs(hours * 3600 + minutes * 60);
    let time = humantime::parse_rfc3339_weak(local).ok()?;
    // Local time = UTC + offset, so UTC = local - offset.
    if sign > 0 {
        time.checked_sub(shift)
    } else {
        time.checked_add(shift)
    }
}

/// A limit that can be set or cleared: `Limit(None)` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit<T>(pub(crate) Option<T>);

/// Whether `s` asks for no limit.
fn is_unlimited(s: &str) -> bool {
    matches!(
        s.trim().to_ascii_lowercase().as_str(),
        "unlimited" | "none" | "-1"
    )
}

/// A size limit, or `unlimited`.
pub(crate) fn size_limit(s: &str) -> Result<Limit<u64>, String> {
    if is_unlimited(s) {
        return Ok(Limit(None));
    }
    size(s).map(|n| Limit(Some(n)))
}

/// A count limit (at least 1), or `unlimited`.
pub(crate) fn count_limit(s: &str) -> Result<Limit<u64>, String> {
    if is_unlimited(s) {
        return Ok(Limit(None));
    }
    match s.trim().parse::<u64>() {
        Ok(0) | Err(_) => Err(format!(
            "{s:?} is not a count of at least 1; write e.g. 1000, or `unlimited`"
        )),
        Ok(n) => Ok(Limit(Some(n))),
    }
}

/// A duration limit, or `unlimited`.
pub(crate) fn duration_limit(s: &str) -> Result<Limit<Duration>, String> {
    if is_unlimited(s) {
        return Ok(Limit(None));
    }
    duration(s).map(|d| Limit(Some(d)))
}

/// A header `Name:Value` (whitespace around the value is trimmed).
pub(crate) fn header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("header {s:?} has no ':'; write Name:Value"))?;
    let name = name.trim();
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "header name {name:?} must be non-empty without whitespace; write Name:Value"
        ));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn sizes_accept_decimal_and_binary_units() {
        assert_eq!(size("100"), Ok(100));
        assert_eq!(size("1KiB"), Ok(1024));
        assert_eq!(size("1k"), Ok(1024));
        assert_eq!(size("2MB"), Ok(2_000_000));
        assert_eq!(size("1 GiB"), Ok(1 << 30));
        assert!(size("lots").unwrap_err().contains("512KiB"));
        assert!(size("1.5MB").is_err());
        assert!(size("99999999999999TB").is_err());
    }

    #[test]
    fn durations_reject_zero_and_garbage_with_an_example() {
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(duration("0s").unwrap_err().contains("unlimited"));
        assert!(duration("soon").unwrap_err().contains("90s"));
    }

    #[test]
    fn since_accepts_rfc3339_with_offsets_and_ages() {
        let utc = since("2026-11-23T10:00:00Z").unwrap();
        assert_eq!(since("2026-11-23T12:00:00+02:00").unwrap(), utc);
        assert_eq!(since("2026-11-23T08:30:00-01:30").unwrap(), utc);
        assert_eq!(
            utc.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_795_428_000
        );
        let ten_minutes_ago = since("10m").unwrap();
        let age = SystemTime::now().duration_since(ten_minutes_ago).unwrap();
        assert!(age >= Duration::from_secs(600) && age < Duration::from_secs(660));
        assert!(since("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn limits_can_be_cleared_with_unlimited() {
        assert_eq!(size_limit("unlimited"), Ok(Limit(None)));
        assert_eq!(size_limit("1KiB"), Ok(Limit(Some(1024))));
        assert_eq!(count_limit("-1"), Ok(Limit(None)));
        assert!(count_limit("0").is_err());
        assert_eq!(
            duration_limit("1h"),
            Ok(Limit(Some(Duration::from_secs(3600))))
        );
    }

    #[test]
    fn headers_split_at_the_first_colon() {
        assert_eq!(
            header("Trace: a:b"),
            Ok(("Trace".to_owned(), "a:b".to_owned()))
        );
        assert!(header("novalue").is_err());
        assert!(header(":x").is_err());
    }
}

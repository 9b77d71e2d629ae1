//! Time for journals, stores and messages: the clock and the two text forms veilfs writes
//! (RFC 3339 UTC with milliseconds in records and messages, a compact sortable stamp in
//! session ids). A leaf module: everything that prints or parses a time comes here, so the
//! journal and the store need not depend on each other for it. The calendar is `jiff`'s.

use jiff::Timestamp;

/// Unix time in nanoseconds.
pub(crate) fn now_ns() -> i128 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// The instant `ns` nanoseconds after the epoch, clamped to the years -9999..=9999 that
/// `jiff` represents (only a corrupt record lies outside them).
fn timestamp(ns: i128) -> Timestamp {
    Timestamp::from_nanosecond(ns).unwrap_or(if ns < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// RFC 3339 UTC with milliseconds (truncated): `2026-11-25T17:01:02.123Z`.
pub(crate) fn format_time(ns: i128) -> String {
    format!("{:.3}", timestamp(ns))
}

/// The sortable prefix of a session id: `20261125T170102Z`.
pub(crate) fn session_stamp(ns: i128) -> String {
    timestamp(ns).strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// Parses RFC 3339 (`2026-11-25T17:01:02Z`, fractions and `±HH:MM` offsets allowed, a space
/// instead of `T` too) or unix seconds (`1764090062`), into unix nanoseconds.
pub(crate) fn parse_time(s: &str) -> Option<i128> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return Some(secs as i128 * 1_000_000_000);
    }
    s.parse::<Timestamp>().ok().map(Timestamp::as_nanosecond)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_roundtrip() {
        let t = parse_time("2026-11-25T17:01:02.5Z").unwrap();
        assert_eq!(format_time(t), "2026-11-25T17:01:02.500Z");
        assert_eq!(
            parse_time("2026-11-25T18:01:02+01:00").unwrap(),
            t - 500_000_000
        );
        assert_eq!(parse_time("0").unwrap(), 0);
        assert_eq!(parse_time(" 2026-11-25 17:01:02.5Z "), Some(t));
        assert_eq!(parse_time("1764090062"), Some(1_764_090_062_000_000_000));
        assert_eq!(
            format_time(1_764_090_062_999_999_999),
            "2025-11-25T17:01:02.999Z"
        );
        assert_eq!(session_stamp(t), "20261125T170102Z");
        assert!(parse_time("yesterday").is_none());
    }
}

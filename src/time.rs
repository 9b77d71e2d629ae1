//! Time for journals, stores and messages: the clock and the two text forms veilfs writes
//! (RFC 3339 UTC with milliseconds in records and messages, a compact sortable stamp in
//! session ids). A leaf module: everything that prints or parses a time comes here, so the
//! journal and the store need not depend on each other for it.

/// Unix time in nanoseconds.
pub fn now_ns() -> i128 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn split_ns(ns: i128) -> (i64, u32, u32, u32, u32, u32, u32, u32) {
    let secs = ns.div_euclid(1_000_000_000) as i64;
    let frac = ns.rem_euclid(1_000_000_000) as u32;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    (
        y,
        mo,
        d,
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        frac / 1_000_000,
        frac,
    )
}

/// RFC 3339 UTC with milliseconds: `2026-11-25T17:01:02.123Z`.
pub fn format_time(ns: i128) -> String {
    let (y, mo, d, h, mi, s, ms, _) = split_ns(ns);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// The sortable prefix of a session id: `20261125T170102Z`.
pub(crate) fn session_stamp(ns: i128) -> String {
    let (y, mo, d, h, mi, s, _, _) = split_ns(ns);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// Parses RFC 3339 (`2026-11-25T17:01:02Z`, fractions and `±HH:MM` offsets allowed, a space
/// instead of `T` too) or unix seconds (`1764090062`), into unix nanoseconds.
pub fn parse_time(s: &str) -> Option<i128> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return Some(secs as i128 * 1_000_000_000);
    }
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let (y, mo, d) = (num(0..4)? as i64, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac_ns: i128 = 0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits: String = r.chars().take_while(|c| c.is_ascii_digit()).collect();
        rest = &r[digits.len()..];
        let mut padded = digits.chars().take(9).collect::<String>();
        while padded.len() < 9 {
            padded.push('0');
        }
        frac_ns = padded.parse().ok()?;
    }
    let offset_s: i64 = match rest {
        "Z" | "z" => 0,
        r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) => {
            let oh: i64 = r.get(1..3)?.parse().ok()?;
            let om: i64 = r.get(4..6)?.parse().ok()?;
            let v = oh * 3600 + om * 60;
            if r.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + (h * 3600 + mi * 60 + sec) as i64 - offset_s;
    Some(secs as i128 * 1_000_000_000 + frac_ns)
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
        assert_eq!(session_stamp(t), "20261125T170102Z");
        assert!(parse_time("yesterday").is_none());
    }
}

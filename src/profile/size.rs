//! Sizes in a profile: integers (bytes) or strings with a unit (`"64 MiB"`, `"500 KB"`).

use serde::{Deserializer, Serializer};
use std::fmt;

/// Parse `"64 MiB"`, `"500 KB"`, `"1.5GiB"`, `"123"` (bytes). Units are case-insensitive;
/// K/M/G/T-B are powers of 1000, Ki/Mi/Gi/Ti-B powers of 1024.
pub(crate) fn parse(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: String = num.chars().filter(|&c| c != '_').collect();
    let unit = unit.trim().to_ascii_lowercase();
    let mult: u128 = match unit.as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size `{s}`: unknown unit `{}`, expected one of B, KB, MB, GB, TB, KiB, MiB, GiB, TiB",
                unit.trim()
            ));
        }
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num.as_str(), ""),
    };
    if int.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 12 {
        return Err(format!(
            "invalid size `{s}`, expected bytes or a number with a unit like \"64 MiB\""
        ));
    }
    let int_v: u128 = if int.is_empty() {
        0
    } else {
        int.parse()
            .map_err(|_| format!("invalid size `{s}`: number too large"))?
    };
    let frac_v: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse()
            .map_err(|_| format!("invalid size `{s}`: bad fraction"))?
    };
    let scale = 10u128.pow(frac.len() as u32);
    let total = int_v
        .checked_mul(mult)
        .and_then(|v| v.checked_add(frac_v * mult / scale))
        .filter(|v| *v <= u64::MAX as u128)
        .ok_or_else(|| format!("invalid size `{s}`: too large"))?;
    Ok(total as u64)
}

/// Format a size the way [`parse`] reads it, using the largest exact binary unit.
pub(crate) fn format(n: u64) -> String {
    for (unit, m) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if n >= m && n.is_multiple_of(m) {
            return format!("{} {unit}", n / m);
        }
    }
    format!("{n} B")
}

struct SizeVisitor;

impl serde::de::Visitor<'_> for SizeVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size: bytes as an integer, or a string like \"64 MiB\"")
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
        parse(v).map_err(E::custom)
    }
}

pub(crate) fn de<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(SizeVisitor)
}

pub(crate) fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_any(SizeVisitor).map(Some)
}

pub(crate) fn ser<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    if *v < 1024 && *v <= i64::MAX as u64 {
        s.serialize_u64(*v)
    } else {
        s.serialize_str(&format(*v))
    }
}

pub(crate) fn ser_opt<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => ser(v, s),
        None => s.serialize_none(),
    }
}

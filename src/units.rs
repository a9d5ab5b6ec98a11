//! Go-style durations and 1024-based sizes, as the Go tool's scripts spell them.
//!
//! Written here rather than taken from a crate: Go's grammar (`1.5h`, `1m30s`, `500ms`, a bare
//! number meaning seconds) is not what `humantime` and friends accept, and scripts written for
//! the Go tool rely on it.

use std::time::Duration;

/// Parses `500ms`, `1m30s`, `1.5h`, `1d`, `10` (seconds). Negative values, and values past
/// [`MAX_DURATION`], are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let bad = || format!("invalid duration '{text}' (use e.g. 500ms, 90s, 1m30s, 2h, 1d; at most 100 years)");
    if s.is_empty() || s.starts_with('-') {
        return Err(bad());
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    // Written with a non-zero digit, it is positive even where the float underflows to zero
    // (`1e-5000`, `0.<5000 zeros>1ns`): such a value is 1 ns, never "none".
    let mantissa = s.split(['e', 'E']).next().unwrap_or(s);
    let positive = mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b));
    if let Ok(secs) = s.parse::<f64>() {
        return seconds(secs, positive).ok_or_else(bad);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    seconds(total, positive).ok_or_else(bad)
}

/// The longest duration accepted: 100 years. Every deadline is `now + duration`, which must
/// never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86400);

/// A positive value below 1 ns rounds up to 1 ns: it never means "none". `positive` says the
/// text had a non-zero digit, which still holds where `secs` underflowed to zero.
fn seconds(secs: f64, positive: bool) -> Option<Duration> {
    let d = Duration::try_from_secs_f64(secs).ok()?;
    if d > MAX_DURATION {
        return None;
    }
    Some(if d.is_zero() && (secs > 0.0 || positive) { Duration::from_nanos(1) } else { d })
}

/// Parses a byte count: `1048576`, `512K`, `100G`, `1.5T` (powers of 1024; `KB`/`KiB` also accepted).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let bad = || format!("invalid size '{text}' (use e.g. 1048576, 512K, 100G)");
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2h10m"), Ok(Duration::from_secs(7800)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(129600)));
        // A positive value below 1 ns is 1 ns, never "no timeout".
        assert_eq!(parse_duration("1e-12"), Ok(Duration::from_nanos(1)));
        assert_eq!(parse_duration("0.0001ns"), Ok(Duration::from_nanos(1)));
        // Underflows to 0.0 as a float, yet written as positive.
        assert_eq!(parse_duration("1e-5000"), Ok(Duration::from_nanos(1)));
        assert_eq!(parse_duration("+1E-400"), Ok(Duration::from_nanos(1)));
        let tiny = format!("0.{}1ns", "0".repeat(5000));
        assert_eq!(parse_duration(&tiny), Ok(Duration::from_nanos(1)));
        assert_eq!(parse_duration("0e5"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0.000ms"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("36500d"), Ok(MAX_DURATION));
        for bad in [
            "",
            "-1s",
            "1x",
            "m",
            "1m30",
            "abc",
            "1..2s",
            "inf",
            "NaN",
            "1e19",
            "36501d",
            "5000000000000000h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("100G"), Ok(100 << 30));
        assert_eq!(parse_size("1.5T"), Ok(3 << 39));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        for bad in ["", "G", "1X", "-1", "1e3"] {
            assert!(parse_size(bad).is_err(), "{bad} should be refused");
        }
    }
}

//! Parsing of the human units used in the config file: durations (`"30s"`,
//! `"250ms"`, `"2m"`) and byte sizes (`"64KiB"`, `"128MiB"`, `"1GB"`).

use std::time::Duration;

/// Parses a duration such as `"30s"`, `"250ms"`, `"1m 30s"` or `"2h"`.
///
/// A bare number is refused on purpose: `timeout = "30"` is ambiguous
/// (seconds? milliseconds?) and at 3 a.m. nobody should have to guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` has no unit: write e.g. \"{text}s\" or \"{text}ms\""
        ));
    }
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration ({e})"))
}

/// Parses a byte size: a plain integer (bytes) or a number with a unit
/// `B`, `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB` (decimal and binary units both
/// accepted; `K`, `M`, `G` alone mean the binary ones, as in nginx).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "`{text}` is not a size (e.g. \"64KiB\", \"128MiB\")"
        ));
    }
    let n: u64 = num.parse().map_err(|_| format!("`{text}` is too large"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "K" | "k" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "m" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "g" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "`{other}` is not a size unit (use B, KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Formats a byte size the way the config file writes it (a string that
/// [`parse_bytes`] reads back to the same number).
pub fn format_bytes(n: u64) -> String {
    for (mult, unit) in [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
        if n != 0 && n % mult == 0 {
            return format!("{}{unit}", n / mult);
        }
    }
    n.to_string()
}

/// Formats a duration the way the config file writes it.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("64KiB"), Ok(65536));
        assert_eq!(parse_bytes("64K"), Ok(65536));
        assert_eq!(parse_bytes("1MB"), Ok(1_000_000));
        assert_eq!(parse_bytes("128MiB"), Ok(128 << 20));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("99999999999999999999GiB").is_err());
        assert!(parse_bytes("18446744073709551615GiB").is_err());
    }

    #[test]
    fn sizes_round_trip() {
        for n in [0, 1, 1000, 1024, 65_536, 128 << 20, 3 << 30, u64::MAX] {
            assert_eq!(parse_bytes(&format_bytes(n)), Ok(n), "{n}");
        }
        assert_eq!(format_bytes(65_536), "64KiB");
        assert_eq!(format_bytes(128 << 20), "128MiB");
    }
}

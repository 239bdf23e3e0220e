//! Unix seconds as a UTC calendar date, for the places usher writes dates
//! itself (the access log's CLF time, the holding page's RFC 3339 times,
//! the date in a generated key id): Howard Hinnant's days-to-civil
//! algorithm, no date crate needed.

/// A Unix time as calendar date and time of day in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    /// 1..=12
    pub month: u64,
    /// 1..=31
    pub day: u64,
    pub secs_of_day: u64,
}

impl Civil {
    /// The date and time of `unix` (seconds since 1970-01-01T00:00:00Z).
    pub fn of(unix: u64) -> Civil {
        let days = (unix / 86_400) as i64;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097) as u64;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe as i64 + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            secs_of_day: unix % 86_400,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Civil;

    #[test]
    fn known_dates() {
        let at = |unix| {
            let c = Civil::of(unix);
            (c.year, c.month, c.day, c.secs_of_day)
        };
        assert_eq!(at(0), (1970, 1, 1, 0));
        // 2000-02-29 (a leap day of a century leap year) 12:34:56
        assert_eq!(at(951_827_696), (2000, 2, 29, 45_296));
        // 2026-12-31T23:59:59Z, then the next year
        assert_eq!(at(1_798_761_599), (2026, 12, 31, 86_399));
        assert_eq!(at(1_798_761_600), (2027, 1, 1, 0));
    }
}

//! Unix seconds as a UTC calendar date, for the places usher writes dates
//! itself (the access log's CLF time, the holding page's RFC 3339 times,
//! the date in a generated key id): Howard Hinnant's days-to-civil
//! algorithm, no date crate needed. And the kernel's coarse clocks, read
//! where a tick's precision is enough and the request path reads them
//! often: [`coarse_unix_secs`], [`Tick`].

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

/// Unix seconds now, read from the coarse wall clock (the kernel's tick,
/// a few milliseconds behind at most; no time-stamp counter read): for
/// what shows seconds only (an answer's `Date`, the holding page's "now"),
/// read on every holding answer.
pub fn coarse_unix_secs() -> u64 {
    match read_clock(libc::CLOCK_REALTIME_COARSE) {
        Some(now) => now.as_secs(),
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// One of the kernel's clocks now, `None` if it cannot be read (or reads
/// before its zero).
fn read_clock(clock: libc::clockid_t) -> Option<std::time::Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; the clock ids passed
    // here are constants Linux has had since 2.6.32.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).ok().filter(|_| rc == 0)?;
    Some(std::time::Duration::new(secs, ts.tv_nsec as u32))
}

/// An instant of the coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`):
/// the kernel's last tick, a few milliseconds behind the precise clock at
/// most. Wait deadlines of seconds (idle connections, origin answers,
/// pooled connections' age) need no better, and reading it takes no
/// time-stamp counter read: 4 ns here, `Instant::now` 16 ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(std::time::Duration);

impl Tick {
    /// Now, to the tick.
    pub fn now() -> Tick {
        // The monotonic clock reads from boot and cannot fail with a
        // valid id.
        Tick(read_clock(libc::CLOCK_MONOTONIC_COARSE).unwrap_or_default())
    }

    /// The time from `earlier` to this instant (zero if it is later).
    pub fn since(self, earlier: Tick) -> std::time::Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::ops::Add<std::time::Duration> for Tick {
    type Output = Tick;

    fn add(self, d: std::time::Duration) -> Tick {
        Tick(self.0 + d)
    }
}

#[cfg(test)]
mod coarse_tests {
    use std::time::{Duration, Instant};

    /// The coarse clock agrees with the precise one to the second (one
    /// tick late at most, across a second's turn).
    #[test]
    fn the_coarse_clock_tells_the_second() {
        let precise = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let coarse = super::coarse_unix_secs();
        assert!(
            coarse + 1 >= precise && coarse <= precise + 1,
            "{coarse} vs {precise}"
        );
    }

    #[test]
    fn the_coarse_monotonic_clock_keeps_up_with_the_precise_one() {
        let (tick, precise) = (super::Tick::now(), Instant::now());
        std::thread::sleep(Duration::from_millis(30));
        let (ticked, passed) = (super::Tick::now().since(tick), precise.elapsed());
        // Behind by a tick at most (the kernel's: 10 ms at HZ=100).
        assert!(
            ticked <= passed + Duration::from_millis(10),
            "{ticked:?} {passed:?}"
        );
        assert!(
            ticked + Duration::from_millis(11) >= passed,
            "{ticked:?} {passed:?}"
        );
        assert_eq!(tick.since(super::Tick::now()), Duration::ZERO);
    }
}

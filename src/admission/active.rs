//! Who is inside: admitted visitors seen within their session, and the
//! admission rate measured over the last minute (for honest wait estimates).

use std::collections::{HashMap, VecDeque};

use super::line::codec::{Reader, SnapshotError, Writer};

/// Admitted passes and when each one's slot frees (ms on the room clock).
#[derive(Debug, Default)]
pub struct Active {
    until: HashMap<u64, u64>,
}

impl Active {
    /// Marks pass `id` active until `until`.
    pub fn touch(&mut self, id: u64, until: u64) {
        self.until.insert(id, until);
    }

    /// Frees a pass's slot at once (the origin said the visitor is done).
    pub fn release(&mut self, id: u64) -> bool {
        self.until.remove(&id).is_some()
    }

    /// Drops expired passes; returns how many remain.
    pub fn prune(&mut self, now: u64) -> u64 {
        self.until.retain(|_, until| *until > now);
        if self.until.capacity() > 1024 && self.until.capacity() > 4 * self.until.len() {
            self.until.shrink_to_fit();
        }
        self.until.len() as u64
    }

    /// Active passes (as of the last prune, plus those touched since).
    pub fn len(&self) -> u64 {
        self.until.len() as u64
    }

    /// Whether nobody is active.
    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

/// Admissions over a sliding window, for the wait estimate.
#[derive(Debug)]
pub struct RateWindow {
    window_ms: u64,
    samples: VecDeque<(u64, u64)>,
    sum: u64,
    started: Option<u64>,
}

impl RateWindow {
    /// A window of `window_ms`.
    pub fn new(window_ms: u64) -> Self {
        RateWindow {
            window_ms,
            samples: VecDeque::new(),
            sum: 0,
            started: None,
        }
    }

    /// Records `n` admissions at `now`.
    pub fn record(&mut self, now: u64, n: u64) {
        self.started.get_or_insert(now);
        if n > 0 {
            self.samples.push_back((now, n));
            self.sum += n;
        }
        while let Some(&(t, k)) = self.samples.front() {
            if now.saturating_sub(t) <= self.window_ms {
                break;
            }
            self.samples.pop_front();
            self.sum -= k;
        }
    }

    /// Admissions per second over the window; `None` until something was
    /// admitted (no data is not a rate: the page then says "unknown").
    pub fn per_second(&self, now: u64) -> Option<f64> {
        if self.sum == 0 {
            return None;
        }
        let since = self.started.unwrap_or(now);
        let span = now.saturating_sub(since).clamp(1_000, self.window_ms);
        Some(self.sum as f64 * 1000.0 / span as f64)
    }
}

impl Active {
    /// Writes the pass ids and their expiry times.
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.until.len() as u64);
        for (id, until) in &self.until {
            w.u64(*id);
            w.u64(*until);
        }
    }

    /// Reads what [`Active::encode`] wrote.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Active, SnapshotError> {
        let n = r.len(16)?;
        let mut until = HashMap::with_capacity(n);
        for _ in 0..n {
            until.insert(r.u64()?, r.u64()?);
        }
        Ok(Active { until })
    }
}

impl RateWindow {
    /// Writes the samples of the window.
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.window_ms);
        w.u64(self.started.map_or(u64::MAX, |s| s));
        w.u64(self.samples.len() as u64);
        for (t, n) in &self.samples {
            w.u64(*t);
            w.u64(*n);
        }
    }

    /// Reads what [`RateWindow::encode`] wrote.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<RateWindow, SnapshotError> {
        let window_ms = r.u64()?;
        let started = Some(r.u64()?).filter(|s| *s != u64::MAX);
        let n = r.len(16)?;
        let mut samples = VecDeque::with_capacity(n);
        let mut sum = 0u64;
        for _ in 0..n {
            let (t, k) = (r.u64()?, r.u64()?);
            sum = sum.saturating_add(k);
            samples.push_back((t, k));
        }
        Ok(RateWindow {
            window_ms,
            samples,
            sum,
            started,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_expires_and_releases() {
        let mut a = Active::default();
        a.touch(1, 100);
        a.touch(2, 200);
        a.touch(1, 300);
        assert_eq!(a.prune(150), 2);
        assert_eq!(a.prune(250), 1);
        assert!(a.release(1));
        assert!(!a.release(1));
        assert!(a.is_empty());
    }

    #[test]
    fn rate_is_unknown_until_measured_then_windowed() {
        let mut r = RateWindow::new(60_000);
        r.record(0, 0);
        assert_eq!(r.per_second(10_000), None);
        for t in 1..=60 {
            r.record(t * 1000, 2);
        }
        let rate = r.per_second(60_000).unwrap();
        assert!((rate - 2.0).abs() < 0.1, "{rate}");
        // nothing admitted for two minutes: the window empties
        r.record(200_000, 0);
        assert_eq!(r.per_second(200_000), None);
    }
}

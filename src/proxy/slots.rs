//! The origin's in-flight cap: `origin.max_in_flight` slots, a bounded
//! queue in front of them, and an RAII guard that gives the slot back.
//! The cap can change on reload without disturbing requests in flight.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::civil::Tick;
use crate::metrics::Metrics;

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoSlot {
    /// The wait queue was full.
    #[error("origin busy: {queued} requests already waiting")]
    QueueFull {
        /// Requests waiting when this one came.
        queued: usize,
    },
    /// Waited `queue_timeout` without a slot freeing.
    #[error("origin busy: no slot within {0:?}")]
    Timeout(Duration),
}

/// The slots and their bookkeeping.
pub struct Slots {
    sem: Arc<Semaphore>,
    queued: AtomicUsize,
    /// Origin load for the closed-loop gate (see [`Load`]).
    load: LoadCounters,
    /// (current size, slots still to retire after a shrink)
    size: Mutex<(usize, usize)>,
    /// Whether slots are still to retire: a slot given back looks here
    /// before it takes the lock (set and cleared under it). One given
    /// back on another thread while a shrink is applied may miss it and
    /// go back to the semaphore: the next one retires in its place.
    in_debt: AtomicBool,
    metrics: Arc<Metrics>,
}

/// A held slot; dropping it frees the slot (or retires it after a shrink).
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    slots: Arc<Slots>,
    /// When the slot was taken, in microseconds on the load clock.
    taken_us: u64,
}

/// How busy the origin has been: cumulative figures that the closed-loop
/// gate differences between two readings (so any number of readers can
/// sample them at their own pace).
///
/// `busy_us` is the integral of requests in flight over time, exactly:
/// slot-microseconds of finished requests plus, for those still in
/// flight, the time since they started. Divided by the time between two
/// readings it is the mean number in flight (Little's law needs no
/// sampling here).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    /// Microseconds on the load clock when read.
    pub at_us: u64,
    /// Slot-microseconds used so far.
    pub busy_us: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Requests waiting for a slot now.
    pub queued: u64,
    /// Requests refused so far for want of a slot (queue full or timed out).
    pub refused: u64,
    /// Slots now (`origin.max_in_flight`).
    pub capacity: u64,
}

#[derive(Debug)]
struct LoadCounters {
    /// The load clock's zero. The coarse clock: `busy_us` sums slot
    /// times over thousands of requests, and the tick's error, at the
    /// start and the end alike, cancels out in the sum; two precise
    /// clock reads a request were 0.6% of a forwarded one's instructions.
    epoch: Tick,
    /// (slot-microseconds of finished requests, sum of the start times of
    /// those in flight, how many are in flight): one short lock, so a
    /// reading never sees a request half started or half finished.
    busy: Mutex<(u64, u64, u64)>,
    refused: AtomicU64,
}

impl LoadCounters {
    fn now_us(&self) -> u64 {
        Tick::now().since(self.epoch).as_micros() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, u64, u64)> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Slots {
    /// `size` slots.
    pub fn new(size: usize, metrics: Arc<Metrics>) -> Arc<Slots> {
        Arc::new(Slots {
            sem: Arc::new(Semaphore::new(size)),
            queued: AtomicUsize::new(0),
            load: LoadCounters {
                epoch: Tick::now(),
                busy: Mutex::new((0, 0, 0)),
                refused: AtomicU64::new(0),
            },
            size: Mutex::new((size, 0)),
            in_debt: AtomicBool::new(false),
            metrics,
        })
    }

    /// Takes a slot, waiting at most `timeout` behind at most `max_queue` others.
    pub async fn acquire(
        self: &Arc<Self>,
        max_queue: usize,
        timeout: Duration,
    ) -> Result<Slot, NoSlot> {
        let permit = match self.sem.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let queued = self.queued.fetch_add(1, Ordering::Relaxed);
                if queued >= max_queue {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    self.load.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(NoSlot::QueueFull { queued });
                }
                self.metrics.origin_queued.inc();
                let waited = tokio::time::timeout(timeout, self.sem.clone().acquire_owned()).await;
                self.queued.fetch_sub(1, Ordering::Relaxed);
                self.metrics.origin_queued.dec();
                match waited {
                    Ok(Ok(p)) => p,
                    // The semaphore is never closed; treat it like a timeout.
                    Ok(Err(_)) | Err(_) => {
                        self.load.refused.fetch_add(1, Ordering::Relaxed);
                        return Err(NoSlot::Timeout(timeout));
                    }
                }
            }
        };
        self.metrics.origin_in_flight.inc();
        let taken_us = self.load.now_us();
        {
            let mut b = self.load.lock();
            b.1 += taken_us;
            b.2 += 1;
        }
        Ok(Slot {
            permit: Some(permit),
            slots: self.clone(),
            taken_us,
        })
    }

    /// Changes the number of slots. Growing takes effect at once; shrinking
    /// retires free slots now and busy ones as they are given back.
    pub fn resize(&self, new: usize) {
        let mut size = self.size.lock().unwrap_or_else(|e| e.into_inner());
        let (old, debt) = *size;
        if new >= old {
            let grow = new - old;
            let repaid = grow.min(debt);
            self.sem.add_permits(grow - repaid);
            *size = (new, debt - repaid);
        } else {
            let shrink = old - new;
            let forgotten = self.sem.forget_permits(shrink);
            *size = (new, debt + shrink - forgotten);
        }
        self.in_debt.store(size.1 > 0, Ordering::Relaxed);
    }

    /// The origin's load so far (see [`Load`]).
    pub fn load(&self) -> Load {
        let l = &self.load;
        let at_us = l.now_us();
        let (done, started, running) = *l.lock();
        let open = (running.saturating_mul(at_us)).saturating_sub(started);
        Load {
            at_us,
            busy_us: done + open,
            in_flight: running,
            queued: self.queued.load(Ordering::Relaxed) as u64,
            refused: l.refused.load(Ordering::Relaxed),
            capacity: self.size.lock().unwrap_or_else(|e| e.into_inner()).0 as u64,
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        let (size, debt) = *self.size.lock().unwrap_or_else(|e| e.into_inner());
        (size + debt).saturating_sub(self.sem.available_permits())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.metrics.origin_in_flight.dec();
        let l = &self.slots.load;
        let held = l.now_us().saturating_sub(self.taken_us);
        {
            let mut b = l.lock();
            b.0 += held;
            b.1 -= self.taken_us;
            b.2 -= 1;
        }
        if !self.slots.in_debt.load(Ordering::Relaxed) {
            // The permit goes back as it drops.
            return;
        }
        if let Some(p) = self.permit.take() {
            let mut size = self.slots.size.lock().unwrap_or_else(|e| e.into_inner());
            if size.1 > 0 {
                size.1 -= 1;
                p.forget();
            }
            self.slots.in_debt.store(size.1 > 0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn cap_queue_timeout_and_resize() {
        let slots = Slots::new(2, Arc::new(Metrics::new()));
        let a = slots.acquire(1, Duration::from_secs(1)).await.unwrap();
        let b = slots.acquire(1, Duration::from_secs(1)).await.unwrap();
        assert_eq!(slots.in_flight(), 2);
        // one may wait; it times out after the queue timeout (time is paused)
        let waiting = tokio::spawn({
            let s = slots.clone();
            async move { s.acquire(1, Duration::from_secs(1)).await.err() }
        });
        tokio::task::yield_now().await;
        // a second waiter finds the queue full at once
        assert!(matches!(
            slots.acquire(1, Duration::from_secs(1)).await,
            Err(NoSlot::QueueFull { queued: 1 })
        ));
        assert_eq!(
            waiting.await.unwrap(),
            Some(NoSlot::Timeout(Duration::from_secs(1)))
        );

        // shrink to 1 while both are busy: the first one given back retires
        slots.resize(1);
        drop(a);
        assert!(slots.acquire(0, Duration::from_millis(1)).await.is_err());
        drop(b);
        let c = slots.acquire(0, Duration::from_millis(1)).await.unwrap();
        assert!(slots.acquire(0, Duration::from_millis(1)).await.is_err());
        // grow back
        slots.resize(3);
        let d = slots.acquire(0, Duration::from_millis(1)).await.unwrap();
        let e = slots.acquire(0, Duration::from_millis(1)).await.unwrap();
        assert_eq!(slots.in_flight(), 3);
        drop((c, d, e));
        assert_eq!(slots.in_flight(), 0);
    }
}

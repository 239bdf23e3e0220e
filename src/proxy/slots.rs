//! The origin's in-flight cap: `origin.max_in_flight` slots, a bounded
//! queue in front of them, and an RAII guard that gives the slot back.
//! The cap can change on reload without disturbing requests in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// (current size, slots still to retire after a shrink)
    size: Mutex<(usize, usize)>,
    metrics: Arc<Metrics>,
}

/// A held slot; dropping it frees the slot (or retires it after a shrink).
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    slots: Arc<Slots>,
}

impl Slots {
    /// `size` slots.
    pub fn new(size: usize, metrics: Arc<Metrics>) -> Arc<Slots> {
        Arc::new(Slots {
            sem: Arc::new(Semaphore::new(size)),
            queued: AtomicUsize::new(0),
            size: Mutex::new((size, 0)),
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
                    return Err(NoSlot::QueueFull { queued });
                }
                self.metrics.origin_queued.inc();
                let waited = tokio::time::timeout(timeout, self.sem.clone().acquire_owned()).await;
                self.queued.fetch_sub(1, Ordering::Relaxed);
                self.metrics.origin_queued.dec();
                match waited {
                    Ok(Ok(p)) => p,
                    // The semaphore is never closed; treat it like a timeout.
                    Ok(Err(_)) | Err(_) => return Err(NoSlot::Timeout(timeout)),
                }
            }
        };
        self.metrics.origin_in_flight.inc();
        Ok(Slot {
            permit: Some(permit),
            slots: self.clone(),
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
        if let Some(p) = self.permit.take() {
            let mut size = self.slots.size.lock().unwrap_or_else(|e| e.into_inner());
            if size.1 > 0 {
                size.1 -= 1;
                p.forget();
            }
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

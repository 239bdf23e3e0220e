//! Feedback forwarded to the operator's webhook (`room.feedback_webhook`):
//! each stored record is POSTed as JSON by one background task, so a slow
//! or dead endpoint never holds a visitor's request. The queue is bounded
//! ([`QUEUE`]); when it is full a record is not forwarded (it is stored
//! all the same, and counted as `dropped`). A failed POST (no answer, a
//! timeout, a 5xx or 429) is tried again after 1 s and 3 s ([`ATTEMPTS`]
//! in all); another refusal (4xx) is final. The record is already safe on
//! disk: the webhook is a convenience, and while it is retried the queue
//! (not the line) waits.

use std::sync::Mutex;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::Full;
use prometheus::IntCounterVec;
use tokio::sync::{mpsc, watch};

use super::Record;

/// Records waiting to be sent at most.
pub const QUEUE: usize = 256;
/// One POST's time limit, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// POSTs of one record at most.
pub const ATTEMPTS: u32 = 3;
/// The wait before the second and the third attempt.
const BACKOFF: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];

/// What became of an offered record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// No webhook is configured.
    Off,
    /// Queued for sending.
    Queued,
    /// The queue is full: not forwarded.
    Dropped,
}

/// The webhook's URL and queue.
#[derive(Debug)]
pub struct Webhook {
    url: ArcSwapOption<Uri>,
    tx: mpsc::Sender<Record>,
    rx: Mutex<Option<mpsc::Receiver<Record>>>,
}

impl Default for Webhook {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Webhook {
            url: ArcSwapOption::empty(),
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl Webhook {
    /// Sets (or clears) the URL, at start and on every reload.
    pub fn set_url(&self, url: Option<Uri>) {
        self.url.store(url.map(std::sync::Arc::new));
    }

    /// Queues `record` for the webhook, if there is one.
    pub fn offer(&self, record: &Record) -> Offer {
        if self.url.load().is_none() {
            return Offer::Off;
        }
        match self.tx.try_send(record.clone()) {
            Ok(()) => Offer::Queued,
            Err(_) => Offer::Dropped,
        }
    }
}

/// Sends queued records until told to stop, counting each by its result in
/// `sent` (`usher_feedback_webhook_total`). The first caller takes the
/// queue; a second returns at once.
pub async fn run(hook: &Webhook, sent: &IntCounterVec, mut stop: watch::Receiver<bool>) {
    let Some(mut rx) = hook.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    // Made on the first record: loading the system's roots costs CPU that
    // a process without a webhook (or before its first report) need not spend.
    let mut client = None;
    loop {
        let record = tokio::select! {
            r = rx.recv() => match r {
                Some(r) => r,
                None => return,
            },
            _ = stop.changed() => return,
        };
        let Some(url) = hook.url.load_full() else {
            continue;
        };
        let body = Bytes::from(serde_json::to_vec(&record).unwrap_or_default());
        let client = client.get_or_insert_with(|| crate::proxy::outbound::client(true, TIMEOUT));
        let mut result = "failed";
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(BACKOFF[(attempt - 1) as usize]) => {}
                    _ = stop.changed() => return,
                }
            }
            let req = Request::builder()
                .method(Method::POST)
                .uri((*url).clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::USER_AGENT, "usher")
                .body(Full::new(body.clone()));
            let Ok(req) = req else { break };
            let last = attempt + 1 == ATTEMPTS;
            match tokio::time::timeout(TIMEOUT, client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => {
                    result = "sent";
                    break;
                }
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    let again = status.is_server_error() || status.as_u16() == 429;
                    tracing::warn!(%status, id = record.id, attempt = attempt + 1, retry = again && !last, "feedback webhook refused a record");
                    if !again {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, id = record.id, attempt = attempt + 1, retry = !last, "feedback webhook unreachable");
                }
                Err(_) => {
                    tracing::warn!(
                        id = record.id,
                        attempt = attempt + 1,
                        retry = !last,
                        "feedback webhook timed out"
                    );
                }
            }
        }
        sent.with_label_values(&[result]).inc();
    }
}

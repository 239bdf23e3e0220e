//! The `webhook` issuer: asks an external issuer over HTTP(S).
//!
//! Request: `POST url` with JSON `{"event","identity_hash","idempotency_key"}`
//! (the identity itself is not sent, only its SHA-256), headers
//! `Idempotency-Key` and `X-Usher-Signature: sha256=<hex HMAC-SHA256 of the
//! body>`. The external issuer must be idempotent per key: asked again, it
//! answers the code it gave before. That is what makes retries safe, here
//! and after a crash.
//!
//! Answers: 2xx `{"code": "..."}` -> issued; 409/410 -> sold out; 403/422 ->
//! not eligible (with `"reason"` if given); 408, 429, 5xx, timeouts and
//! connection errors are retried with exponential backoff and jitter, up to
//! `max_attempts`, then "retry later" (the claim stays pending). Any other
//! status is a setup mistake: "retry later" at once, without hammering.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use rand::Rng as _;

use super::key::VoucherKey;
use super::{BoxFuture, Claim, IssueOutcome, VoucherIssuer};
use crate::store::{clip_reason, hex, identity_hash, valid_code};

/// Largest answer read from the issuer.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Where and how patiently to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL of the external issuer.
    pub url: Uri,
    /// Limit on one attempt, from connecting to the end of the answer.
    pub attempt_timeout: Duration,
    /// Attempts per claim (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles each time, with jitter.
    pub backoff_base: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
}

impl WebhookConfig {
    /// Defaults for `url`: 3 s per attempt, 4 attempts, 200 ms doubling to 2 s.
    /// A claim then answers within about 15 s at worst; a visitor waits that
    /// long at most before hearing "retry later".
    pub fn new(url: Uri) -> WebhookConfig {
        WebhookConfig {
            url,
            attempt_timeout: Duration::from_secs(3),
            max_attempts: 4,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// Why the webhook issuer could not be set up.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum WebhookError {
    /// Not an absolute `http://` or `https://` URL.
    #[error("voucher webhook URL must be http:// or https:// with a host")]
    BadUrl,
}

/// Asks an external issuer.
pub struct WebhookIssuer {
    cfg: WebhookConfig,
    key: VoucherKey,
    client: crate::proxy::outbound::OutboundClient,
}

impl std::fmt::Debug for WebhookIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookIssuer")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// How one attempt ended.
enum Attempt {
    Done(IssueOutcome),
    Retry(String),
    GiveUp(String),
}

impl WebhookIssuer {
    /// An issuer posting to `cfg.url`, signing bodies with `key`.
    pub fn new(cfg: WebhookConfig, key: VoucherKey) -> Result<WebhookIssuer, WebhookError> {
        let https = match cfg.url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(WebhookError::BadUrl),
        };
        if cfg.url.authority().is_none() {
            return Err(WebhookError::BadUrl);
        }
        Ok(WebhookIssuer {
            client: crate::proxy::outbound::client(https, cfg.attempt_timeout),
            cfg,
            key,
        })
    }

    async fn ask(&self, claim: &Claim) -> IssueOutcome {
        let body = serde_json::json!({
            "event": claim.event,
            "identity_hash": identity_hash(&claim.identity),
            "idempotency_key": claim.idempotency_key,
        })
        .to_string();
        let mut mac = self.key.mac();
        hmac::Mac::update(&mut mac, body.as_bytes());
        let signature = format!("sha256={}", hex(&hmac::Mac::finalize(mac).into_bytes()));
        let body = Bytes::from(body);
        let attempts = self.cfg.max_attempts.max(1);
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
            let once = self.once(body.clone(), &signature, &claim.idempotency_key);
            match tokio::time::timeout(self.cfg.attempt_timeout, once).await {
                Ok(Attempt::Done(outcome)) => return outcome,
                Ok(Attempt::GiveUp(reason)) => return IssueOutcome::RetryLater(reason),
                Ok(Attempt::Retry(reason)) => last = reason,
                Err(_) => last = "timed out".into(),
            }
            tracing::debug!(attempt, reason = %last, "voucher webhook attempt failed");
        }
        IssueOutcome::RetryLater(format!("voucher webhook: {last} ({attempts} attempts)"))
    }

    /// The wait before attempt `n` (1-based retries): base * 2^(n-1), capped,
    /// then a uniform draw from its upper half, so a crowd of retries spreads.
    fn backoff(&self, n: u32) -> Duration {
        let full = self
            .cfg
            .backoff_base
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(self.cfg.backoff_max);
        let half = full / 2;
        half + full
            .saturating_sub(half)
            .mul_f64(rand::rng().random::<f64>())
    }

    async fn once(&self, body: Bytes, signature: &str, key: &str) -> Attempt {
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.cfg.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "usher")
            .header("idempotency-key", key)
            .header("x-usher-signature", signature)
            .body(Full::new(body));
        let req = match req {
            Ok(r) => r,
            Err(e) => return Attempt::GiveUp(format!("voucher webhook request: {e}")),
        };
        let resp = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(format!("request failed: {e}")),
        };
        let status = resp.status();
        let bytes = match Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
        {
            Ok(c) => c.to_bytes(),
            Err(e) => return Attempt::Retry(format!("reading the answer: {e}")),
        };
        let json: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        classify(status, json)
    }
}

/// Maps an answer to an outcome.
fn classify(status: StatusCode, json: Option<serde_json::Value>) -> Attempt {
    let text = |field: &str| {
        json.as_ref()
            .and_then(|j| j.get(field))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    match status.as_u16() {
        200..=299 => match text("code") {
            Some(code) if valid_code(&code) => Attempt::Done(IssueOutcome::Issued {
                code,
                meta: json.unwrap_or_default(),
            }),
            _ => Attempt::Retry(format!("HTTP {} without a valid code", status.as_u16())),
        },
        409 | 410 => Attempt::Done(IssueOutcome::SoldOut),
        403 | 422 => {
            let reason = text("reason")
                .or_else(|| text("error"))
                .map(|r| clip_reason(&r))
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| format!("refused by the issuer (HTTP {})", status.as_u16()));
            Attempt::Done(IssueOutcome::NotEligible(reason))
        }
        408 | 429 | 500..=599 => Attempt::Retry(format!("HTTP {}", status.as_u16())),
        s => Attempt::GiveUp(format!("voucher webhook answered HTTP {s}")),
    }
}

impl VoucherIssuer for WebhookIssuer {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn issue<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, IssueOutcome> {
        Box::pin(self.ask(claim))
    }
}

//! The one place where failures become responses: every error a phase can
//! return maps to a status, an outcome for the metrics, and a small page.

use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};

use crate::holding::Lang;
use crate::metrics::Outcome;
use crate::proxy::slots::NoSlot;
use crate::proxy::ForwardError;
use crate::{full_body, Body};

/// Why usher answered a request itself instead of forwarding it.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request is malformed or ambiguous; the connection is closed.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request head is too large.
    #[error("request head too large: {0}")]
    HeadTooLarge(&'static str),
    /// The announced body is larger than `server.max_request_body`.
    #[error("request body over the {0}-byte limit")]
    PayloadTooLarge(u64),
    /// The request body stalled for `server.body_read_timeout`.
    #[error("request body stalled for {0:?}")]
    RequestTimeout(Duration),
    /// No origin slot free (in-flight cap reached and the queue full or slow).
    #[error("{0}")]
    OriginBusy(NoSlot),
    /// The origin could not be reached or broke the exchange.
    #[error("origin {kind} error: {detail}")]
    OriginFailed {
        /// Bounded label (`connect`, `reset`, `protocol`, ...).
        kind: &'static str,
        /// The underlying error, for the log.
        detail: String,
    },
    /// Per-client limit reached; retry after this many seconds.
    #[error("too many requests from this client")]
    TooManyRequests(u64),
    /// usher's own path that does not exist.
    #[error("no such usher endpoint")]
    NotFound,
    /// usher's own endpoint asked with a method it does not take.
    #[error("method not allowed here")]
    MethodNotAllowed,
    /// Needs a valid ticket or pass (feedback), and none came.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// Well-framed but unusable input (a feedback post's fields).
    #[error("unprocessable: {0}")]
    Unprocessable(String),
    /// The origin sent no response headers within `origin.response_timeout`.
    #[error("origin sent no response within {0:?}")]
    OriginTimeout(Duration),
}

impl From<ForwardError> for HttpError {
    fn from(e: ForwardError) -> HttpError {
        match e {
            ForwardError::BadRequest(what) => HttpError::BadRequest(what),
            ForwardError::PayloadTooLarge(limit) => HttpError::PayloadTooLarge(limit),
            ForwardError::RequestTimeout(idle) => HttpError::RequestTimeout(idle),
            ForwardError::OriginBusy(no) => HttpError::OriginBusy(no),
            ForwardError::OriginTimeout(after) => HttpError::OriginTimeout(after),
            ForwardError::OriginFailed { kind, detail } => HttpError::OriginFailed { kind, detail },
        }
    }
}

impl HttpError {
    /// The status answered.
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HttpError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            HttpError::OriginBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            HttpError::NotFound => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            HttpError::OriginFailed { .. } => StatusCode::BAD_GATEWAY,
            HttpError::OriginTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// How the metrics count it.
    pub fn outcome(&self) -> Outcome {
        match self {
            HttpError::BadRequest(_)
            | HttpError::HeadTooLarge(_)
            | HttpError::PayloadTooLarge(_)
            | HttpError::RequestTimeout(_)
            | HttpError::TooManyRequests(_)
            | HttpError::NotFound
            | HttpError::MethodNotAllowed
            | HttpError::Forbidden(_)
            | HttpError::Unprocessable(_) => Outcome::Rejected,
            HttpError::OriginBusy(_)
            | HttpError::OriginFailed { .. }
            | HttpError::OriginTimeout(_) => Outcome::OriginError,
        }
    }

    /// Whether the connection must close after the answer (the framing of
    /// what follows cannot be trusted).
    fn closes(&self) -> bool {
        matches!(
            self,
            HttpError::BadRequest(_)
                | HttpError::HeadTooLarge(_)
                | HttpError::PayloadTooLarge(_)
                | HttpError::RequestTimeout(_)
        )
    }

    /// The response for this error.
    pub fn into_response(self, lang: Lang) -> Response<Body> {
        self.into_response_for(lang, false)
    }

    /// The response for this error; with `feedback` (the room takes
    /// feedback), the pages for origin failures carry the report form.
    pub fn into_response_for(self, lang: Lang, feedback: bool) -> Response<Body> {
        let status = self.status();
        let page = crate::holding::error_page_for(status.as_u16(), lang, feedback);
        let mut resp = Response::new(full_body(page));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            // Short: a slot frees within seconds; the page says so too.
            HttpError::OriginBusy(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            HttpError::TooManyRequests(s) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(s));
            }
            _ => {}
        }
        if self.closes() {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

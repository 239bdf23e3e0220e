//! The figures of talking with the line: feedback by category and refused
//! posts by reason, announcements made, webhook forwards.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// Feedback and announcement metrics.
pub struct TalkMetrics {
    /// Feedback stored, by category.
    pub feedback: IntCounterVec,
    /// Feedback posts refused, by reason.
    pub feedback_refused: IntCounterVec,
    /// Announcements that changed the text shown.
    pub announcements: IntCounter,
    /// Feedback forwarded to the webhook, by result.
    pub webhook: IntCounterVec,
}

impl TalkMetrics {
    pub(super) fn new(registry: &Registry) -> TalkMetrics {
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric names are unique");
        };
        let feedback = IntCounterVec::new(
            Opts::new(
                "usher_feedback_total",
                "Feedback from waiting visitors stored, by category",
            ),
            &["category"],
        )
        .expect("valid metric");
        reg(Box::new(feedback.clone()));
        let feedback_refused = IntCounterVec::new(
            Opts::new(
                "usher_feedback_refused_total",
                "Feedback posts refused (no ticket or pass, limits, bad input), by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        reg(Box::new(feedback_refused.clone()));
        let announcements = IntCounter::new(
            "usher_announcements_total",
            "Announcements that changed the text shown to waiting visitors",
        )
        .expect("valid metric");
        reg(Box::new(announcements.clone()));
        let webhook = IntCounterVec::new(
            Opts::new(
                "usher_feedback_webhook_total",
                "Feedback records for room.feedback_webhook, by result (sent, failed, dropped: the queue was full)",
            ),
            &["result"],
        )
        .expect("valid metric");
        for r in ["sent", "failed", "dropped"] {
            webhook.with_label_values(&[r]);
        }
        reg(Box::new(webhook.clone()));
        TalkMetrics {
            webhook,
            feedback,
            feedback_refused,
            announcements,
        }
    }
}

//! The words of talking with the line (announcement time, feedback form,
//! event page link) in Korean and English. Kept apart from `i18n` so each
//! file stays one screenful of texts; reached through `Strings::talk`.

use serde::Serialize;

/// Texts of the announcement, the feedback form and the event page.
///
/// The fields without `serde(skip)` go into the polling script, which
/// shows them after a feedback post.
#[derive(Debug, Serialize)]
pub(crate) struct TalkStrings {
    #[serde(skip)]
    pub t_announced: &'static str,
    #[serde(skip)]
    pub t_feedback: &'static str,
    #[serde(skip)]
    pub t_fb_category: &'static str,
    #[serde(skip)]
    pub t_fb_cant_get_in: &'static str,
    #[serde(skip)]
    pub t_fb_page_error: &'static str,
    #[serde(skip)]
    pub t_fb_voucher: &'static str,
    #[serde(skip)]
    pub t_fb_other: &'static str,
    #[serde(skip)]
    pub t_fb_text: &'static str,
    #[serde(skip)]
    pub t_fb_send: &'static str,
    #[serde(skip)]
    pub t_event: &'static str,
    /// After a post was stored.
    pub fb_ok: &'static str,
    /// After a post over the limits.
    pub fb_limited: &'static str,
    /// After any other refusal or failure.
    pub fb_failed: &'static str,
}

pub(crate) static KO: TalkStrings = TalkStrings {
    t_announced: "안내 시각",
    t_feedback: "문제 알리기",
    t_fb_category: "종류",
    t_fb_cant_get_in: "입장이 안 됩니다",
    t_fb_page_error: "페이지 오류",
    t_fb_voucher: "이용권 문제",
    t_fb_other: "기타",
    t_fb_text: "내용 (500자 이내)",
    t_fb_send: "보내기",
    t_event: "이벤트 안내",
    fb_ok: "접수되었습니다. 감사합니다. 대기 순서는 그대로입니다.",
    fb_limited: "이미 여러 번 보내셨습니다. 잠시 후 다시 시도해 주세요.",
    fb_failed: "보내지 못했습니다. 잠시 후 다시 시도해 주세요.",
};

pub(crate) static EN: TalkStrings = TalkStrings {
    t_announced: "Announced at",
    t_feedback: "Report a problem",
    t_fb_category: "Kind",
    t_fb_cant_get_in: "I can't get in",
    t_fb_page_error: "Page error",
    t_fb_voucher: "Voucher problem",
    t_fb_other: "Other",
    t_fb_text: "What happened (up to 500 characters)",
    t_fb_send: "Send",
    t_event: "About this event",
    fb_ok: "Received, thank you. Your place in line is kept.",
    fb_limited: "You have already sent several reports. Please try again later.",
    fb_failed: "Could not send it. Please try again in a moment.",
};

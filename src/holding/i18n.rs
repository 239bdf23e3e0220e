//! Korean and English texts of the holding and error pages, and the choice
//! between them from `Accept-Language` or an explicit override.
//!
//! Every visible word lives here, so the page template, the polling script
//! (which formats the same numbers in the browser) and the error pages never
//! disagree.

use serde::{Deserialize, Serialize};

use super::RoomState;

/// A language usher's own pages are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Korean: the default, since the event this was built for is Korean.
    #[default]
    Ko,
    /// English.
    En,
}

impl Lang {
    /// Both languages, in a fixed order (index = `self as usize`).
    pub const ALL: [Lang; 2] = [Lang::Ko, Lang::En];

    /// The BCP 47 primary tag: `"ko"` or `"en"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Ko => "ko",
            Lang::En => "en",
        }
    }

    /// Reads a language tag such as `ko`, `en-US` or `KO_kr`; `None` for any
    /// other language or garbage.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let tag = tag.trim();
        let primary = tag.split(['-', '_']).next().unwrap_or("");
        if primary.eq_ignore_ascii_case("ko") {
            Some(Lang::Ko)
        } else if primary.eq_ignore_ascii_case("en") {
            Some(Lang::En)
        } else {
            None
        }
    }

    pub(crate) fn strings(self) -> &'static Strings {
        match self {
            Lang::Ko => &KO,
            Lang::En => &EN,
        }
    }
}

/// Accept-Language headers longer than this are only read up to here: a
/// real browser sends well under 200 bytes, and the parse must stay cheap.
const MAX_ACCEPT_LANGUAGE: usize = 1024;

/// Picks the page language.
///
/// `override_` (the `usher_lang` query parameter or cookie) wins when it names
/// a supported language; otherwise the `Accept-Language` ranges are weighed
/// by their q-values (`q=0` refuses a language, `*` stands for every language
/// not named, ties go to the range listed first); if nothing matches,
/// `default`.
pub fn negotiate(accept_language: Option<&str>, override_: Option<&str>, default: Lang) -> Lang {
    if let Some(lang) = override_.and_then(Lang::from_tag) {
        return lang;
    }
    let Some(header) = accept_language else {
        return default;
    };
    let header = truncate(header, MAX_ACCEPT_LANGUAGE);

    // Per language: best explicit q (thousandths) and where it was listed.
    let mut explicit: [Option<(u16, usize)>; 2] = [None, None];
    let mut star: Option<(u16, usize)> = None;
    for (index, range) in header.split(',').enumerate() {
        let mut parts = range.split(';');
        let tag = parts.next().unwrap_or("").trim();
        let Some(q) = parse_q(parts) else { continue };
        let slot = if tag == "*" {
            &mut star
        } else if let Some(lang) = Lang::from_tag(tag) {
            &mut explicit[lang as usize]
        } else {
            continue;
        };
        if slot.is_none_or(|(best, _)| q > best) {
            *slot = Some((q, index));
        }
    }

    let score = |lang: Lang| explicit[lang as usize].or(star).filter(|(q, _)| *q > 0);
    match (score(Lang::Ko), score(Lang::En)) {
        (None, None) => default,
        (Some(_), None) => Lang::Ko,
        (None, Some(_)) => Lang::En,
        (Some((qk, ik)), Some((qe, ie))) => {
            if qk != qe {
                if qk > qe {
                    Lang::Ko
                } else {
                    Lang::En
                }
            } else if ik != ie {
                if ik < ie {
                    Lang::Ko
                } else {
                    Lang::En
                }
            } else {
                // Both only through `*`.
                default
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads the parameters after a language range; the q-value in thousandths
/// (1000 when absent), or `None` when the q-value is malformed (the range is
/// then ignored, as RFC 9110 asks of invalid ranges).
fn parse_q<'a>(params: impl Iterator<Item = &'a str>) -> Option<u16> {
    let mut q = 1000;
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("q") {
            continue;
        }
        q = parse_qvalue(value.trim())?;
    }
    Some(q)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`
fn parse_qvalue(v: &str) -> Option<u16> {
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) => (i, f),
        None => (v, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Heading and explanation for one room state.
#[derive(Debug)]
pub(crate) struct StateText {
    pub title: &'static str,
    pub text: &'static str,
}

/// Every word of the holding page in one language.
///
/// The fields the browser needs (`lang` and the number formats) are
/// serialised into the polling script, so the page and the script format
/// waits and countdowns the same way.
#[derive(Debug, Serialize)]
pub(crate) struct Strings {
    pub lang: &'static str,
    #[serde(skip)]
    pub t_position: &'static str,
    #[serde(skip)]
    pub t_eta: &'static str,
    #[serde(skip)]
    pub t_progress: &'static str,
    #[serde(skip)]
    pub t_vouchers: &'static str,
    #[serde(skip)]
    pub t_low_chance: &'static str,
    #[serde(skip)]
    pub t_updated: &'static str,
    #[serde(skip)]
    pub t_opens_at: &'static str,
    #[serde(skip)]
    pub t_refresh: &'static str,
    #[serde(skip)]
    pub t_home: &'static str,
    #[serde(skip)]
    pub t_retry: &'static str,
    /// The language's name in itself, for the language switch.
    #[serde(skip)]
    pub native_name: &'static str,
    /// Estimated wait when the server has no honest estimate.
    pub unk: &'static str,
    /// Estimated wait under one minute.
    pub soon: &'static str,
    /// Estimated wait in minutes; `#` is the number.
    pub min: &'static str,
    /// Estimated wait in hours (`#`) and minutes (`%`).
    pub hr: &'static str,
    /// Unit after the day count of a countdown.
    pub day: &'static str,
    /// Shown while the script solves a proof-of-work challenge.
    pub prep: &'static str,
    /// Indexed by `RoomState as usize`.
    #[serde(skip)]
    pub states: [StateText; 6],
    /// Announcement, feedback and event page texts.
    #[serde(flatten)]
    pub talk: &'static super::i18n_talk::TalkStrings,
}

impl Strings {
    pub(crate) fn state(&self, state: RoomState) -> &StateText {
        &self.states[state as usize]
    }
}

pub(crate) static KO: Strings = Strings {
    lang: "ko",
    t_position: "내 대기 순서",
    t_eta: "예상 대기 시간",
    t_progress: "진행률",
    t_vouchers: "남은 수량",
    t_low_chance: "앞에 기다리는 분이 많아 차례가 올 때 남은 수량이 없을 수 있습니다.",
    t_updated: "마지막 갱신",
    t_opens_at: "시작 시각",
    t_refresh: "새로고침",
    t_home: "처음으로",
    t_retry: "다시 시도",
    native_name: "한국어",
    unk: "아직 알 수 없음",
    soon: "1분 이내",
    min: "약 #분",
    hr: "약 #시간 %분",
    day: "일",
    prep: "입장 순서를 준비하고 있습니다…",
    talk: &super::i18n_talk::KO,
    states: [
        StateText {
            title: "대기 중입니다",
            text: "이 페이지를 열어 두세요. 자동으로 갱신되며 차례가 되면 사이트로 이동합니다. \
                   새로고침해도 순서는 유지됩니다.",
        },
        StateText {
            title: "곧 시작합니다",
            text: "대기실에 들어오셨습니다. 시작 시각에 대기실의 모든 분께 무작위로 순서가 \
                   정해지므로 새로고침할 필요가 없습니다.",
        },
        StateText {
            title: "입장이 잠시 멈췄습니다",
            text: "순서는 그대로 유지됩니다. 입장이 다시 시작되면 자동으로 진행됩니다.",
        },
        StateText {
            title: "이벤트가 종료되었습니다",
            text: "지금은 입장을 받지 않습니다. 기다려 주셔서 감사합니다.",
        },
        StateText {
            title: "모두 소진되었습니다",
            text: "준비된 수량이 모두 소진되었습니다. 기다려 주셔서 감사합니다.",
        },
        StateText {
            title: "입장 차례입니다",
            text: "사이트로 이동합니다…",
        },
    ],
};

pub(crate) static EN: Strings = Strings {
    lang: "en",
    t_position: "Your place in line",
    t_eta: "Estimated wait",
    t_progress: "Progress",
    t_vouchers: "Still available",
    t_low_chance: "Many people are ahead of you; there may be none left when your turn comes.",
    t_updated: "Last updated",
    t_opens_at: "Opens at",
    t_refresh: "Refresh",
    t_home: "Home page",
    t_retry: "Try again",
    native_name: "English",
    unk: "unknown yet",
    soon: "under a minute",
    min: "about # min",
    hr: "about # h % min",
    day: "d",
    prep: "Preparing your place…",
    talk: &super::i18n_talk::EN,
    states: [
        StateText {
            title: "You are in line",
            text: "Keep this page open. It updates by itself and takes you to the site when \
                   it is your turn. Reloading does not lose your place.",
        },
        StateText {
            title: "Opening soon",
            text: "You are in the waiting room. At the start everyone here gets a place in \
                   line in random order, so there is no need to refresh.",
        },
        StateText {
            title: "Entry is paused",
            text: "You keep your place. The line moves on by itself when entry resumes.",
        },
        StateText {
            title: "The event is closed",
            text: "No visitors are being let in right now. Thank you for your patience.",
        },
        StateText {
            title: "Sold out",
            text: "Everything has been given out. Thank you for waiting.",
        },
        StateText {
            title: "It is your turn",
            text: "Taking you to the site…",
        },
    ],
};

/// Heading and text of usher's own error answers, by status code.
pub(crate) fn error_text(status: u16, lang: Lang) -> (&'static str, &'static str) {
    match (lang, status) {
        (Lang::Ko, 400) => (
            "잘못된 요청입니다",
            "요청을 처리할 수 없습니다. 주소를 확인한 뒤 다시 시도해 주세요.",
        ),
        (Lang::Ko, 413) => (
            "요청이 너무 큽니다",
            "보내신 내용이 허용된 크기보다 큽니다.",
        ),
        (Lang::Ko, 429) => ("요청이 너무 많습니다", "잠시 기다린 뒤 다시 시도해 주세요."),
        (Lang::Ko, 431) => (
            "요청 헤더가 너무 큽니다",
            "이 사이트의 쿠키를 삭제한 뒤 다시 시도해 주세요.",
        ),
        (Lang::Ko, 502) => (
            "사이트에 연결할 수 없습니다",
            "지금 사이트에 연결하지 못했습니다. 잠시 후 다시 시도해 주세요.",
        ),
        (Lang::Ko, 503) => (
            "접속자가 많습니다",
            "지금 방문자가 많습니다. 잠시 후 다시 시도해 주세요.",
        ),
        (Lang::Ko, 504) => (
            "응답 시간이 초과되었습니다",
            "사이트가 제때 응답하지 않았습니다. 잠시 후 다시 시도해 주세요.",
        ),
        (Lang::Ko, _) => ("문제가 발생했습니다", "잠시 후 다시 시도해 주세요."),
        (Lang::En, 400) => (
            "Bad request",
            "The request could not be understood. Please check the address and try again.",
        ),
        (Lang::En, 413) => (
            "Request too large",
            "What you sent is larger than this site accepts.",
        ),
        (Lang::En, 429) => ("Too many requests", "Please wait a moment and try again."),
        (Lang::En, 431) => (
            "Request headers too large",
            "Please clear this site's cookies and try again.",
        ),
        (Lang::En, 502) => (
            "Site unreachable",
            "We could not reach the site just now. Please try again shortly.",
        ),
        (Lang::En, 503) => (
            "Busy right now",
            "We are handling a lot of visitors. Please retry shortly.",
        ),
        (Lang::En, 504) => (
            "The site took too long",
            "The site did not answer in time. Please try again shortly.",
        ),
        (Lang::En, _) => ("Something went wrong", "Please try again shortly."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_negotiation() {
        let ko = Lang::Ko;
        let en = Lang::En;
        let cases: &[(Option<&str>, Option<&str>, Lang, Lang)] = &[
            (None, None, ko, ko),
            (None, None, en, en),
            (Some("en-US,en;q=0.9"), None, ko, en),
            (Some("ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7"), None, en, ko),
            (Some("en;q=0.5, ko;q=0.8"), None, en, ko),
            (Some("ko;q=0.5, en;q=0.8"), None, ko, en),
            (Some("ko;q=0.8, en;q=0.8"), None, en, ko), // tie: first listed
            (Some("en;q=0.8, ko;q=0.8"), None, ko, en),
            (Some("fr-FR, de;q=0.9"), None, ko, ko), // neither: default
            (Some("fr-FR, de;q=0.9"), None, en, en),
            (Some("*"), None, en, en),
            (Some("*"), None, ko, ko),
            (Some("fr, *;q=0.5"), None, en, en),
            (Some("en;q=0, *"), None, en, ko), // en refused, * covers ko
            (Some("ko;q=0, en;q=0"), None, ko, ko), // both refused: default
            (Some("fr, en;q=0.1"), None, ko, en),
            (Some("EN-gb"), None, ko, en),
            (Some("ko_KR"), None, en, ko),
            (Some("en;q=2, ko;q=0.5"), None, en, ko), // invalid q: range ignored
            (Some("en;q=abc"), None, ko, ko),
            (Some("en;q=0.1234"), None, ko, ko),
            (Some("en;q=1.000"), None, ko, en),
            (Some(";;;,,,=q;"), None, en, en),
            (Some("\u{0}\u{ff}garbage,,;q="), None, ko, ko),
            (Some(""), None, en, en),
            (Some("en"), Some("ko"), en, ko), // override wins
            (Some("ko"), Some("en-US"), ko, en),
            (Some("ko"), Some("fr"), en, ko), // bad override ignored
            (Some("en"), Some("<script>"), ko, en),
        ];
        for (header, over, default, want) in cases {
            assert_eq!(
                negotiate(*header, *over, *default),
                *want,
                "{header:?} {over:?} {default:?}"
            );
        }
        // A huge header is read only up to its bound, without panicking.
        let huge = format!("{}en", "fr;q=0.1,".repeat(10_000));
        assert_eq!(negotiate(Some(&huge), None, Lang::Ko), Lang::Ko);
        let split_char = format!("{}한국어", "x".repeat(1023));
        assert_eq!(negotiate(Some(&split_char), None, Lang::En), Lang::En);
    }
}

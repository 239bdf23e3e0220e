//! The page a browser gets from usher's claim endpoint (`/__usher/voucher`):
//! the holding page's look, Korean with the English line under it, and the
//! one next step (claim, try again, back to the line).

use std::fmt::Write as _;

use bytes::Bytes;

use super::fmt;
use super::page::STYLE;

/// usher's claim endpoint, where the page's forms post.
pub const VOUCHER_PATH: &str = "/__usher/voucher";

/// What a claim came to, as the voucher page and the endpoint's JSON
/// `state` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoucherState<'a> {
    /// An admitted visitor who has not claimed yet: the claim button.
    Claim,
    /// The code issued to this visitor (escaped here).
    Issued(&'a str),
    /// No vouchers left.
    SoldOut,
    /// No valid pass: the visitor has not been let in yet.
    NotAdmitted,
    /// The claim was refused, and why (escaped here).
    NotEligible(&'a str),
    /// The issuer did not answer yet; the claim is kept: try again.
    Pending,
}

impl VoucherState<'_> {
    /// The name in the endpoint's JSON `state`.
    pub fn as_str(self) -> &'static str {
        match self {
            VoucherState::Claim => "claim",
            VoucherState::Issued(_) => "issued",
            VoucherState::SoldOut => "sold_out",
            VoucherState::NotAdmitted => "not_admitted",
            VoucherState::NotEligible(_) => "not_eligible",
            VoucherState::Pending => "pending",
        }
    }
}

/// The voucher page for `state`: its heading in Korean, the same in English,
/// then the code, the reason, or a form or link for what to do next.
pub fn voucher_page(state: VoucherState) -> Bytes {
    let (ko, en) = match state {
        VoucherState::Claim => ("할인권 받기", "Claim your voucher"),
        VoucherState::Issued(_) => ("할인권이 발급되었습니다", "Your voucher"),
        VoucherState::SoldOut => ("할인권이 모두 소진되었습니다", "All vouchers are gone"),
        VoucherState::NotAdmitted => ("아직 입장 전입니다", "Please wait for your turn first"),
        VoucherState::NotEligible(_) => ("발급 대상이 아닙니다", "Not eligible"),
        VoucherState::Pending => (
            "잠시 후 다시 시도해 주세요",
            "Please try again in a few seconds",
        ),
    };
    let mut o = String::with_capacity(STYLE.len() + 1024);
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"ko\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>{en}</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<main>\n<div class=\"card\">\n\
         <h1>{ko}</h1>\n<p lang=\"en\">{en}</p>\n"
    );
    let button = |o: &mut String, label: &str| {
        let _ = writeln!(
            o,
            "<form method=\"post\" action=\"{VOUCHER_PATH}\"><button class=\"btn\">{label}</button></form>"
        );
    };
    match state {
        VoucherState::Claim => button(&mut o, "받기 / Claim"),
        VoucherState::Pending => button(&mut o, "다시 시도 / Try again"),
        VoucherState::Issued(code) => {
            o.push_str("<p class=\"cd\">");
            fmt::push_html_escaped(&mut o, code);
            o.push_str("</p>\n");
        }
        VoucherState::NotEligible(reason) => {
            o.push_str("<p>");
            fmt::push_html_escaped(&mut o, reason);
            o.push_str("</p>\n");
        }
        VoucherState::NotAdmitted => {
            o.push_str("<p><a class=\"btn\" href=\"/\">대기열로 / To the line</a></p>\n");
        }
        VoucherState::SoldOut => {}
    }
    o.push_str("</div>\n</main>\n</body>\n</html>\n");
    Bytes::from(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every state, with sample values.
    const SAMPLES: [VoucherState<'static>; 6] = [
        VoucherState::Claim,
        VoucherState::Issued("CODE-1234"),
        VoucherState::SoldOut,
        VoucherState::NotAdmitted,
        VoucherState::NotEligible("already claimed"),
        VoucherState::Pending,
    ];

    fn page(state: VoucherState) -> String {
        String::from_utf8(voucher_page(state).to_vec()).unwrap()
    }

    #[test]
    fn every_state_renders_in_both_languages_with_the_holding_look() {
        let expect: [(&str, &str, &str); 6] = [
            ("할인권 받기", "Claim your voucher", "받기 / Claim</button>"),
            ("할인권이 발급되었습니다", "Your voucher", "CODE-1234"),
            ("할인권이 모두 소진되었습니다", "All vouchers are gone", ""),
            (
                "아직 입장 전입니다",
                "Please wait for your turn first",
                "href=\"/\">대기열로 / To the line</a>",
            ),
            (
                "발급 대상이 아닙니다",
                "Not eligible",
                "<p>already claimed</p>",
            ),
            (
                "잠시 후 다시 시도해 주세요",
                "Please try again in a few seconds",
                "다시 시도 / Try again</button>",
            ),
        ];
        for (state, (ko, en, extra)) in SAMPLES.into_iter().zip(expect) {
            let p = page(state);
            assert!(p.starts_with("<!doctype html>\n<html lang=\"ko\">"), "{p}");
            assert!(p.contains(&format!("<h1>{ko}</h1>")), "{p}");
            assert!(p.contains(&format!("<p lang=\"en\">{en}</p>")), "{p}");
            assert!(p.contains(&format!("<title>{en}</title>")), "{p}");
            assert!(p.contains(extra), "{state:?}: {p}");
            assert!(p.contains("<meta name=\"robots\" content=\"noindex\">"));
            assert!(p.contains("name=\"viewport\""));
            assert!(p.contains(STYLE));
            assert!(p.contains("<div class=\"card\">"));
            assert!(p.len() < super::super::tests::PAGE_BUDGET);
            // Claiming and trying again post to the endpoint; nothing else
            // carries a form.
            let forms = p.matches("<form method=\"post\" action=\"/__usher/voucher\">");
            let want = usize::from(matches!(state, VoucherState::Claim | VoucherState::Pending));
            assert_eq!(forms.count(), want, "{state:?}");
            assert_eq!(p.matches("<form").count(), want, "{state:?}");
        }
    }

    #[test]
    fn the_code_and_the_reason_are_escaped() {
        let p = page(VoucherState::NotEligible(
            "<script>alert('x')</script> & \"q\"",
        ));
        assert!(
            p.contains(
                "<p>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;</p>"
            ),
            "{p}"
        );
        assert!(!p.contains("<script>"));
        let p = page(VoucherState::Issued("A<b>&\"C"));
        assert!(
            p.contains("<p class=\"cd\">A&lt;b&gt;&amp;&quot;C</p>"),
            "{p}"
        );
        assert!(!p.contains("<b>"));
    }

    #[test]
    fn state_names_are_the_endpoints() {
        let names = SAMPLES.map(VoucherState::as_str);
        assert_eq!(
            names,
            [
                "claim",
                "issued",
                "sold_out",
                "not_admitted",
                "not_eligible",
                "pending"
            ]
        );
    }
}

//! Tests of what talking with the line adds to usher's pages: the report
//! form on the pages for origin failures and the public event notice.

use super::tests::{html, view, PAGE_BUDGET};
use super::*;

#[test]
fn origin_failure_pages_carry_the_report_form_when_a_room_takes_feedback() {
    for lang in Lang::ALL {
        for status in [502, 503, 504] {
            let with = String::from_utf8(error_page_for(status, lang, true).to_vec()).unwrap();
            assert!(with.contains("action=\"/__usher/feedback\""), "{status}");
            assert!(with.contains(lang.strings().talk.t_fb_page_error));
            assert!(with.contains(&format!("name=\"lang\" value=\"{}\"", lang.as_str())));
            assert!(with.len() < PAGE_BUDGET);
            // Rendered once, then shared.
            assert_eq!(
                error_page_for(status, lang, true).as_ptr(),
                error_page_for(status, lang, true).as_ptr()
            );
            assert_eq!(
                error_page_for(status, lang, false),
                error_page(status, lang)
            );
        }
        // A malformed request or a limit: no form.
        for status in [400, 413, 429, 431, 404] {
            assert_eq!(error_page_for(status, lang, true), error_page(status, lang));
        }
        // The holding page brings the same form.
        let page = html(&HoldingPages::default(), lang, &view(RoomState::Queued));
        assert!(page.contains(super::feedback_form::feedback_form(lang.strings())));
    }
}

#[test]
fn the_event_notice_says_how_the_line_works_and_escapes_the_operator() {
    use crate::config::messages::Messages;
    use crate::talk::{Current, Entry, Source};
    let current = Current {
        messages: Messages {
            ko: "<img src=x onerror=alert(1)> 지연".into(),
            en: "Late <b>again</b>".into(),
        },
        updated_at: Some(1_746_097_000),
    };
    let history = [
        Entry {
            messages: current.messages.clone(),
            at: 1_746_097_000,
            source: Source::Admin,
        },
        Entry {
            messages: Messages::both("first & <only>"),
            at: 1_746_090_000,
            source: Source::Config,
        },
    ];
    let v = EventView {
        event: "rush<1>",
        opens_at: Some("2025-05-01T20:00:00+09:00"),
        opens_in_seconds: Some(3_600),
        mode: "fifo",
        prequeue_draw: true,
        stock: Some(5_000),
        vouchers_left: Some(4_200),
        one_per_person: true,
        message: &current,
        history: &history,
    };
    let en = String::from_utf8(event_page(&v, Lang::En).to_vec()).unwrap();
    assert!(en.contains("<h1>rush&lt;1&gt;</h1>"));
    assert!(en.contains("Late &lt;b&gt;again&lt;/b&gt;"));
    assert!(en.contains("first &amp; &lt;only&gt;"));
    assert!(!en.contains("<b>again"));
    assert!(en.contains("First come, first served."));
    assert!(en.contains("Coming early gives no advantage."));
    assert!(en.contains("One voucher per person."));
    assert!(en.contains("<dd>5000</dd>") && en.contains("<dd>3600</dd>"));
    let ko = String::from_utf8(event_page(&v, Lang::Ko).to_vec()).unwrap();
    assert!(ko.contains("&lt;img src=x onerror=alert(1)&gt; 지연"));
    assert!(!ko.contains("<img"));
    let json: serde_json::Value = serde_json::from_slice(&event_json(&v)).unwrap();
    assert_eq!(json["opens_in_seconds"], 3_600);
    assert_eq!(json["stock"], 5_000);
    assert_eq!(json["prequeue_draw"], true);
    assert_eq!(json["message"]["en"], "Late <b>again</b>");
    assert_eq!(json["message"]["updated_at"], 1_746_097_000);
    assert_eq!(json["history"][1]["source"], "config");
}

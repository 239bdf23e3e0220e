//! Tests of the holding page, status JSON, error pages and language choice.

use super::page::MAX_TEMPLATE_BYTES;
use super::*;
use super::{asset, fmt};

// 10 KB: usher's other pages, their inline CSS and the feedback form (about
// 1.5 KB).
pub(super) const PAGE_BUDGET: usize = 10 * 1024;
// 3.5 KB: the holding page, which every waiting visitor loads and reloads;
// its stylesheet and script are files of their own, cached by the browser.
const HOLDING_BUDGET: usize = 3584;

pub(super) fn view(state: RoomState) -> StatusView<'static> {
    StatusView {
        state,
        position: Some(12_345),
        first_position: Some(20_000),
        eta_seconds: Some(1_500),
        refresh_seconds: 5,
        message: "Vouchers are limited to one per person. 1인당 1매로 제한됩니다.",
        messages: Some((
            "1인당 1매로 제한됩니다.",
            "Vouchers are limited to one per person.",
        )),
        message_updated_at: Some(1_746_097_000),
        opens_at: Some("2025-05-01T20:00:00+09:00"),
        opens_in_seconds: Some(3_725),
        vouchers_left: Some(4_200),
        low_chance: true,
        challenge: None,
        return_to: "/event/apply?id=7",
        now_unix: 1_746_097_200, // 2025-05-01T11:00:00Z
    }
}

pub(super) fn html(pages: &HoldingPages, lang: Lang, v: &StatusView) -> String {
    let bytes = pages.render(lang, v);
    String::from_utf8(bytes.to_vec()).expect("page is UTF-8")
}

/// The attribute-less opening tag of the element with this id, e.g. to see
/// whether it carries `hidden`.
fn tag_with_id<'a>(page: &'a str, id: &str) -> &'a str {
    let at = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id}"));
    let start = page[..at].rfind('<').expect("tag start");
    let end = at + page[at..].find('>').expect("tag end");
    &page[start..=end]
}

#[test]
fn every_state_renders_in_both_languages() {
    let pages = HoldingPages::default();
    for lang in Lang::ALL {
        for state in RoomState::ALL {
            let v = view(state);
            let page = html(&pages, lang, &v);
            let texts = lang.strings().state(state);
            assert!(page.starts_with("<!doctype html>"), "{lang:?} {state:?}");
            assert!(page.contains(&format!("<html lang=\"{}\">", lang.as_str())));
            assert!(page.contains(&format!("<h1>{}</h1>", texts.title)));
            assert!(page.contains(texts.text));
            assert!(page.contains(&format!("data-state=\"{}\"", state.as_str())));
            assert!(page.contains("aria-live=\"polite\""));
            assert!(page.contains("<noscript>"));
            let script = asset::script(lang);
            assert!(page.contains(&format!("<script src=\"{}\" defer>", script.path)));
            assert!(page.contains(&format!(
                "<link rel=\"stylesheet\" href=\"{}\">",
                asset::stylesheet().path
            )));
            assert!(std::str::from_utf8(&script.body).is_ok_and(|s| s.contains("/__usher/status")));
            assert!(!page.contains("{{"), "unexpanded placeholder");
            assert!(!page.contains("__USHER_L10N__"));
            assert!(
                !page.to_ascii_lowercase().contains("http-equiv"),
                "no meta refresh"
            );
            assert!(page.trim_end().ends_with("</html>"));
            assert!(
                page.len() < HOLDING_BUDGET,
                "{lang:?} {state:?}: {} bytes",
                page.len()
            );
        }
    }
}

#[test]
fn state_titles_differ_and_need_no_escaping() {
    for lang in Lang::ALL {
        let s = lang.strings();
        for (i, a) in RoomState::ALL.iter().enumerate() {
            for b in &RoomState::ALL[i + 1..] {
                assert_ne!(s.state(*a).title, s.state(*b).title);
                assert_ne!(s.state(*a).text, s.state(*b).text);
            }
            let t = s.state(*a);
            for text in [t.title, t.text] {
                assert_eq!(fmt::html_escaped_len(text), text.len(), "{text}");
            }
        }
    }
    assert_ne!(
        Lang::Ko.strings().state(RoomState::Queued).title,
        Lang::En.strings().state(RoomState::Queued).title
    );
}

#[test]
fn queued_page_shows_place_wait_progress_and_notes() {
    let pages = HoldingPages::default();
    let page = html(&pages, Lang::En, &view(RoomState::Queued));
    assert!(page.contains("<dd id=\"u-pos\">12,345</dd>"));
    assert!(page.contains("<dd id=\"u-eta\">about 25 min</dd>"));
    // (20000 - 12345) / 20000 = 38.3%
    assert!(page.contains("value=\"38\""));
    assert!(page.contains("<b id=\"u-vn\">4,200</b>"));
    assert!(
        page.contains("<time id=\"u-upd\" datetime=\"2025-05-01T11:00:00Z\">11:00:00 UTC</time>")
    );
    assert!(!tag_with_id(&page, "u-queue").contains("hidden"));
    assert!(tag_with_id(&page, "u-cd").contains("hidden"));
    assert!(!tag_with_id(&page, "u-v").contains("hidden"));
    assert!(!tag_with_id(&page, "u-msg").contains("hidden"));
    assert!(
        page.contains("<p class=\"note\" >"),
        "low-chance note shown"
    );
    assert!(page.contains("data-first=\"20000\" data-opens=\"3725\""));
    assert!(page.contains("<a href=\"?usher_lang=ko\" hreflang=\"ko\" lang=\"ko\">한국어</a>"));

    let ko = html(&pages, Lang::Ko, &view(RoomState::Queued));
    assert!(ko.contains("<dd id=\"u-eta\">약 25분</dd>"));
    assert!(ko.contains("<a href=\"?usher_lang=en\" hreflang=\"en\" lang=\"en\">English</a>"));
}

#[test]
fn unknown_wait_is_said_not_invented() {
    let pages = HoldingPages::default();
    let v = StatusView {
        eta_seconds: None,
        position: None,
        first_position: None,
        vouchers_left: None,
        low_chance: false,
        message: "  ",
        ..view(RoomState::Queued)
    };
    let en = html(&pages, Lang::En, &v);
    assert!(en.contains("<dd id=\"u-eta\">unknown yet</dd>"));
    assert!(en.contains("<dd id=\"u-pos\">—</dd>"));
    assert!(en.contains("value=\"0\""));
    assert!(tag_with_id(&en, "u-v").contains("hidden"));
    assert!(tag_with_id(&en, "u-msgb").contains("hidden"));
    // The live region for new announcements is never hidden, and starts
    // empty (the page's text is read with the page, not announced).
    assert!(en.contains("<p class=\"sr\" id=\"u-say\" aria-live=\"polite\"></p>"));
    assert!(tag_with_id(&en, "u-msgw").contains("hidden"));
    assert!(en.contains("<p class=\"note\" hidden>"));
    let ko = html(&pages, Lang::Ko, &v);
    assert!(ko.contains("<dd id=\"u-eta\">아직 알 수 없음</dd>"));
    let json: serde_json::Value = serde_json::from_slice(&status_json(&v)).expect("json");
    assert_eq!(json["eta_known"], false);
    assert!(json["eta_seconds"].is_null());
}

#[test]
fn prequeue_shows_countdown_and_local_time_not_the_place() {
    let pages = HoldingPages::default();
    let page = html(&pages, Lang::En, &view(RoomState::Prequeue));
    assert!(!tag_with_id(&page, "u-cd").contains("hidden"));
    assert!(tag_with_id(&page, "u-queue").contains("hidden"));
    assert!(page.contains("<p class=\"cd\" id=\"u-cdv\">01:02:05</p>"));
    assert!(page.contains(
        "<time id=\"u-at\" datetime=\"2025-05-01T20:00:00+09:00\">2025-05-01 20:00 (UTC+09:00)</time>"
    ));
    let ko = html(
        &pages,
        Lang::Ko,
        &StatusView {
            opens_in_seconds: Some(2 * 86_400 + 61),
            ..view(RoomState::Prequeue)
        },
    );
    assert!(ko.contains(">2일 00:01:01</p>"));
}

#[test]
fn closed_and_sold_out_hide_the_line() {
    let pages = HoldingPages::default();
    for state in [RoomState::Closed, RoomState::SoldOut, RoomState::Admitted] {
        let page = html(&pages, Lang::Ko, &view(state));
        assert!(
            tag_with_id(&page, "u-queue").contains("hidden"),
            "{state:?}"
        );
        assert!(tag_with_id(&page, "u-cd").contains("hidden"), "{state:?}");
        assert!(page.contains("<p class=\"note\" hidden>"), "{state:?}");
    }
}

#[test]
fn message_and_return_to_are_escaped() {
    let pages = HoldingPages::default();
    let attacks = ["/\"><script>alert(1)</script>", "/x' onmouseover='alert(1)"];
    for return_to in attacks {
        let v = StatusView {
            message: "<script>alert('x')</script> & \"quoted\" <img src=x onerror=alert(1)>",
            return_to,
            ..view(RoomState::Queued)
        };
        for lang in Lang::ALL {
            let page = html(&pages, lang, &v);
            assert!(!page.contains("<script>alert"), "{page}");
            assert!(!page.contains("<img"));
            assert!(!page.contains("' onmouseover"));
            assert!(page.contains(
                "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quoted&quot; &lt;img src=x onerror=alert(1)&gt;"
            ));
            // Exactly one script element: ours.
            assert_eq!(page.matches("<script").count(), 1);
        }
    }
    let page = html(
        &pages,
        Lang::En,
        &StatusView {
            return_to: attacks[0],
            ..view(RoomState::Queued)
        },
    );
    assert!(page.contains("data-ret=\"/&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""));
}

#[test]
fn foreign_return_to_becomes_root() {
    for bad in [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "//evil.com",
        "//evil.com/path",
        "/\\evil.com",
        "/\t/evil.com",
        "/\n/evil.com",
        "https://evil.com/",
        "evil.com",
        "",
        " /x",
        "/a b",
        "/a\\b",
    ] {
        assert_eq!(sanitize_return_to(bad), "/", "{bad:?}");
        let v = StatusView {
            return_to: bad,
            ..view(RoomState::Queued)
        };
        let page = html(&HoldingPages::default(), Lang::En, &v);
        assert!(page.contains("data-ret=\"/\""), "{bad:?}");
        assert!(page.contains("<a class=\"btn\" href=\"/\">"), "{bad:?}");
        let json: serde_json::Value = serde_json::from_slice(&status_json(&StatusView {
            state: RoomState::Admitted,
            ..v
        }))
        .expect("json");
        assert_eq!(json["return_to"], "/", "{bad:?}");
    }
    for good in ["/", "/event", "/a/b?c=d&e=%2F%2F#frag", "/%E2%9C%93"] {
        assert_eq!(sanitize_return_to(good), good);
    }
    let long = format!("/{}", "a".repeat(MAX_RETURN_TO));
    assert_eq!(sanitize_return_to(&long), "/");
}

#[test]
fn override_with_unknown_placeholder_names_it() {
    let err = HoldingPages::new(Some("<p>{{position}}</p>\n<p>{{ positon }}</p>{{script}}"))
        .expect_err("typo refused");
    assert_eq!(
        err,
        TemplateError::UnknownPlaceholder {
            name: "positon".into(),
            line: 2
        }
    );
    assert!(err.to_string().contains("{{positon}}"), "{err}");
    assert!(err.to_string().contains("line 2"), "{err}");

    assert_eq!(
        HoldingPages::new(Some("{{script}} {{position")).expect_err("unclosed"),
        TemplateError::Unclosed { line: 1 }
    );
    assert_eq!(
        HoldingPages::new(Some("<p>{{position}}</p>")).expect_err("no script"),
        TemplateError::MissingScript
    );
    let big = format!("{{{{script}}}}{}", " ".repeat(MAX_TEMPLATE_BYTES));
    assert!(matches!(
        HoldingPages::new(Some(&big)),
        Err(TemplateError::TooLarge { .. })
    ));
    let long_name = format!("{{{{script}}}}{{{{{}}}}}", "한".repeat(100));
    match HoldingPages::new(Some(&long_name)) {
        Err(TemplateError::UnknownPlaceholder { name, .. }) => assert!(name.len() <= 64),
        other => panic!("{other:?}"),
    }
}

/// A template that shows every placeholder as `[name=value]`, one a line.
pub(super) fn every_placeholder() -> String {
    PLACEHOLDERS
        .iter()
        .map(|p| format!("[{p}={{{{ {p} }}}}]\n"))
        .collect()
}

#[test]
fn override_template_renders_every_placeholder() {
    let pages = HoldingPages::new(Some(&every_placeholder())).expect("all placeholders known");
    let page = html(&pages, Lang::En, &view(RoomState::Queued));
    assert!(page.contains("[position=12,345]"));
    assert!(page.contains("[eta=about 25 min]"));
    assert!(page.contains("[progress_percent=38]"));
    assert!(page.contains("[state=queued]"));
    assert!(page.contains("[lang=en]"));
    assert!(page.contains("[state_title=You are in line]"));
    assert!(page.contains("[updated=11:00:00 UTC]"));
    assert!(page.contains("[return_to=/event/apply?id=7]"));
    assert!(page.contains("[queue_hidden=]"));
    assert!(page.contains("[countdown_hidden=hidden]"));
    assert!(page.contains("[script=<div id=\"u-data\""));
    assert!(!page.contains("{{"));
    // Braces that are not placeholders are left alone.
    let pages = HoldingPages::new(Some("a { b } c }} {{script}}")).expect("ok");
    assert!(html(&pages, Lang::Ko, &view(RoomState::Paused)).starts_with("a { b } c }} <div"));
}

#[test]
fn script_and_stylesheet_are_files_named_by_their_content() {
    for lang in Lang::ALL {
        let page = html(&HoldingPages::default(), lang, &view(RoomState::Queued));
        let file = asset::script(lang);
        // Ours and on this host only; exactly one script element.
        assert_eq!(page.matches("<script").count(), 1);
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
        let name = file
            .path
            .strip_prefix(ASSETS_PREFIX)
            .expect("under the prefix");
        let hash = &file.etag[1..file.etag.len() - 1];
        assert_eq!(name, format!("holding.{}.{hash}.js", lang.as_str()));
        assert!(hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
        let script = std::str::from_utf8(&file.body).expect("UTF-8");
        // Still safe inside a `<script>` element: no `</` may close it.
        assert!(!script.contains("</"), "script must not contain `</`");
        assert!(!script.contains("__USHER_L10N__"));
        assert!(script.contains("Accept:\"application/json\""));
        assert!(script.contains("credentials:\"same-origin\""));
        assert_eq!(file.content_type, "text/javascript; charset=utf-8");
    }
    let ko = std::str::from_utf8(&asset::script(Lang::Ko).body).expect("UTF-8");
    assert!(ko.contains("\"unk\":\"아직 알 수 없음\""));
    assert!(ko.contains("\"min\":\"약 #분\""));
    assert_ne!(asset::script(Lang::Ko).path, asset::script(Lang::En).path);
    let css = asset::stylesheet();
    assert_eq!(&css.body[..], super::page::STYLE.as_bytes());
    assert_eq!(css.content_type, "text/css; charset=utf-8");
}

#[test]
fn an_asset_is_found_by_its_name_under_any_hash_but_current_only_under_ours() {
    for file in [
        asset::stylesheet(),
        asset::script(Lang::Ko),
        asset::script(Lang::En),
    ] {
        let (found, current) = find_asset(&file.path).expect("its own path");
        assert!(std::ptr::eq(found, file) && current);
        // Another version's page (a rolling upgrade): this file, not current.
        let hash = &file.etag[1..file.etag.len() - 1];
        let other = file.path.replace(hash, "0123456789ab");
        let (found, current) = find_asset(&other).expect("another hash");
        assert!(std::ptr::eq(found, file) && !current);
    }
    for wrong in [
        "/__usher/assets/holding.css",
        "/__usher/assets/holding..css",
        "/__usher/assets/holding.xyz.css",
        "/__usher/assets/holding.fr.0123.js",
        "/__usher/assets/holding.ko.0123.css",
        "/__usher/assets/../status",
        "/__usher/status",
        "/holding.0123.css",
    ] {
        assert!(find_asset(wrong).is_none(), "{wrong}");
    }
}

#[test]
fn status_json_has_exactly_the_specified_shape() {
    let v = StatusView {
        message: "line\n\"two\"\t<b>&\u{1}\u{2028} 한국어",
        ..view(RoomState::Queued)
    };
    let body = status_json(&v);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
    let obj = json.as_object().expect("object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "eta_known",
            "eta_seconds",
            "message",
            "message_updated_at",
            "messages",
            "opens_at",
            "position",
            "refresh_seconds",
            "state",
            "vouchers_left"
        ]
    );
    assert_eq!(json["state"], "queued");
    assert_eq!(json["position"], 12_345);
    assert_eq!(json["eta_seconds"], 1_500);
    assert_eq!(json["eta_known"], true);
    assert_eq!(json["refresh_seconds"], 5);
    assert_eq!(json["message"], v.message);
    assert_eq!(json["opens_at"], "2025-05-01T20:00:00+09:00");
    assert_eq!(json["vouchers_left"], 4_200);
    assert_eq!(json["messages"]["ko"], "1인당 1매로 제한됩니다.");
    assert_eq!(
        json["messages"]["en"],
        "Vouchers are limited to one per person."
    );
    assert_eq!(json["message_updated_at"], "2025-05-01T10:56:40Z");
    assert!(
        !body.windows(3).any(|w| w == b"<b>"),
        "angle brackets escaped"
    );

    let unknown = StatusView {
        position: None,
        eta_seconds: None,
        opens_at: None,
        vouchers_left: None,
        refresh_seconds: 0,
        message: "",
        ..view(RoomState::SoldOut)
    };
    let json: serde_json::Value = serde_json::from_slice(&status_json(&unknown)).expect("json");
    assert_eq!(json["state"], "sold_out");
    for key in ["position", "eta_seconds", "opens_at", "vouchers_left"] {
        assert!(json[key].is_null(), "{key}");
    }
    assert_eq!(json["refresh_seconds"], 1, "never ask for a zero interval");
    assert_eq!(json.as_object().map(|o| o.len()), Some(10));

    for state in RoomState::ALL {
        let json: serde_json::Value =
            serde_json::from_slice(&status_json(&view(state))).expect("json");
        assert_eq!(json["state"], state.as_str());
    }
}

#[test]
fn admitted_json_carries_only_state_and_return_to() {
    let body = status_json(&StatusView {
        return_to: "/a?\"b\"</script>",
        ..view(RoomState::Admitted)
    });
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"state": "admitted", "return_to": "/a?\"b\"</script>"})
    );
}

#[test]
fn renders_use_one_allocation() {
    let pages = HoldingPages::default();
    let worst = "<&>\"'".repeat(400);
    let views = [
        view(RoomState::Queued),
        StatusView {
            position: Some(u64::MAX),
            first_position: Some(u64::MAX),
            eta_seconds: Some(u64::MAX),
            vouchers_left: Some(u64::MAX),
            opens_in_seconds: Some(u64::MAX),
            now_unix: u64::MAX,
            refresh_seconds: u32::MAX,
            message: &worst,
            opens_at: Some(&worst),
            return_to: "/<&>\"'<&>\"'<&>\"'",
            ..view(RoomState::Prequeue)
        },
        StatusView {
            message: "",
            opens_at: None,
            ..view(RoomState::Paused)
        },
        StatusView {
            challenge: Some((&worst, u32::MAX)),
            ..view(RoomState::Queued)
        },
    ];
    for v in &views {
        for lang in Lang::ALL {
            let out = pages.render(lang, v);
            assert!(
                out.len() <= pages.capacity(lang, v),
                "{lang:?} {:?}",
                v.state
            );
        }
        for state in RoomState::ALL {
            let v = StatusView { state, ..*v };
            assert!(status_json(&v).len() <= json::capacity(&v), "{state:?}");
        }
    }
    // Repeated renders of the same view are identical (the second from
    // the moment the first kept).
    assert_eq!(
        pages.render(Lang::Ko, &views[0]),
        pages.render(Lang::Ko, &views[0])
    );
}

#[test]
fn error_pages_are_prerendered_friendly_and_small() {
    for lang in Lang::ALL {
        for status in [400, 413, 429, 431, 502, 503, 504, 500, 418] {
            let page = error_page(status, lang);
            let text = std::str::from_utf8(&page).expect("UTF-8");
            let (title, body) = super::i18n::error_text(status, lang);
            assert!(text.contains(&format!("<h1>{title}</h1>")), "{status}");
            assert!(text.contains(body));
            assert!(text.contains(&format!("<html lang=\"{}\">", lang.as_str())));
            assert!(!text.contains("{{") && !text.contains("<script"));
            assert!(page.len() < PAGE_BUDGET);
            // Served from memory: the same buffer every time.
            assert_eq!(error_page(status, lang).as_ptr(), page.as_ptr());
        }
        assert!(
            std::str::from_utf8(&error_page(503, lang)).is_ok_and(|t| t.contains("<title>503 · "))
        );
    }
    assert_ne!(error_page(503, Lang::Ko), error_page(503, Lang::En));
    assert_ne!(error_page(502, Lang::En), error_page(504, Lang::En));
    assert!(
        std::str::from_utf8(&error_page(503, Lang::En)).is_ok_and(|t| t.contains("retry shortly"))
    );
}

#[test]
fn a_challenge_reaches_the_json_and_the_page_script() {
    let token = "AQMCazEAAAAAAAAAAQ.c2lnbmF0dXJlLXRhZw";
    let v = StatusView {
        position: None,
        challenge: Some((token, 16)),
        ..view(RoomState::Queued)
    };
    let json: serde_json::Value = serde_json::from_slice(&status_json(&v)).expect("json");
    assert_eq!(json["state"], "queued");
    assert_eq!(json["challenge"], token);
    assert_eq!(json["difficulty"], 16);
    assert!(json["position"].is_null());
    let page = html(&HoldingPages::default(), Lang::Ko, &v);
    assert!(page.contains(&format!("data-pow=\"{token}\" data-bits=\"16\"")));
    assert!(
        std::str::from_utf8(&asset::script(Lang::Ko).body)
            .is_ok_and(|s| s.contains("입장 순서를 준비하고 있습니다")),
        "the script's text"
    );
    // Without one, the JSON keeps its usual shape and the page's attributes are empty.
    let plain = view(RoomState::Queued);
    let json: serde_json::Value = serde_json::from_slice(&status_json(&plain)).expect("json");
    assert!(json.get("challenge").is_none() && json.get("difficulty").is_none());
    let page = html(&HoldingPages::default(), Lang::En, &plain);
    assert!(page.contains("data-pow=\"\" data-bits=\"\""));
    assert!(std::str::from_utf8(&asset::script(Lang::En).body)
        .is_ok_and(|s| s.contains("Preparing your place")));
}

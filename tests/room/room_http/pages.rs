//! Holding pages and JSON for apps, modes changed live through the admin API,
//! bypass rules and protected prefixes, the language switch.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{header, Request};

use super::harness::*;

#[tokio::test]
async fn full_room_holds_newcomers_with_html_or_json() {
    let u = start(&format!("max_active_users = 1\nnew_users_per_minute = 60\nburst = 1\nrefresh = \"2s\"\nmessage = \"<b>hi</b>\"\n{HIGH_LIMITS}")).await;
    let inside = u.get("/movies/1", None).await;
    assert!(inside.origin, "the first visitor goes straight in");
    let pass = jar(&inside.cookies);
    assert!(pass.starts_with("usher_pass="), "{pass}");
    // usher's own cookies never reach the origin
    let again = u.get("/movies/1", Some(&format!("{pass}; site=1"))).await;
    assert!(again.origin);
    assert_eq!(again.body, "site=1");

    let held = u.get("/movies/2?x=1", None).await;
    assert_eq!(
        (held.status, held.state.as_deref(), held.origin),
        (200, Some("queued"), false)
    );
    assert!(
        held.body.contains("&lt;b&gt;hi&lt;/b&gt;"),
        "the operator's message, escaped"
    );
    assert!(held
        .cookies
        .iter()
        .any(|c| c.starts_with("usher_ticket=") && c.contains("HttpOnly")));
    let ticket = jar(&held.cookies);

    // apps ask for JSON on any protected URL, or poll the status endpoint
    let mut r = Request::get(format!("http://{}/api/movies", u.addr));
    r = r
        .header(header::ACCEPT, "application/json")
        .header(header::COOKIE, &ticket);
    let json = u.send(r, "").await;
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(v["state"], "queued");
    assert_eq!(v["position"], 0);
    assert_eq!(
        v["refresh_seconds"], 1,
        "next in line: poll again within a second (refresh is 2 s further back)"
    );
    assert_eq!(v["message"], "<b>hi</b>");
    for key in ["eta_seconds", "eta_known", "opens_at"] {
        assert!(v.get(key).is_some(), "{key} in {v}");
    }
    let status = u.get("/__usher/status", Some(&ticket)).await;
    let s: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(s["position"], 0, "the same place, kept across reloads");
    assert_eq!(u.get("/__usher/nothing", None).await.status, 404);
    assert_eq!(
        u.hits.load(Ordering::SeqCst),
        2,
        "nothing else reached the origin"
    );

    // the origin frees the slot; the visitor in line is let in on a later poll
    let out = u.get("/checkout", Some(&pass)).await;
    assert!(
        out.origin
            && out
                .cookies
                .iter()
                .any(|c| c.starts_with("usher_pass=;") || c.contains("Max-Age=0"))
    );
    let mut admitted = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = u.get("/__usher/status", Some(&ticket)).await;
        if s.body.contains("\"admitted\"") {
            admitted = Some(s);
            break;
        }
    }
    let admitted = admitted.expect("admitted once the slot freed");
    let new_pass = jar(&admitted.cookies);
    assert!(new_pass.contains("usher_pass="));
    assert!(u.get("/movies/2", Some(&new_pass)).await.origin);
    u.stop().await;
}

#[tokio::test]
async fn modes_change_live_through_the_admin_api() {
    let u = start(&format!(
        "max_active_users = 100\nnew_users_per_minute = 6000\nburst = 100\n{HIGH_LIMITS}"
    ))
    .await;
    assert!(u.get("/", None).await.origin);
    let paused = u.admin("/admin/pause", "").await;
    assert_eq!(paused["settings"]["mode"], "paused");
    let held = u.get("/", None).await;
    assert_eq!(held.state.as_deref(), Some("paused"));
    let ticket = jar(&held.cookies);
    let resumed = u.admin("/admin/resume", "").await;
    assert_eq!(resumed["settings"]["mode"], "fifo");
    let mut in_again = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if u.get("/__usher/status", Some(&ticket))
            .await
            .body
            .contains("admitted")
        {
            in_again = true;
            break;
        }
    }
    assert!(in_again, "the paused visitor is admitted after resume");

    let closed = u
        .admin(
            "/admin/room",
            r#"{"mode":"closed","message":"see you tomorrow"}"#,
        )
        .await;
    assert_eq!(closed["settings"]["mode"], "closed");
    let c = u.get("/", None).await;
    assert_eq!(c.state.as_deref(), Some("closed"));
    assert!(c.body.contains("see you tomorrow"));
    let bad = u.admin("/admin/room", r#"{"mode":"sideways"}"#).await;
    assert!(bad["error"].as_str().unwrap().contains("sideways"));
    let unknown = u.admin("/admin/room", r#"{"speed":3}"#).await;
    assert!(unknown["error"].is_string());

    u.admin("/admin/room", r#"{"mode":"passthrough"}"#).await;
    let p = u.get("/", None).await;
    assert!(p.origin && p.cookies.iter().any(|c| c.starts_with("usher_pass=")));
    let reset = u.admin("/admin/room", r#"{"reset":true}"#).await;
    assert_eq!(reset["settings"]["mode"], "fifo");
    assert_eq!(reset["overrides"], serde_json::json!({}));

    let status: serde_json::Value = {
        let a = u
            .send(
                Request::get(format!("http://{}/admin/status", u.admin))
                    .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}")),
                "",
            )
            .await;
        serde_json::from_str(&a.body).unwrap()
    };
    assert!(status["room"]["issued"].as_u64().unwrap() >= 1);
    let drained = u.admin("/admin/drain", "").await;
    assert_eq!(drained["draining"], true);
    let ready = u
        .send(Request::get(format!("http://{}/readyz", u.admin)), "")
        .await;
    assert_eq!(ready.status, 503);
    u.stop().await;
}

#[tokio::test]
async fn bypass_rules_and_protected_prefixes() {
    let u = start(&format!(
        "max_active_users = 1\nnew_users_per_minute = 60\nburst = 1\nprotect = [\"/coupon\", \"/api/\"]\n\
         bypass_paths = [\"/coupon/static/\"]\nbypass_header = \"X-Usher-Bypass\"\nbypass_secret_file = \"bypass.secret\"\n{HIGH_LIMITS}"
    ))
    .await;
    assert!(u.get("/coupon", None).await.origin, "first visitor in");
    for p in [
        "/coupon",
        "/COUPON",
        "//coupon",
        "/%63oupon",
        "/x/../coupon/claim",
        "/coupon;jsessionid=1",
        "/api/x",
    ] {
        let a = u.get(p, None).await;
        assert_eq!(a.state.as_deref(), Some("queued"), "{p} is protected");
    }
    assert!(
        u.get("/", None).await.origin,
        "unprotected paths go straight through"
    );
    assert!(
        u.get("/coupons", None).await.origin,
        "a prefix is not a substring match"
    );
    assert!(
        u.get("/coupon/static/app.js", None).await.origin,
        "bypass paths skip the room"
    );
    let mut r = Request::get(format!("http://{}/coupon", u.addr));
    r = r.header("x-usher-bypass", "a-long-enough-shared-secret");
    let partner = u.send(r, "").await;
    assert!(partner.origin, "the shared secret skips the room");
    let mut r = Request::get(format!("http://{}/coupon", u.addr));
    r = r.header("x-usher-bypass", "a-long-enough-shared-secreX");
    assert!(!u.send(r, "").await.origin, "a wrong secret does not");
    u.stop().await;
}

#[tokio::test]
async fn language_switch_and_negotiation() {
    let u = start(&format!(
        "max_active_users = 1\nnew_users_per_minute = 60\nburst = 1\n{HIGH_LIMITS}"
    ))
    .await;
    u.get("/", None).await;
    let ko = u.get("/", None).await;
    assert!(ko.body.contains("lang=\"ko\""));
    let mut r = Request::get(format!("http://{}/", u.addr));
    r = r.header(header::ACCEPT_LANGUAGE, "en-US,en;q=0.9");
    assert!(u.send(r, "").await.body.contains("lang=\"en\""));
    let switched = u.get("/?usher_lang=en", None).await;
    assert!(switched.body.contains("lang=\"en\""));
    let lang = switched
        .cookies
        .iter()
        .find(|c| c.starts_with("usher_lang=en"))
        .expect("remembered");
    let again = u.get("/", Some(lang.split(';').next().unwrap())).await;
    assert!(again.body.contains("lang=\"en\""));
    u.stop().await;
}

/// The value of attribute `attr` on the first element that has it.
fn attr_value<'a>(page: &'a str, attr: &str) -> &'a str {
    let at = page.find(&format!("{attr}=\"")).expect(attr) + attr.len() + 2;
    page[at..].split('"').next().expect("closing quote")
}

#[tokio::test]
async fn the_pages_script_and_stylesheet_are_files_cached_alike_for_everyone() {
    let u = start(&format!("mode = \"paused\"\n{HIGH_LIMITS}")).await;
    let held = u.get("/movies/1", None).await;
    assert_eq!(held.state.as_deref(), Some("paused"));
    let script = attr_value(&held.body, "src").to_owned();
    let style = held
        .body
        .split("<link rel=\"stylesheet\" ")
        .nth(1)
        .map(|rest| attr_value(rest, "href").to_owned())
        .expect("a stylesheet link");
    assert!(script.starts_with("/__usher/assets/holding.ko.") && script.ends_with(".js"));
    assert!(style.starts_with("/__usher/assets/holding.") && style.ends_with(".css"));
    // The page is light: the files are fetched once per browser.
    assert!(held.body.len() < 4096, "{} bytes", held.body.len());

    for (path, ctype, inside) in [
        (&script, "text/javascript; charset=utf-8", "/__usher/status"),
        (&style, "text/css; charset=utf-8", "box-sizing"),
    ] {
        let a = u.get(path, None).await;
        assert_eq!(a.status, 200, "{path}");
        assert!(a.body.contains(inside), "{path}");
        assert_eq!(a.headers[header::CONTENT_TYPE], ctype);
        assert_eq!(
            a.headers[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        // Alike for everyone: no ticket, no cookie, no room state.
        assert!(a.cookies.is_empty() && a.state.is_none(), "{path}");
        let etag = a.headers[header::ETAG].to_str().unwrap().to_owned();
        assert!(path.contains(etag.trim_matches('"')), "{path} {etag}");
        // A browser that has it is told so, with no body.
        let r = Request::get(format!("http://{}{path}", u.addr))
            .header(header::IF_NONE_MATCH, format!("W/\"x\", {etag}"));
        let again = u.send(r, "").await;
        assert_eq!((again.status, again.body.as_str()), (304, ""), "{path}");
        // A page from a node of another version: this file, never cached.
        let hash = etag.trim_matches('"');
        let other = u.get(&path.replace(hash, "0123456789ab"), None).await;
        assert_eq!((other.status, other.body.as_str()), (200, a.body.as_str()));
        assert_eq!(other.headers[header::CACHE_CONTROL], "no-store");
        assert!(!other.headers.contains_key(header::ETAG));
        let post = Request::post(format!("http://{}{path}", u.addr));
        assert_eq!(u.send(post, "").await.status, 405, "{path}");
    }
    let english = u.get("/movies/1?usher_lang=en", None).await;
    let en = attr_value(&english.body, "src");
    assert!(en.starts_with("/__usher/assets/holding.en.") && en != script);
    assert!(u.get(en, None).await.body.contains("Preparing your place"));
    for missing in [
        "/__usher/assets/holding.css",
        "/__usher/assets/holding.fr.0123.js",
        "/__usher/assets/other.js",
    ] {
        assert_eq!(u.get(missing, None).await.status, 404, "{missing}");
    }
    assert_eq!(
        u.hits.load(Ordering::SeqCst),
        0,
        "nothing reached the origin"
    );
    u.stop().await;
}

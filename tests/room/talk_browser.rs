//! A real browser waiting in line: headless Chromium holds the holding page
//! (the built-in template plus a probe script that counts the page's polls
//! and every change to the announcement's live region) while the operator
//! announces something new. The page shows the new text in the browser's
//! language without a reload, with its time, and its live region (empty
//! at load) changed exactly once across many polls, so a screen reader
//! reads it once. Runs
//! when `chromium` is installed, and says so when it is not.

use crate::support as common;

use std::time::{Duration, Instant};

use common::browser;
use common::clients::{admin_get, admin_post, exchange};
use common::origin::Origin;
use common::process::UsherProcess;
use common::TempDir;

/// Counts polls (fetch calls) and changes of the live region `#u-say` into attributes
/// of `<body>`, for the dumped DOM to tell. Placed before `{{script}}` so
/// it wraps `fetch` before the page's script first polls.
const PROBE: &str = r#"<script>
(function(){var b=document.body,polls=0,changes=0,f=window.fetch;
window.fetch=function(){b.setAttribute("data-polls",++polls);return f.apply(this,arguments)};
new MutationObserver(function(){b.setAttribute("data-msg-changes",++changes)})
.observe(document.getElementById("u-say"),{childList:true,characterData:true,subtree:true})})();
</script>
"#;

fn attr(dom: &str, name: &str) -> Option<u64> {
    let at = dom.find(&format!("{name}=\""))? + name.len() + 2;
    dom[at..].split('"').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_browser_shows_the_new_announcement_once_without_a_reload() {
    let Some(chromium) = browser::chromium() else {
        eprintln!("skipped: no chromium (apt-get install chromium) for the real-browser test");
        return;
    };
    let origin = Origin::ok().await;
    let dir = TempDir::new("talk-browser");
    let profile = dir.path().join("profile");
    let template = include_str!("../../src/holding/assets/holding.html").replacen(
        "{{script}}",
        &format!("{PROBE}{{{{script}}}}"),
        1,
    );
    let template = dir.write("holding.html", &template);
    // One place, taken below, so the browser waits near the head of the
    // line: its polls are long polls held about a second each (real time,
    // while the browser's virtual clock stands still).
    let room = format!(
        "[room]\nmode = \"fifo\"\nmax_active_users = 1\nnew_users_per_minute = 1\n\
         session_duration = \"10m\"\nrefresh = \"1s\"\n\
         messages = {{ ko = \"곧 시작합니다\", en = \"Starting soon\" }}\n\
         template = \"{}\"\n[room.limits]\ntickets_per_minute_per_ip = 100000\n\
         requests_per_second_per_ip = 0\n",
        template.display()
    );
    let u = UsherProcess::spawn(dir, &common::config(origin.addr, "", "", &room)).await;
    let first = exchange(
        u.addr(),
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(first
        .head
        .get_all("set-cookie")
        .iter()
        .any(|c| c.starts_with("usher_pass=")));

    let url = format!("http://127.0.0.1:{}/", u.addr().port());
    let browsing = tokio::task::spawn_blocking(move || {
        browser::dump_dom(
            chromium,
            &url,
            &profile,
            &["--accept-lang=en-US,en", "--virtual-time-budget=12000"],
        )
    });

    // Once the browser holds a ticket and has polled for a while, announce.
    let started = Instant::now();
    loop {
        let m = admin_get(u.admin(), "/metrics").await.text();
        if m.lines().any(|l| l == "usher_tickets_issued_total 1") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the browser never got a ticket"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = admin_post(
        u.admin(),
        "/admin/message",
        r#"{"ko":"10분 늦게 시작합니다","en":"Starting 10 minutes late"}"#,
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text());

    let dom = browsing.await.unwrap();
    let polls = attr(&dom, "data-polls").unwrap_or(0);
    assert!(polls >= 5, "the page polled {polls} times:\n{dom}");
    assert!(
        dom.contains(r#"<p id="u-msg">Starting 10 minutes late</p>"#),
        "{dom}"
    );
    // Screen readers were told once, though every poll carried the text.
    assert!(
        dom.contains(r#"<p class="sr" id="u-say" aria-live="polite">Starting 10 minutes late</p>"#),
        "{dom}"
    );
    assert_eq!(attr(&dom, "data-msg-changes"), Some(1), "{dom}");
    // Its time moved to the announcement's and is shown.
    let stamp = r#"id="u-msgw""#;
    let at = dom.find(stamp).expect("time line");
    let line = &dom[dom[..at].rfind('<').unwrap()..at + dom[at..].find('>').unwrap()];
    assert!(!line.contains("hidden"), "{line}");
    // The page never reloaded: the probe's counters survived.
    assert!(dom.contains("data-state=\"queued\""), "{dom}");
}

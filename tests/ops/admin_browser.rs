//! A real browser against the admin API: headless Chromium opens a page on
//! another site (`evil.example`, mapped to 127.0.0.1) whose script tries
//! every way a page has to reach `127.0.0.1:ADMIN` — a CORS fetch, a
//! `no-cors` fetch, a fetch that needs a preflight, a form and a
//! `text/plain` form spelling JSON. usher's log shows each attempt arrived
//! and was refused; the room is unchanged. Runs when `chromium` is
//! installed (`apt-get install chromium`), and says so when it is not.

use crate::support as common;

use std::net::SocketAddr;

use common::browser;
use common::clients::admin_get;
use common::origin::{Origin, Reply};
use common::process::UsherProcess;
use common::TempDir;

const ROOM: &str = "[room]\nmode = \"fifo\"\nmax_active_users = 10\nnew_users_per_minute = 60\n";

/// The attacker's page, aimed at the admin listener at `admin`.
fn evil_page(admin: SocketAddr) -> String {
    format!(
        r#"<!doctype html><title>waiting</title>
<iframe name="f1"></iframe><iframe name="f2"></iframe>
<form id="a" method="post" action="http://{admin}/admin/drain" target="f1"><input name="x" value="1"></form>
<form id="b" method="post" enctype="text/plain" action="http://{admin}/admin/room" target="f2"><input name='{{"mode":"closed","message":"' value='"}}'></form>
<script>
const A = "http://{admin}";
const out = [];
async function attempt(name, url, init) {{
  try {{ const r = await fetch(url, init); out.push(name + ":" + r.status); }}
  catch (e) {{ out.push(name + ":blocked"); }}
}}
(async () => {{
  await attempt("cors", A + "/admin/room", {{method: "POST", body: '{{"mode":"closed"}}'}});
  await attempt("nocors", A + "/admin/pause", {{method: "POST", mode: "no-cors"}});
  await attempt("preflighted", A + "/admin/pause", {{method: "POST",
    headers: {{"Content-Type": "application/json", "Authorization": "Bearer guessed"}}, body: "{{}}"}});
  document.getElementById("a").submit();
  document.getElementById("b").submit();
  setTimeout(() => {{ document.title = "done " + out.join(" "); }}, 1500);
}})();
</script>"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_in_a_real_browser_cannot_change_the_room() {
    let Some(browser) = browser::chromium() else {
        eprintln!("skipped: no chromium (apt-get install chromium) for the real-browser test");
        return;
    };
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let dir = TempDir::new("browser");
    let profile = dir.path().join("profile");
    let u = UsherProcess::spawn(dir, &common::config(unused, "", "", ROOM)).await;
    let page = evil_page(u.admin());
    let evil = Origin::start(move |_| Reply::Full {
        status: 200,
        headers: vec![("Content-Type".into(), "text/html; charset=utf-8".into())],
        body: page.clone().into_bytes(),
    })
    .await;
    let url = format!("http://evil.example:{}/", evil.addr.port());
    let dom = tokio::task::spawn_blocking({
        let browser = browser.to_string();
        move || {
            browser::dump_dom(
                &browser,
                &url,
                &profile,
                &[
                    "--host-resolver-rules=MAP evil.example 127.0.0.1",
                    "--virtual-time-budget=10000",
                ],
            )
        }
    })
    .await
    .unwrap();
    assert!(evil.count() >= 1, "chromium never loaded the page");
    // The page ran: the CORS fetch could not read an answer (no CORS header).
    assert!(
        dom.contains("done "),
        "the page's script did not finish:\n{dom}"
    );
    assert!(dom.contains("cors:blocked"), "{dom}");
    assert!(dom.contains("preflighted:blocked"), "{dom}");

    // The room is as it was ...
    let r = admin_get(u.admin(), "/admin/status").await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["room"]["settings"]["mode"], "fifo", "{}", v["room"]);
    assert_eq!(v["room"]["overrides"], serde_json::json!({}));
    assert_eq!(v["room"]["draining"], false, "{}", v["room"]);

    // ... though every attempt reached usher: each was refused as a browser's.
    let refused: Vec<serde_json::Value> = u
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "admin request refused")
        .collect();
    let seen = |method: &str, path: &str| {
        refused.iter().any(|v| {
            v["method"] == method
                && v["path"] == path
                && v["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("web browser"))
        })
    };
    for (method, path) in [
        ("POST", "/admin/room"),     // the CORS fetch and the text/plain form
        ("POST", "/admin/pause"),    // the no-cors fetch
        ("OPTIONS", "/admin/pause"), // the preflight; the real POST never came
        ("POST", "/admin/drain"),    // the form
    ] {
        assert!(
            seen(method, path),
            "no refused {method} {path} in {refused:#?}"
        );
    }
    assert!(
        refused
            .iter()
            .filter(|v| v["path"] == "/admin/room")
            .count()
            >= 2,
        "{refused:#?}"
    );
}

//! Talking with the line, over real sockets against the real binary: a
//! waiting visitor sees a live announcement in their language on the next
//! poll; their feedback reaches `usher ctl feedback` with their place in
//! line; a flood of posts from one address is capped in count, disk and
//! memory; hostile text stays inert; posts without a ticket or pass are
//! refused; the public event notice is the same for everyone.

use crate::support as common;

use std::net::SocketAddr;

use common::clients::{admin_post, connect, exchange};
use common::origin::Origin;
use common::process::{bin, text, UsherProcess};
use common::{Response, TempDir};

/// One place at a time, so the second visitor waits in line; tickets
/// are not rate limited per address (every visitor here is 127.0.0.1).
fn room(state: &std::path::Path, extra: &str) -> String {
    format!(
        "[room]\n{extra}\nevent = \"voucher-rush\"\nmode = \"fifo\"\nmax_active_users = 1\n\
         new_users_per_minute = 1\nsession_duration = \"10m\"\nrefresh = \"2s\"\n\
         message = \"both\"\nmessages = {{ en = \"Doors open at ten\" }}\n\
         [room.limits]\ntickets_per_minute_per_ip = 100000\nrequests_per_second_per_ip = 0\n\n\
         [store]\nstate_dir = \"{}\"\n",
        state.display()
    )
}

/// usher in front of an origin that answers 200 to everything; feedback
/// never reaches it (checked by the tests that post).
async fn start(tag: &str) -> (UsherProcess, Origin) {
    start_with(tag, "").await
}

/// [`start`] with more `[room]` keys.
async fn start_with(tag: &str, extra: &str) -> (UsherProcess, Origin) {
    let origin = Origin::ok().await;
    let dir = TempDir::new(tag);
    let state = dir.path().join("state");
    let config = common::config(origin.addr, "", "", &room(&state, extra));
    let u = UsherProcess::spawn(dir, &config).await;
    (u, origin)
}

fn cookie(r: &Response, name: &str) -> Option<String> {
    r.head.get_all("set-cookie").into_iter().find_map(|c| {
        let (kv, _) = c.split_once(';').unwrap_or((c, ""));
        let (k, v) = kv.split_once('=')?;
        (k == name && !v.is_empty()).then(|| format!("{k}={v}"))
    })
}

async fn get_with(addr: SocketAddr, path: &str, headers: &str) -> Response {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// The first visitor takes the only place; the second gets a ticket and
/// waits. Returns the second's ticket cookie.
async fn waiting_visitor(addr: SocketAddr) -> String {
    let first = get_with(addr, "/", "").await;
    assert!(cookie(&first, "usher_pass").is_some(), "first is admitted");
    let second = get_with(addr, "/", "").await;
    assert_eq!(second.head.get("x-usher-state"), Some("queued"));
    cookie(&second, "usher_ticket").expect("a ticket")
}

async fn status(addr: SocketAddr, headers: &str) -> serde_json::Value {
    let r = get_with(
        addr,
        "/__usher/status",
        &format!("Accept: application/json\r\n{headers}"),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text());
    serde_json::from_slice(&r.body).expect("status JSON")
}

fn form_post(path: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\n{headers}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn ctl(u: &UsherProcess, args: &[&str]) -> serde_json::Value {
    // `--admin`: the port usher picked (the config says :0).
    let out = bin()
        .arg("ctl")
        .arg("--admin")
        .arg(u.admin().to_string())
        .arg("--token-file")
        .arg(common::admin_token_file())
        .args(args)
        .env_remove("USHER_ADMIN_TOKEN")
        .output()
        .expect("run usher ctl");
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("ctl prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_visitor_sees_the_announcement_change_on_the_next_poll_in_their_language() {
    let (u, _origin) = start("talk-announce").await;
    let ticket = waiting_visitor(u.addr()).await;
    let en = format!("Cookie: {ticket}\r\nAccept-Language: en-US,en;q=0.9\r\n");
    let ko = format!("Cookie: {ticket}\r\nAccept-Language: ko-KR\r\n");

    // The config's texts: `messages.en` over `message`, `message` for ko.
    let before = status(u.addr(), &en).await;
    assert_eq!(before["state"], "queued");
    assert_eq!(before["message"], "Doors open at ten");
    assert_eq!(before["messages"]["ko"], "both");
    assert!(before["message_updated_at"].is_string());

    // `usher ctl message` changes both languages at once.
    let out = ctl(
        &u,
        &[
            "message",
            "--ko",
            "10분 늦게 시작합니다",
            "--en",
            "Starting <b>10 minutes</b> late",
        ],
    );
    assert_eq!(out["changed"], true, "{out}");

    // The very next poll (no waiting) carries the new text, per language.
    let after = status(u.addr(), &en).await;
    assert_eq!(after["message"], "Starting <b>10 minutes</b> late");
    assert_eq!(after["messages"]["ko"], "10분 늦게 시작합니다");
    assert!(after["message_updated_at"].as_str() >= before["message_updated_at"].as_str());
    assert_eq!(
        status(u.addr(), &ko).await["message"],
        "10분 늦게 시작합니다"
    );
    let st = common::clients::admin_get(u.admin(), "/admin/status").await;
    let st: serde_json::Value = serde_json::from_slice(&st.body).unwrap();
    assert_eq!(st["announcement"]["ko"], "10분 늦게 시작합니다", "{st}");
    assert!(st["announcement"]["updated_at"].is_u64());

    // The page shows it escaped, in its own live region, with its time.
    let page = get_with(u.addr(), "/", &en).await.text();
    assert!(page.contains("<p id=\"u-msg\">Starting &lt;b&gt;10 minutes&lt;/b&gt; late</p>"));
    assert!(page.contains("id=\"u-msgt\" datetime=\"20"));
    assert!(!page.contains("<b>10 minutes"));

    // The same text again is no change: the time stays, no history entry.
    let again = ctl(
        &u,
        &[
            "message",
            "--ko",
            "10분 늦게 시작합니다",
            "--en",
            "Starting <b>10 minutes</b> late",
        ],
    );
    assert_eq!(again["changed"], false);
    assert_eq!(again["history"].as_array().map(Vec::len), Some(2));

    // The old `set message` is one text for both languages.
    let r = admin_post(u.admin(), "/admin/room", r#"{"message":"Sold out soon"}"#).await;
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(status(u.addr(), &ko).await["message"], "Sold out soon");
    // A reset goes back to the config's texts.
    let r = admin_post(u.admin(), "/admin/room", r#"{"reset":true}"#).await;
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(status(u.addr(), &en).await["message"], "Doors open at ten");

    // The event notice: the same for everyone, cacheable, with the history.
    let ev = get_with(u.addr(), "/__usher/event?format=json", "").await;
    assert_eq!(ev.status(), 200);
    assert_eq!(ev.head.get("cache-control"), Some("public, max-age=5"));
    assert!(ev.head.get_all("set-cookie").is_empty());
    let v: serde_json::Value = serde_json::from_slice(&ev.body).unwrap();
    assert_eq!(v["event"], "voucher-rush");
    assert_eq!(v["mode"], "fifo");
    assert_eq!(v["message"]["en"], "Doors open at ten");
    assert!(v["history"].as_array().map_or(0, Vec::len) >= 4, "{v}");
    let with_ticket = get_with(u.addr(), "/__usher/event?format=json", &en).await;
    assert_eq!(with_ticket.body, ev.body, "no per-visitor data");
    let html = get_with(u.addr(), "/__usher/event", "Accept-Language: en\r\n").await;
    assert!(html.text().contains("Starting &lt;b&gt;10 minutes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_from_a_waiting_visitor_reaches_ctl_with_their_place_and_stays_inert() {
    let (u, origin) = start("talk-feedback").await;
    let ticket = waiting_visitor(u.addr()).await;
    let position = status(u.addr(), &format!("Cookie: {ticket}\r\n")).await["position"]
        .as_u64()
        .expect("a position");

    // Without a ticket or pass, or with a forged one: refused, not stored.
    for headers in ["", "Cookie: usher_ticket=v1.AAAA.BBBB\r\n"] {
        let r = exchange(
            u.addr(),
            &form_post(
                "/__usher/feedback",
                headers,
                "category=other&text=let+me+in",
            ),
        )
        .await;
        assert_eq!(r.status(), 403, "{headers:?}");
    }

    // Hostile text: markup, a terminal escape, NUL, a bidi override.
    let hostile = "%3Cscript%3Ealert(1)%3C%2Fscript%3E%1B%5B2J%00%E2%80%AEok";
    let r = exchange(
        u.addr(),
        &form_post(
            "/__usher/feedback",
            &format!("Cookie: {ticket}\r\nAccept: application/json\r\n"),
            &format!("category=page_error&text={hostile}&lang=en"),
        ),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text());
    let got: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(got["received"], true);
    // Without script, a page that says so.
    let r = exchange(
        u.addr(),
        &form_post(
            "/__usher/feedback",
            &format!("Cookie: {ticket}\r\nAccept-Language: en\r\n"),
            "category=voucher&text=second",
        ),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.text().contains("Received, thank you"));

    let out = ctl(&u, &["feedback"]);
    let list = out["feedback"].as_array().expect("a list");
    assert_eq!(list.len(), 2, "{out}");
    assert_eq!(list[0]["text"], "second", "newest first");
    let first = &list[1];
    assert_eq!(first["category"], "page_error");
    assert_eq!(first["state"], "waiting");
    assert_eq!(first["position"].as_u64(), Some(position));
    assert!(first["visitor"].as_str().unwrap().starts_with("ticket:"));
    // Controls gone; markup kept as text (JSON carries it inert).
    assert_eq!(first["text"], "<script>alert(1)</script>[2Jok");
    let newest = ctl(&u, &["feedback", "--limit", "1"]);
    assert_eq!(newest["feedback"].as_array().map(Vec::len), Some(1));
    assert_eq!(newest["feedback"][0]["text"], "second");

    // On disk: one JSON line each, no raw control byte, markup as text.
    let file = out["file"].as_str().expect("a file").to_string();
    let disk = std::fs::read(&file).unwrap();
    assert!(!disk.iter().any(|b| *b < 0x20 && *b != b'\n'));
    assert_eq!(disk.iter().filter(|b| **b == b'\n').count(), 2);

    let metrics = common::clients::admin_get(u.admin(), "/metrics")
        .await
        .text();
    assert!(metrics.contains("usher_feedback_total{category=\"page_error\"} 1"));
    assert!(metrics.contains("usher_feedback_total{category=\"cant_get_in\"} 0"));
    assert!(metrics.contains("usher_feedback_refused_total{reason=\"no_visitor\"} 2"));
    assert!(
        origin
            .take()
            .iter()
            .all(|r| !r.target().contains("feedback")),
        "feedback never reaches the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_posts_from_one_address_are_capped_in_count_disk_and_memory() {
    let _shared = crate::support::crowd_shared().await;
    let (u, origin) = start("talk-flood").await;
    let _ = waiting_visitor(u.addr()).await;
    // Fifty visitors behind one address, each with a ticket.
    let mut tickets = Vec::new();
    for _ in 0..50 {
        let r = get_with(u.addr(), "/", "").await;
        tickets.push(cookie(&r, "usher_ticket").expect("ticket"));
    }
    let rss_before = u.rss_kib();
    let text = "x".repeat(500);
    let mut conn = connect(u.addr()).await;
    let (mut ok, mut limited, mut other) = (0, 0, 0);
    for i in 0..10_000 {
        let req = form_post(
            "/__usher/feedback",
            &format!(
                "Cookie: {}\r\nAccept: application/json\r\n",
                tickets[i % 50]
            ),
            &format!("category=other&text={text}"),
        );
        conn.send(&req).await.expect("send");
        let r = conn.read_response("POST").await.expect("response");
        match r.status() {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert!(r.head.get("retry-after").is_some());
            }
            _ => other += 1,
        }
        if r.head.get("connection") == Some("close") {
            conn = connect(u.addr()).await;
        }
    }
    assert_eq!(
        (ok, limited, other),
        (20, 9_980, 0),
        "20 per address per window"
    );
    let out = ctl(&u, &["feedback"]);
    assert_eq!(out["feedback"].as_array().map(Vec::len), Some(20));
    let file = std::fs::metadata(out["file"].as_str().unwrap()).unwrap();
    assert!(file.len() < 20 * 1024, "{} bytes on disk", file.len());
    // 10,000 refused posts leave no trace worth a mebibyte.
    let grown = u.rss_kib().saturating_sub(rss_before);
    assert!(grown < 8 * 1024, "RSS grew by {grown} KiB");

    // A body over the limit is refused before it is read.
    let big = "x".repeat(20_000);
    let r = exchange(
        u.addr(),
        &form_post(
            "/__usher/feedback",
            &format!("Cookie: {}\r\n", tickets[0]),
            &format!("category=other&text={big}"),
        ),
    )
    .await;
    assert_eq!(r.status(), 413);
    assert!(origin
        .take()
        .iter()
        .all(|r| !r.target().contains("feedback")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_announces_a_changed_file_and_leaves_a_live_text_alone_otherwise() {
    let (u, _origin) = start("talk-reload").await;
    let ticket = waiting_visitor(u.addr()).await;
    let en = format!("Cookie: {ticket}\r\nAccept-Language: en\r\n");
    let reload = || async {
        let r = admin_post(u.admin(), "/admin/reload", "{}").await;
        assert_eq!(r.status(), 200, "{}", r.text());
    };

    // A live text outlasts a reload of an unchanged file.
    ctl(&u, &["message", "--en", "Live word"]);
    reload().await;
    assert_eq!(status(u.addr(), &en).await["message"], "Live word");

    // A changed file is announced by the reload.
    let text = std::fs::read_to_string(&u.config).unwrap();
    let changed = text.replace("Doors open at ten", "Doors open at eleven");
    assert_ne!(text, changed);
    std::fs::write(&u.config, changed).unwrap();
    reload().await;
    let s = status(u.addr(), &en).await;
    assert_eq!(s["message"], "Doors open at eleven");
    assert_eq!(s["messages"]["ko"], "both");

    // A text over the limit in the file is refused; the last good stays.
    let text = std::fs::read_to_string(&u.config).unwrap();
    let long = "x".repeat(1001);
    std::fs::write(&u.config, text.replace("Doors open at eleven", &long)).unwrap();
    let r = admin_post(u.admin(), "/admin/reload", "{}").await;
    assert_eq!(r.status(), 422, "{}", r.text());
    assert!(r.text().contains("room.messages.en"), "{}", r.text());
    assert_eq!(
        status(u.addr(), &en).await["message"],
        "Doors open at eleven"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_is_forwarded_to_the_webhook_and_only_there() {
    let hook = Origin::ok().await;
    let (u, origin) = start_with(
        "talk-webhook",
        &format!("feedback_webhook = \"http://{}/hooks/usher\"", hook.addr),
    )
    .await;
    let ticket = waiting_visitor(u.addr()).await;
    let r = exchange(
        u.addr(),
        &form_post(
            "/__usher/feedback",
            &format!("Cookie: {ticket}\r\n"),
            "category=voucher&text=code+not+working",
        ),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text());
    let started = std::time::Instant::now();
    while hook.count() == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the webhook was never called: {:#?}",
            u.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let got = hook.take();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target(), "/hooks/usher");
    let v: serde_json::Value = serde_json::from_slice(&got[0].body).expect("JSON body");
    assert_eq!(v["text"], "code not working");
    assert_eq!(v["category"], "voucher");
    assert!(v["position"].is_u64(), "{v}");
    assert!(origin
        .take()
        .iter()
        .all(|r| !r.target().contains("feedback")));
    // Counted once it is answered.
    let started = std::time::Instant::now();
    loop {
        let metrics = common::clients::admin_get(u.admin(), "/metrics")
            .await
            .text();
        if metrics.contains("usher_feedback_webhook_total{result=\"sent\"} 1") {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_fails_once_gets_the_record_on_the_retry() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    // the first POST meets a 503 (a deploy on the operator's side), the
    // next one succeeds
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let hook = Origin::start(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            common::origin::Reply::Full {
                status: 503,
                headers: vec![],
                body: b"busy".to_vec(),
            }
        } else {
            common::origin::Reply::ok("ok")
        }
    })
    .await;
    let (u, _origin) = start_with(
        "talk-webhook-retry",
        &format!("feedback_webhook = \"http://{}/hooks/usher\"", hook.addr),
    )
    .await;
    let ticket = waiting_visitor(u.addr()).await;
    let r = exchange(
        u.addr(),
        &form_post(
            "/__usher/feedback",
            &format!("Cookie: {ticket}\r\n"),
            "category=other&text=retry+me",
        ),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text());
    let got = hook.wait_for(2).await;
    assert_eq!(got.len(), 2, "one failure, one retry");
    for g in &got {
        let v: serde_json::Value = serde_json::from_slice(&g.body).expect("JSON body");
        assert_eq!(v["text"], "retry me");
    }
    let started = std::time::Instant::now();
    loop {
        let metrics = common::clients::admin_get(u.admin(), "/metrics")
            .await
            .text();
        if metrics.contains("usher_feedback_webhook_total{result=\"sent\"} 1") {
            assert!(
                metrics.contains("usher_feedback_webhook_total{result=\"failed\"} 0"),
                "{metrics}"
            );
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

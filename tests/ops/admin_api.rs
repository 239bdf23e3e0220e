//! The admin API of the real binary, guarded: a web page on another origin
//! cannot change the room (the exact headers browsers send for a
//! cross-origin fetch and form), no or a wrong token gets 401 and changes
//! nothing, the open paths open and closed, `usher ctl` with a token from
//! the config, a file, the environment or usher's own generated file, and
//! over the Unix socket.

use crate::support as common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use common::clients::{admin_get, admin_post, exchange};
use common::process::{bin, UsherProcess};
use common::{Response, TempDir, ADMIN_TOKEN};

/// A room that admits in line order, so a pause or a mode change shows in
/// `/admin/status`.
const ROOM: &str = "[room]\nmode = \"fifo\"\nmax_active_users = 10\nnew_users_per_minute = 60\n";

async fn start(tag: &str, server_extra: &str) -> UsherProcess {
    // The origin is never asked: these tests talk to the admin API only.
    let origin: SocketAddr = "127.0.0.1:9".parse().unwrap();
    UsherProcess::spawn(
        TempDir::new(tag),
        &common::config(origin, server_extra, "", ROOM),
    )
    .await
}

/// The room's effective mode, overrides and drain flag, read with the token.
async fn room_state(admin: SocketAddr) -> (String, serde_json::Value, bool) {
    let r = admin_get(admin, "/admin/status").await;
    assert_eq!(r.status(), 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("status JSON");
    let room = &v["room"];
    (
        room["settings"]["mode"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        room["overrides"].clone(),
        room["draining"].as_bool().unwrap_or_default(),
    )
}

fn untouched() -> (String, serde_json::Value, bool) {
    ("fifo".to_string(), serde_json::json!({}), false)
}

fn assert_no_cors(r: &Response) {
    assert!(
        !r.head
            .headers
            .iter()
            .any(|(k, _)| k.to_ascii_lowercase().starts_with("access-control-")),
        "CORS header granted: {:?}",
        r.head.headers
    );
}

/// A request as Chromium sends it from a page on http://evil.example.
fn from_page(method: &str, path: &str, admin: SocketAddr, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: keep-alive\r\n\
         Content-Length: {}\r\nsec-ch-ua-platform: \"Linux\"\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
         sec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\nsec-ch-ua-mobile: ?0\r\n\
         {headers}Referer: http://evil.example/\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n\
         Accept-Language: en-US,en;q=0.9\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_origin_cannot_change_the_room() {
    let u = start("cross-site", "").await;
    let admin = u.admin();
    let leaked = format!("Authorization: Bearer {ADMIN_TOKEN}\r\n");
    let attempts: Vec<(&str, Vec<u8>)> = vec![
        (
            // fetch(url, {method: 'POST', body: '{"mode":"closed"}'})
            "fetch POST, text/plain",
            from_page(
                "POST",
                "/admin/room",
                admin,
                "Content-Type: text/plain;charset=UTF-8\r\nAccept: */*\r\nOrigin: http://evil.example\r\n\
                 Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Dest: empty\r\n",
                r#"{"mode":"closed"}"#,
            ),
        ),
        (
            // fetch(url, {method: 'POST', mode: 'no-cors'})
            "no-cors fetch POST, no body",
            from_page(
                "POST",
                "/admin/pause",
                admin,
                "Accept: */*\r\nOrigin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\n\
                 Sec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: empty\r\n",
                "",
            ),
        ),
        (
            // <form method=post action=http://127.0.0.1:9090/admin/room><input name=mode value=closed>
            "form POST",
            from_page(
                "POST",
                "/admin/room",
                admin,
                "Cache-Control: max-age=0\r\nOrigin: http://evil.example\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nUpgrade-Insecure-Requests: 1\r\n\
                 Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
                 Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-User: ?1\r\n\
                 Sec-Fetch-Dest: document\r\n",
                "mode=closed",
            ),
        ),
        (
            // <form enctype=text/plain method=post action=.../admin/room>
            //   <input name='{"mode":"closed","message":"' value='"}'>
            "text/plain form spelling JSON",
            from_page(
                "POST",
                "/admin/room",
                admin,
                "Cache-Control: max-age=0\r\nOrigin: http://evil.example\r\nContent-Type: text/plain\r\n\
                 Upgrade-Insecure-Requests: 1\r\nAccept: text/html,*/*;q=0.8\r\n\
                 Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-User: ?1\r\n\
                 Sec-Fetch-Dest: document\r\n",
                r#"{"mode":"closed","message":"="}"#,
            ),
        ),
        (
            // A page's fetch with the token and JSON, should it ever leak.
            "fetch POST with the token and JSON",
            from_page(
                "POST",
                "/admin/drain",
                admin,
                &format!(
                    "{leaked}Content-Type: application/json\r\nAccept: */*\r\n\
                     Origin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: cors\r\n\
                     Sec-Fetch-Dest: empty\r\n"
                ),
                "{}",
            ),
        ),
        (
            // The preflight a page's fetch with an Authorization header needs.
            "CORS preflight",
            from_page(
                "OPTIONS",
                "/admin/pause",
                admin,
                "Accept: */*\r\nAccess-Control-Request-Method: POST\r\n\
                 Access-Control-Request-Headers: authorization,content-type\r\n\
                 Origin: http://evil.example\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Site: cross-site\r\n\
                 Sec-Fetch-Dest: empty\r\n",
                "",
            ),
        ),
        (
            // DNS rebinding: evil.example now resolves to 127.0.0.1, so the
            // page's fetch is "same-origin" (no Origin on a GET).
            "rebound same-origin GET",
            format!(
                "GET /admin/status HTTP/1.1\r\nHost: evil.example:{}\r\n{leaked}Accept: */*\r\n\
                 Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Dest: empty\r\n\r\n",
                admin.port()
            )
            .into_bytes(),
        ),
        (
            "same-site POST",
            from_page(
                "POST",
                "/admin/pause",
                admin,
                &format!("{leaked}Content-Type: application/json\r\nSec-Fetch-Site: same-site\r\n"),
                "",
            ),
        ),
    ];
    for (what, raw) in attempts {
        let r = exchange(admin, &raw).await;
        assert_eq!(r.status(), 403, "{what}: {}", r.text());
        assert!(r.text().contains("web browser"), "{what}: {}", r.text());
        assert_no_cors(&r);
        assert_eq!(
            room_state(admin).await,
            untouched(),
            "{what} changed the room"
        );
    }
    let ready = exchange(
        admin,
        b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ready.status(), 200, "still ready, not draining");
    // A page cannot read the metrics either; the operator typing the
    // address into the browser (Sec-Fetch-Site: none) can.
    let page = exchange(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nOrigin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\n\
          Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(page.status(), 403);
    let typed = exchange(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nSec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\n\
          Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(typed.status(), 200);
}

fn post_raw(path: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_right_token_nothing_changes() {
    let u = start("token", "").await;
    let admin = u.admin();
    let json = "Content-Type: application/json\r\n";
    let wrong = "Authorization: Bearer test-admin-token-0123456789abcdef-012345678X\r\n";
    for (what, raw, challenge) in [
        (
            "no token",
            post_raw("/admin/pause", json, ""),
            "Bearer realm=\"usher admin\"",
        ),
        (
            "no token, room change",
            post_raw("/admin/room", json, r#"{"mode":"closed"}"#),
            "Bearer realm=\"usher admin\"",
        ),
        (
            "wrong token",
            post_raw("/admin/drain", &format!("{wrong}{json}"), ""),
            "error=\"invalid_token\"",
        ),
        (
            "the token as Basic",
            post_raw(
                "/admin/pause",
                &format!("Authorization: Basic {ADMIN_TOKEN}\r\n{json}"),
                "",
            ),
            "Bearer realm",
        ),
        (
            "reload, no token",
            post_raw("/admin/reload", json, ""),
            "Bearer realm",
        ),
        (
            "status, no token",
            b"GET /admin/status HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec(),
            "Bearer realm",
        ),
    ] {
        let r = exchange(admin, &raw).await;
        assert_eq!(r.status(), 401, "{what}: {}", r.text());
        let got = r.head.get("www-authenticate").unwrap_or_default();
        assert!(got.contains(challenge), "{what}: {got}");
        assert_eq!(
            room_state(admin).await,
            untouched(),
            "{what} changed the room"
        );
    }
    // The right token, but not JSON: a form cannot pass.
    let form = post_raw(
        "/admin/room",
        &format!("Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/x-www-form-urlencoded\r\n"),
        "mode=closed",
    );
    assert_eq!(exchange(admin, &form).await.status(), 415);
    assert_eq!(room_state(admin).await, untouched());
    // The right token and JSON: it works.
    let r = admin_post(admin, "/admin/pause", "").await;
    assert_eq!(r.status(), 200, "{}", r.text());
    let (mode, overrides, _) = room_state(admin).await;
    assert_eq!(
        (mode.as_str(), &overrides["mode"]),
        ("paused", &serde_json::json!("paused"))
    );
    let r = admin_post(admin, "/admin/room", r#"{"reset":true}"#).await;
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(room_state(admin).await, untouched());
    // The open paths need no token by default.
    for path in ["/metrics", "/healthz", "/readyz"] {
        let r = exchange(
            admin,
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_paths_can_be_closed() {
    let u = start("closed", "admin_open = [\"/healthz\"]").await;
    for (path, open) in [("/metrics", false), ("/readyz", false), ("/healthz", true)] {
        let r = exchange(
            u.admin(),
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(r.status(), if open { 200 } else { 401 }, "{path}");
        assert_eq!(
            admin_get(u.admin(), path).await.status(),
            200,
            "{path} with the token"
        );
    }
    let metrics = admin_get(u.admin(), "/metrics").await.text();
    assert!(metrics.contains("usher_"), "{metrics}");
}

/// Writes the admin port usher picked into its config file, as a deployed
/// config names a fixed one (the running process does not re-read it), so
/// `usher ctl -c` finds the listener.
fn pin_admin_port(u: &UsherProcess) -> String {
    let text = std::fs::read_to_string(&u.config).unwrap();
    let pinned = text.replacen(
        "admin = \"127.0.0.1:0\"",
        &format!("admin = \"{}\"", u.admin()),
        1,
    );
    assert_ne!(text, pinned, "the config names admin = \"127.0.0.1:0\"");
    std::fs::write(&u.config, pinned).unwrap();
    u.config.to_str().unwrap().to_string()
}

fn ctl(args: &[&str], env_token: Option<&str>) -> Output {
    let mut c = bin();
    c.arg("ctl").args(args).env_remove("USHER_ADMIN_TOKEN");
    if let Some(t) = env_token {
        c.env("USHER_ADMIN_TOKEN", t);
    }
    c.output().expect("run usher ctl")
}

fn stdout_json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_finds_the_token_in_the_config_a_file_or_the_environment() {
    let u = start("ctl", "").await;
    let admin = u.admin().to_string();
    let config = &pin_admin_port(&u);
    // -c: the address and the token file from the config.
    let out = ctl(&["-c", config, "pause"], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout_json(&out)["settings"]["mode"], "paused");
    // --token-file
    let file = common::admin_token_file().to_str().unwrap();
    let out = ctl(&["--admin", &admin, "--token-file", file, "resume"], None);
    assert!(out.status.success(), "{out:?}");
    // $USHER_ADMIN_TOKEN
    let out = ctl(
        &["--admin", &admin, "set", "rate", "120"],
        Some(ADMIN_TOKEN),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout_json(&out)["settings"]["new_users_per_minute"], 120);
    let out = ctl(&["--admin", &admin, "status"], Some(ADMIN_TOKEN));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout_json(&out)["room"]["overrides"]["new_users_per_minute"],
        120
    );
    // A wrong token: refused, exit 1, the JSON reason printed.
    let wrong = "w".repeat(40);
    let out = ctl(&["--admin", &admin, "reset"], Some(&wrong));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stdout_json(&out)["error"], "wrong token");
    assert!(String::from_utf8_lossy(&out.stderr).contains("the admin listener answered 401"));
    assert_eq!(
        room_state(u.admin()).await.1["new_users_per_minute"],
        120,
        "the refused reset changed nothing"
    );
    // An unusable token file is the caller's mistake: 78, nothing sent.
    let out = ctl(
        &[
            "--admin",
            &admin,
            "--token-file",
            "/nonexistent/token",
            "reset",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let out = ctl(&["-c", config, "reset"], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(room_state(u.admin()).await, untouched());
}

/// A config without `admin_token_file`, with a local store under `dir`.
fn config_without_token(dir: &Path, server_extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n{server_extra}\n\
         [origin]\nurl = \"http://127.0.0.1:9\"\n[log]\nformat = \"json\"\n\
         [store]\nstate_dir = \"{}\"\n{ROOM}",
        dir.join("state").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_usher_makes_one_that_ctl_finds() {
    let dir = TempDir::new("generated");
    let text = config_without_token(dir.path(), "");
    let state = dir.path().join("state");
    let u = UsherProcess::spawn(dir, &text).await;
    let file = state.join("admin.token");
    let meta = std::fs::metadata(&file).expect("admin.token made at start");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(token.len() >= 32, "{token}");
    // Safe by default: nothing changes without it ...
    let r = exchange(
        u.admin(),
        &post_raw("/admin/pause", "Content-Type: application/json\r\n", ""),
    )
    .await;
    assert_eq!(r.status(), 401);
    // ... and `usher ctl -c` reads the generated file.
    let out = ctl(&["-c", &pin_admin_port(&u), "pause"], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout_json(&out)["settings"]["mode"], "paused");
    let with_it = post_raw(
        "/admin/resume",
        &format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"),
        "",
    );
    assert_eq!(exchange(u.admin(), &with_it).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_over_the_unix_socket_is_trusted_by_its_permissions() {
    let dir = TempDir::new("socket");
    let sock = dir.path().join("admin.sock");
    let text = common::config(
        "127.0.0.1:9".parse().unwrap(),
        &format!("admin_socket = \"{}\"", sock.display()),
        "",
        ROOM,
    );
    let mut u = UsherProcess::spawn(dir, &text).await;
    let meta = std::fs::metadata(&sock).expect("the socket exists once listening");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // No token at all: the socket's mode let only root and usher's user in.
    let out = ctl(&["--socket", sock.to_str().unwrap(), "pause"], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout_json(&out)["settings"]["mode"], "paused");
    // -c prefers the socket the config names.
    let out = ctl(&["-c", u.config.to_str().unwrap(), "status"], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout_json(&out)["room"]["settings"]["mode"], "paused");
    // Over TCP the token is still needed.
    let r = exchange(
        u.admin(),
        &post_raw("/admin/resume", "Content-Type: application/json\r\n", ""),
    )
    .await;
    assert_eq!(r.status(), 401);
    // A user who is neither root nor usher's user cannot connect at all.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::process::CommandExt;
        let out = bin()
            .args(["ctl", "--socket", sock.to_str().unwrap(), "resume"])
            .env_remove("USHER_ADMIN_TOKEN")
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run usher ctl as nobody");
        assert_eq!(out.status.code(), Some(69), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("ermission denied"),
            "{out:?}"
        );
    }
    assert_eq!(room_state(u.admin()).await.0, "paused");
    // The socket goes away with usher.
    u.signal(libc::SIGTERM);
    assert!(u
        .wait_exit(std::time::Duration::from_secs(10))
        .await
        .is_some());
    assert!(!sock.exists(), "socket left behind");
}

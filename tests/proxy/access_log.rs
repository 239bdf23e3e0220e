//! The logs as ops read them, through the real binary: the JSON access log
//! is one JSON object per line with the request's fields at the top level;
//! `log.level = "warn"` quiets the app log but never the access log; and no
//! ANSI escape reaches a pipe or journald (a terminal still gets colours).

use crate::support as common;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use common::activated::Activated;
use common::clients::exchange;
use common::Origin;

fn config(
    origin: std::net::SocketAddr,
    format: &str,
    level: &str,
    access: &str,
) -> impl Fn(std::net::SocketAddr) -> String {
    let (format, level, access) = (format.to_string(), level.to_string(), access.to_string());
    move |listen| {
        format!(
            "[server]\nlisten = [\"{listen}\"]\nadmin = \"\"\n[origin]\nurl = \"http://{origin}\"\n\
             [log]\nformat = \"{format}\"\nlevel = \"{level}\"\naccess = \"{access}\"\n"
        )
    }
}

async fn request(u: &Activated, path: &str) {
    let r = exchange(
        u.addr,
        format!(
            "GET {path} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: tester \"7\"\r\n\
             Referer: http://shop.example/?token=s3cret\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn json_access_lines_are_objects_and_level_warn_keeps_them() {
    let origin = Origin::ok().await;
    let u = Activated::start(config(origin.addr, "json", "warn", "json"), &[], None);
    request(&u, "/one?x=1").await;
    request(&u, "/two").await;
    let text = u.wait_for_lines("\"type\":\"access\"", 2).await;
    assert!(
        !text.contains("\"level\":\"INFO\""),
        "level warn quiets info:\n{text}"
    );
    let mut seen = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line:?}"));
        if v["type"] != "access" {
            continue;
        }
        assert!(v.get("message").is_none(), "fields at the top: {line}");
        assert_eq!(v["client"], "127.0.0.1");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 2, "a number: {line}");
        assert_eq!(v["outcome"], "forwarded");
        assert_eq!(v["user_agent"], "tester \"7\"");
        assert_eq!(v["referer"], "http://shop.example/?token=REDACTED");
        assert!(v["duration_ms"].as_f64().is_some());
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        seen.push(v["target"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ["/one?x=1", "/two"]);
    assert!(!u.output().contains(&0x1b), "no ANSI escapes in a pipe");
}

#[tokio::test]
async fn text_logs_and_combined_lines_in_a_pipe_have_no_escapes() {
    let origin = Origin::ok().await;
    let u = Activated::start(config(origin.addr, "text", "info", "combined"), &[], None);
    request(&u, "/c").await;
    let text = u.wait_for_lines("\"GET /c HTTP/1.1\" 200 2", 1).await;
    let line = text.lines().find(|l| l.contains("GET /c")).unwrap();
    assert!(
        line.starts_with("127.0.0.1 - - ["),
        "combined, as is: {line}"
    );
    assert!(text.contains(" INFO "), "the app log is there too:\n{text}");
    assert!(
        !u.output().contains(&0x1b),
        "no ANSI escapes in a pipe:\n{text}"
    );
}

/// A pseudo-terminal: (master, slave).
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two fds into the ints we pass; the rest may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just opened for us and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// What usher writes to a terminal until it says it started (at most 10 s).
fn on_a_terminal(origin: std::net::SocketAddr, env: &[(&str, &str)]) -> Vec<u8> {
    let (master, slave) = pty();
    let u = Activated::start(
        config(origin, "text", "info", "off"),
        env,
        Some(Stdio::from(slave)),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&out).contains("usher started") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(_) => panic!(
                "no start line on the terminal: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    drop(u);
    out
}

#[tokio::test]
async fn colours_only_on_a_terminal_outside_journald() {
    let origin = Origin::ok().await;
    let tty = on_a_terminal(origin.addr, &[]);
    assert!(tty.contains(&0x1b), "a person at a terminal gets colours");
    let journald = on_a_terminal(origin.addr, &[("JOURNAL_STREAM", "8:12345")]);
    assert!(
        !journald.contains(&0x1b),
        "{:?}",
        String::from_utf8_lossy(&journald)
    );
    let no_color = on_a_terminal(origin.addr, &[("NO_COLOR", "1")]);
    assert!(
        !no_color.contains(&0x1b),
        "{:?}",
        String::from_utf8_lossy(&no_color)
    );
}

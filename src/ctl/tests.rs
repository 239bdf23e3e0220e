//! `usher ctl` over real sockets: raw servers that answer as the admin API
//! might, and where the token comes from.

use super::*;
use crate::config::Config;
use std::io::{Read, Write};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn room_settings_are_json_posts_with_the_token() {
    let req = request("127.0.0.1:9090", Some(TOKEN), &Action::SetRate(600)).unwrap();
    assert_eq!(
        (req.method().as_str(), req.uri().path()),
        ("POST", "/admin/room")
    );
    let h = req.headers();
    assert_eq!(h["host"], "127.0.0.1:9090");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["authorization"], format!("Bearer {TOKEN}"));
    let body = futures_util::FutureExt::now_or_never(req.into_body().collect())
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"{\"new_users_per_minute\":600}");
    // Even a POST without a body says JSON: the API refuses anything else.
    let pause = request("h", None, &Action::Pause).unwrap();
    assert_eq!(pause.headers()["content-type"], "application/json");
    assert!(!pause.headers().contains_key("authorization"));
    let get = request("h", None, &Action::Status).unwrap();
    assert!(get.method() == "GET" && !get.headers().contains_key("content-type"));
    let (_, _, body) = Action::SetMessage("Sold \"out\"".into()).request();
    assert_eq!(body.unwrap()["message"], "Sold \"out\"");
    assert_eq!(
        Action::Reset.request().2.unwrap(),
        serde_json::json!({"reset": true})
    );
    assert_eq!(
        Action::SetMode("closed".into()).request().2.unwrap()["mode"],
        "closed"
    );
    assert_eq!(Action::Undrain.request().1, "/admin/undrain");
    let (m, p, body) = Action::SetCapacity(5000).request();
    assert_eq!((m, p.as_ref()), ("POST", "/admin/room"));
    assert_eq!(body.unwrap(), serde_json::json!({"max_active_users": 5000}));
    let (m, p, body) = Action::Announce {
        ko: None,
        en: Some("Late".into()),
    }
    .request();
    assert_eq!((m, p.as_ref()), ("POST", "/admin/message"));
    assert_eq!(
        body.unwrap(),
        serde_json::json!({"en": "Late"}),
        "ko left out keeps its text"
    );
    assert_eq!(Action::Feedback(None).request().1, "/admin/feedback");
    let (m, p, body) = Action::Feedback(Some(5)).request();
    assert_eq!(
        (m, p.as_ref(), body),
        ("GET", "/admin/feedback?limit=5", None)
    );
}

/// A one-shot raw HTTP/1.1 server: reads one request head (and body up
/// to `until`), answers `reply`, and hands back what it read.
fn one_shot<S: Read + Write>(mut s: S, until: &[u8], reply: &[u8]) -> String {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(until)) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "client closed early");
        got.extend_from_slice(&buf[..n]);
    }
    s.write_all(reply).unwrap();
    String::from_utf8(got).unwrap()
}

#[test]
fn call_talks_over_tcp() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (s, _) = server.accept().unwrap();
        one_shot(
            s,
            b"{\"message\":\"hi\"}",
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n4\r\nnot \r\n6\r\nfound\n\r\n0\r\n\r\n",
        )
    });
    let c = Client {
        target: Target::Tcp(addr),
        token: Some(TOKEN.into()),
    };
    let r = c.call(&Action::SetMessage("hi".into())).unwrap();
    assert_eq!((r.status, r.pretty().as_str()), (404, "not found"));
    let seen = handle.join().unwrap().to_ascii_lowercase();
    assert!(seen.starts_with("post /admin/room http/1.1\r\n"), "{seen}");
    assert!(
        seen.contains(&format!("authorization: bearer {TOKEN}\r\n")),
        "{seen}"
    );
    assert!(
        seen.contains("content-type: application/json\r\n"),
        "{seen}"
    );
}

#[test]
fn call_talks_over_a_unix_socket_and_bounds_the_answer() {
    let dir = std::env::temp_dir().join(format!("usher-ctl-sock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("admin.sock");
    let server = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let handle = std::thread::spawn(move || {
        let (s, _) = server.accept().unwrap();
        let seen = one_shot(
            s,
            b"",
            b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"a\": true}",
        );
        let (s, _) = server.accept().unwrap();
        let mut big = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            MAX_REPLY_BYTES + 1
        )
        .into_bytes();
        big.resize(big.len() + MAX_REPLY_BYTES + 1, b'x');
        one_shot(s, b"", &big);
        seen
    });
    let c = Client {
        target: Target::Unix(path),
        token: None,
    };
    let r = c.call(&Action::Status).unwrap();
    assert!(r.ok());
    assert_eq!(r.pretty(), "{\n  \"a\": true\n}");
    assert!(matches!(c.call(&Action::Status), Err(CtlError::TooLarge)));
    assert!(handle
        .join()
        .unwrap()
        .starts_with("GET /admin/status HTTP/1.1\r\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreachable_or_malformed_are_errors_not_panics() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let call = |target| {
        Client {
            target,
            token: None,
        }
        .call(&Action::Status)
    };
    assert!(matches!(
        call(Target::Tcp(port.to_string())),
        Err(CtlError::Io { .. })
    ));
    assert!(matches!(
        call(Target::Tcp("not an address".into())),
        Err(CtlError::Resolve(_))
    ));
    assert!(matches!(
        call(Target::Unix("/nonexistent/usher.sock".into())),
        Err(CtlError::Io { .. })
    ));
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (s, _) = server.accept().unwrap();
        one_shot(s, b"", b"SSH-2.0-OpenSSH\r\n\r\n");
    });
    assert!(matches!(
        call(Target::Tcp(addr)),
        Err(CtlError::Malformed(_))
    ));
    handle.join().unwrap();
}

#[test]
fn the_token_comes_from_the_flag_the_environment_or_the_config() {
    let dir = std::env::temp_dir().join(format!("usher-ctl-tok-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b, c) = ("a".repeat(32), "b".repeat(32), "c".repeat(32));
    std::fs::write(dir.join("flag"), format!("{a}\n")).unwrap();
    std::fs::write(dir.join("cfg"), &c).unwrap();
    let cfg = || {
        Config::parse(
            "[server]\nadmin = \"127.0.0.1:9191\"\nadmin_token_file = \"cfg\"\n\
             [origin]\nurl = \"http://127.0.0.1:9\"\n",
            "t",
            &dir,
        )
        .unwrap()
    };
    let resolve = |flag: bool, env: Option<&str>, config: bool| {
        Options {
            token_file: flag.then(|| dir.join("flag")),
            env_token: env.map(str::to_string),
            config: config.then(cfg),
            ..Options::default()
        }
        .resolve()
        .unwrap()
    };
    assert_eq!(
        resolve(true, Some(&b), true).token.as_deref(),
        Some(a.as_str())
    );
    assert_eq!(
        resolve(false, Some(&b), true).token.as_deref(),
        Some(b.as_str())
    );
    assert_eq!(
        resolve(false, Some(""), true).token.as_deref(),
        Some(c.as_str())
    );
    let from_cfg = resolve(false, None, true);
    assert_eq!(from_cfg.token.as_deref(), Some(c.as_str()));
    assert_eq!(from_cfg.target, Target::Tcp("127.0.0.1:9191".into()));
    let default = Options::default().resolve().unwrap();
    assert_eq!(default.target, Target::Tcp("127.0.0.1:9090".into()));
    let sock = Options {
        socket: Some("/run/u.sock".into()),
        admin: Some("127.0.0.1:1".into()),
        ..Options::default()
    };
    assert_eq!(
        sock.resolve().unwrap().target,
        Target::Unix("/run/u.sock".into())
    );
    let short = Options {
        env_token: Some("short".into()),
        ..Options::default()
    };
    assert!(matches!(short.resolve(), Err(SetupError::TokenEnv(_))));
    let missing = Options {
        token_file: Some(dir.join("missing")),
        ..Options::default()
    };
    assert!(matches!(
        missing.resolve(),
        Err(SetupError::TokenFile { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn default_kid_is_the_utc_date() {
    assert_eq!(default_kid(0), "k19700101");
    assert_eq!(default_kid(951_782_400), "k20000229");
    assert_eq!(default_kid(1_735_689_599), "k20241231");
    assert_eq!(default_kid(1_735_689_600), "k20250101");
    assert!(crate::tokens::Keyring::generate_line(&default_kid(1_735_689_600)).is_ok());
}

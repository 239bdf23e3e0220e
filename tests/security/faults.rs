//! Faults around usher, each with the behaviour it must keep:
//! - origin refusing connections: 502 page;
//! - origin silent past origin.response_timeout: 504;
//! - origin dripping its head a byte a second: 504 at response_timeout;
//!   dripping its body: relayed as it comes, the slot freed when the client leaves;
//! - origin resetting mid-response: the client sees an aborted body, usher stays up;
//! - origin sending a malformed response: 502;
//! - certificate replaced with garbage, then reload: reload fails, the old
//!   certificate is kept, TLS still works (a good one then loads);
//! - config file deleted, then SIGHUP: reload fails, usher keeps serving;
//! - 100 SIGHUPs in a second: still serving, no crash;
//! - SIGTERM while draining (and again during the drain): in-flight requests
//!   finish, exit 0;
//! - file descriptors exhausted (`ulimit -n 64`): usher keeps running and
//!   serves again once the connections close.

use crate::support::security as security_support;
use crate::support::{TempDir, ADMIN_TOKEN};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::process::UsherProcess;
use security_support::tls::{served_cert, write_cert};
use security_support::{config, exchange, probe, Recorder, Usher};

const PROBE_BOUND: Duration = Duration::from_secs(2);

/// A raw origin: every connection is handed to `serve` once its request
/// head has arrived.
async fn raw_origin<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let serve = serve.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                serve(s).await;
            });
        }
    });
    addr
}

const GET: &[u8] = b"GET /page HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

fn short_timeouts(origin: SocketAddr) -> String {
    config(origin, "", "connect_timeout = \"1s\"")
        .replace("response_timeout = \"5s\"", "response_timeout = \"700ms\"")
}

fn is_usher_page(text: &str) -> bool {
    text.contains("content-type: text/html") && text.contains("cache-control: no-store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_refusing_connections_is_a_502_page() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let usher = Usher::start(&short_timeouts(closed)).await;
    let started = Instant::now();
    let reply = exchange(usher.addr, GET, Duration::from_secs(3)).await;
    assert_eq!(reply.statuses(), [502], "{}", reply.text());
    assert!(is_usher_page(&reply.text()));
    assert!(started.elapsed() < Duration::from_secs(2));
    let m = &usher.app.metrics;
    assert_eq!(m.origin_errors.with_label_values(&["connect"]).get(), 1);
    usher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_silent_past_the_response_timeout_is_a_504() {
    let origin = raw_origin(|s| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(s);
    })
    .await;
    let usher = Usher::start(&short_timeouts(origin)).await;
    let started = Instant::now();
    let reply = exchange(usher.addr, GET, Duration::from_secs(5)).await;
    let t = started.elapsed();
    assert_eq!(reply.statuses(), [504], "{}", reply.text());
    assert!(is_usher_page(&reply.text()));
    assert!(
        t >= Duration::from_millis(650) && t < Duration::from_millis(2_000),
        "{t:?}"
    );
    usher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_dripping_is_bounded() {
    // The head a byte a second: response_timeout ends it with 504.
    let head_drip = raw_origin(|mut s| async move {
        for b in b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    let usher = Usher::start(&short_timeouts(head_drip)).await;
    let started = Instant::now();
    let reply = exchange(usher.addr, GET, Duration::from_secs(5)).await;
    assert_eq!(reply.statuses(), [504]);
    assert!(started.elapsed() < Duration::from_secs(2));
    usher.stop().await;

    // The body a byte every 200 ms: relayed as it comes (streaming is the
    // origin's choice), and a client that leaves frees the one origin slot.
    let body_drip = raw_origin(|mut s| async move {
        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if s.write_all(b"x").await.is_err() {
                return;
            }
        }
    })
    .await;
    let text = config(body_drip, "", "max_in_flight = 1\nqueue_timeout = \"3s\"");
    let usher = Usher::start(&text).await;
    let mut c = TcpStream::connect(usher.addr).await.unwrap();
    c.write_all(b"GET /drip HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let started = Instant::now();
    while !got.ends_with(b"xx") {
        let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
            .await
            .expect("the drip is relayed as it comes")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(c);
    // The slot is free again: the next request gets it (and its own drip).
    let mut next = TcpStream::connect(usher.addr).await.unwrap();
    next.write_all(b"GET /drip HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), next.read(&mut buf))
        .await
        .expect("the freed slot serves the next client")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(next);
    usher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_reset_mid_response_aborts_the_body_only() {
    let origin = raw_origin(|s| async move {
        let mut s = s;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
            .await;
        let _ = s.write_all(&[b'x'; 1000]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // linger 0: close with RST
        drop(with_linger_zero(s.into_std().unwrap()));
    })
    .await;
    let usher = Usher::start(&config(origin, "", "")).await;
    let reply = exchange(usher.addr, GET, Duration::from_secs(3)).await;
    assert!(reply.closed, "the client's connection is closed");
    assert_eq!(reply.statuses(), [200]);
    let body = reply.bytes.len() - reply.text().find("\r\n\r\n").unwrap() - 4;
    assert!(body < 100_000, "aborted body: {body} of 100000 bytes");
    // usher stays up and answers the next request (aborted the same way).
    let again = exchange(usher.addr, GET, Duration::from_secs(3)).await;
    assert_eq!(again.statuses(), [200]);
    usher.stop().await;
}

/// A std socket closed with SO_LINGER 0, which sends RST.
fn with_linger_zero(s: std::net::TcpStream) -> std::net::TcpStream {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_origin_responses_are_502() {
    let answers: &[&[u8]] = &[
        b"HTTP/1.1 2OO OK\r\ncontent-length: 2\r\n\r\nok",
        b"hello world\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: -2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nx-bad\0: 1\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nx: a\rb\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\n bad fold\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"",
    ];
    for (i, answer) in answers.iter().enumerate() {
        let answer = answer.to_vec();
        let origin = raw_origin(move |mut s| {
            let answer = answer.clone();
            async move {
                let _ = s.write_all(&answer).await;
                let _ = s.shutdown().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        let usher = Usher::start(&config(origin, "", "")).await;
        let reply = exchange(usher.addr, GET, Duration::from_secs(3)).await;
        let statuses = reply.statuses();
        // A bad head is a 502 page; a body that breaks after a good head
        // can only be cut: the client sees the connection close, with or
        // without the status line (which may not have gone out yet).
        let ok = statuses == [502] || (i == 7 && statuses.len() <= 1 && reply.closed);
        assert!(ok, "answer {i}: {statuses:?}\n{}", reply.text());
        usher.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_certificate_on_reload_keeps_the_old_one() {
    let origin = Recorder::start().await;
    let dir = TempDir::new("cert");
    let (cert, key) = (dir.path().join("site.crt"), dir.path().join("site.key"));
    let first = write_cert(&cert, &key);
    let path = dir.path().join("usher.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"\"\n\
             [server.tls]\nlisten = [\"127.0.0.1:0\"]\n\
             [[server.tls.certificates]]\ncert = \"site.crt\"\nkey = \"site.key\"\n\
             [origin]\nurl = \"http://{}\"\n",
            origin.addr
        ),
    )
    .unwrap();
    let cfg = usher::config::Config::load(&path).unwrap();
    let app = usher::app::App::new(cfg, usher::logging::LogHandle::none()).unwrap();
    let listeners = usher::server::Listeners::bind(&app).await.unwrap();
    let running = usher::server::serve(app.clone(), listeners);
    let tls = running.bound.tls[0];
    assert_eq!(served_cert(tls).await.as_deref(), Some(&first[..]));

    // Garbage in the certificate file (as if a deploy wrote half a file).
    std::fs::write(&cert, b"-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    let err = app
        .reload()
        .await
        .expect_err("a garbage certificate fails the reload");
    assert!(err.to_string().contains("site.crt"), "{err}");
    assert_eq!(
        served_cert(tls).await.as_deref(),
        Some(&first[..]),
        "the old certificate is still served"
    );
    // Garbage in the key only.
    let second = write_cert(&cert, &key);
    std::fs::write(&key, b"not a key").unwrap();
    assert!(app.reload().await.is_err());
    assert_eq!(served_cert(tls).await.as_deref(), Some(&first[..]));
    // A good pair loads.
    let third = write_cert(&cert, &key);
    assert_ne!(second, third);
    app.reload().await.expect("a good certificate reloads");
    assert_eq!(served_cert(tls).await.as_deref(), Some(&third[..]));
    running.shutdown(Duration::from_secs(2)).await;
}

/// A config for the real binary in front of `origin`; its admin API takes
/// the support module's [`ADMIN_TOKEN`].
fn child_config(origin: SocketAddr, extra: &str) -> String {
    let token = crate::support::admin_token_file();
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
         admin_token_file = \"{}\"\n{extra}\n\
         [origin]\nurl = \"http://{origin}\"\n[log]\nformat = \"json\"\n",
        token.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_config_and_a_sighup_storm_leave_usher_serving() {
    let origin = Recorder::start().await;
    let dir = TempDir::new("hup");
    let path = dir.path().join("usher.toml");
    std::fs::write(&path, child_config(origin.addr, "")).unwrap();
    let mut usher = UsherProcess::run(&path);
    let addr = usher.addr();
    assert_eq!(probe(addr, PROBE_BOUND).await, 200);

    // Config file gone, then SIGHUP: the reload fails, the running config stays.
    std::fs::remove_file(&path).unwrap();
    usher.signal(libc::SIGHUP);
    assert!(
        usher
            .wait_logged("config reload failed", 1, Duration::from_secs(5))
            .await,
        "{:?}",
        usher.logs()
    );
    assert!(usher.alive());
    assert_eq!(probe(addr, PROBE_BOUND).await, 200);

    // 100 SIGHUPs in a second, with the file back: still serving, no crash.
    std::fs::write(&path, child_config(origin.addr, "")).unwrap();
    let storm = tokio::task::spawn_blocking({
        let pid = usher.pid();
        move || {
            for _ in 0..100 {
                // SAFETY: signals our own child.
                unsafe {
                    libc::kill(pid, libc::SIGHUP);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
    while !storm.is_finished() {
        assert_eq!(probe(addr, PROBE_BOUND).await, 200);
    }
    storm.await.unwrap();
    assert!(
        usher
            .wait_logged("config reloaded", 1, Duration::from_secs(5))
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(usher.alive(), "usher died in the SIGHUP storm");
    assert_eq!(probe(addr, PROBE_BOUND).await, 200);
    eprintln!(
        "100 SIGHUPs: {} reloads done, {} failed (the deleted file)",
        usher.logged("config reloaded"),
        usher.logged("config reload failed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_draining_finishes_in_flight_requests_and_exits_0() {
    // An origin that takes a second per request.
    let origin = raw_origin(|mut s| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow")
            .await;
    })
    .await;
    let dir = TempDir::new("term");
    let path = dir.path().join("usher.toml");
    std::fs::write(
        &path,
        child_config(origin, "") + "[room]\nmode = \"passthrough\"\n",
    )
    .unwrap();
    let mut usher = UsherProcess::run(&path);
    let (addr, admin) = (usher.addr(), usher.admin());
    // Drain mode first (the balancer is moving visitors away) ...
    let drained = exchange(
        admin,
        format!(
            "POST /admin/drain HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(drained.statuses(), [200], "{}", drained.text());
    // ... requests in flight ...
    let in_flight: Vec<_> = (0..5)
        .map(|_| tokio::spawn(exchange(addr, GET, Duration::from_secs(10))))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... then SIGTERM, and another during the drain.
    usher.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    usher.signal(libc::SIGTERM);
    for r in in_flight {
        let reply = r.await.unwrap();
        assert_eq!(reply.statuses(), [200], "{}", reply.text());
        assert!(reply.text().ends_with("slow"));
    }
    let status = usher
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("usher exits after the drain");
    assert_eq!(status.code(), Some(0), "{:?}", usher.logs());
    // Nothing listens any more.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_descriptors_exhausted_then_recovered() {
    let origin = Recorder::start().await;
    let dir = TempDir::new("nofile");
    let path = dir.path().join("usher.toml");
    std::fs::write(
        &path,
        child_config(
            origin.addr,
            "header_read_timeout = \"30s\"\nmax_connections_per_ip = 0",
        ),
    )
    .unwrap();
    let mut usher = UsherProcess::run_nofile(&path, 64);
    let addr = usher.addr();
    assert_eq!(probe(addr, PROBE_BOUND).await, 200);
    // More connections than usher has descriptors.
    let mut held = Vec::new();
    for _ in 0..150 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await
        {
            held.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(usher.alive(), "usher died out of descriptors");
    let fds = usher.fds();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", usher.pid())).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .split_whitespace()
        .nth(3)
        .unwrap_or_default()
        .to_string();
    assert_eq!(nofile, "64", "the limit applies: {limits}");
    assert!(
        usher
            .wait_logged("accept failed", 1, Duration::from_secs(3))
            .await,
        "usher should have run out of descriptors"
    );
    // They leave; usher serves again.
    drop(held);
    let started = Instant::now();
    let status = loop {
        let s = tokio::time::timeout(
            Duration::from_secs(2),
            exchange(
                addr,
                b"GET /again HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                Duration::from_secs(2),
            ),
        )
        .await
        .ok()
        .and_then(|r| r.statuses().first().copied());
        if s == Some(200) || started.elapsed() > Duration::from_secs(10) {
            break s;
        }
    };
    assert_eq!(status, Some(200), "usher did not recover");
    assert!(usher.alive());
    eprintln!(
        "ulimit -n 64: {fds} fds in use at the peak, serving again {:?} after the clients left",
        started.elapsed()
    );
}

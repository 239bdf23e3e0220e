//! The command line and the process: `usher check` (every mistake with its
//! file and line, exit 78; the effective config otherwise; more in
//! `tests/ops/check.rs`) and the graceful stop on SIGTERM.

use crate::support as common;

use std::time::{Duration, Instant};

use common::clients::{connect, get};
use common::process::{bin, check, text, UsherProcess};
use common::{within, Origin, Reply, TempDir};

const THREE_MISTAKES: &str = r#"# three mistakes, in three sections
[server]
listen = ["127.0.0.1:0"]
max_connections = 0

[origin]
url = "ftp://origin.example"
max_in_flight = 4

[log]
level = "info"
colour = "blue"
"#;

#[test]
fn check_reports_every_mistake_with_file_and_line() {
    let dir = TempDir::new("check-bad");
    let path = dir.write("bad.toml", THREE_MISTAKES);
    let out = check(&path);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "stderr:\n{err}");
    let file = path.display().to_string();
    for (line, key, words) in [
        (4, "server.max_connections", "at least 1"),
        (7, "origin.url", "ftp://origin.example"),
        (12, "log", "colour"),
    ] {
        let at = format!("{file}:{line}: {key}");
        assert!(
            err.lines().any(|l| l.contains(&at) && l.contains(words)),
            "no line with `{at}` and `{words}` in:\n{err}"
        );
    }
    assert!(err.contains("3 problems"), "{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout for a bad config");
}

#[test]
fn check_prints_the_effective_config_which_checks_again() {
    let dir = TempDir::new("check-good");
    // check opens the files the config names: a real pair
    let (cert, key) =
        usher::tls::dev_certificate(&["localhost".to_string()], 2).expect("dev certificate");
    dir.write("a.crt", &cert);
    dir.write("a.key", &key);
    let path = dir.write(
        "good.toml",
        "[server]\nlisten = [\"127.0.0.1:8081\"]\nadmin = \"\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n\
         max_request_body = \"1000\"\n\n\
         [server.tls]\nlisten = [\"[::1]:8443\"]\n[[server.tls.certificates]]\ncert = \"a.crt\"\nkey = \"a.key\"\n\n\
         [origin]\nurl = \"http://127.0.0.1:8000\"\nmax_in_flight = 12\n\n[log]\naccess = \"json\"\n",
    );
    let out = check(&path);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", text(&out.stderr));
    for expected in [
        "listen = [\"127.0.0.1:8081\"]",
        "max_in_flight = 12",
        "max_request_body = \"1000\"",
        "trusted_proxies = [\"10.0.0.0/8\", \"::1/128\"]",
        "listen = [\"[::1]:8443\"]",
        "access = \"json\"",
        // defaults filled in
        "max_queue = 1024",
        "shutdown_grace = \"30s\"",
        "[log]",
    ] {
        assert!(
            shown.contains(expected),
            "`{expected}` missing from:\n{shown}"
        );
    }
    // what `check` prints is itself a valid config with the same meaning
    let again = dir.write("effective.toml", &shown);
    let out = check(&again);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the effective config does not check:\n{}\n{shown}",
        text(&out.stderr)
    );
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&text(&out.stdout)), body(&shown));
}

#[test]
fn check_accepts_tls_to_redis_and_names_a_bad_tls_file() {
    let dir = TempDir::new("check-redis-tls");
    common::dev_cert(&dir);
    dir.write("ca.pem", "this is not a certificate\n");
    let config = |ca: &str| {
        format!(
            "[origin]\nurl = \"http://127.0.0.1:8000\"\n\n[store]\nbackend = \"redis\"\n\
             url = \"redis://usher@10.0.0.30:6379/0\"\ntls = true\nca_file = \"{ca}\"\n\
             client_cert_file = \"dev.crt\"\nclient_key_file = \"dev.key\"\n"
        )
    };
    let good = dir.write("good.toml", &config("dev.crt"));
    let out = check(&good);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", text(&out.stderr));

    let bad = dir.write("bad.toml", &config("ca.pem"));
    let out = check(&bad);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "stderr:\n{err}");
    assert!(
        err.contains("store.ca_file") && err.contains("ca.pem") && err.contains("no CERTIFICATE"),
        "{err}"
    );
}

fn slow_origin(delay: Duration) -> impl Fn(&common::Recorded) -> Reply {
    move |_| Reply::Delay(delay, Box::new(Reply::ok("finished")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish() {
    let origin = Origin::start(slow_origin(Duration::from_millis(1500))).await;
    let cfg = common::config(origin.addr, "shutdown_grace = \"5s\"", "", "");
    let mut p = UsherProcess::spawn(TempDir::new("sigterm"), &cfg).await;
    within(15, "SIGTERM drain", async {
        let addr = p.addr();
        let in_flight = tokio::spawn(async move { get(addr, "/slow").await });
        origin.wait_for(1).await;
        let stopped_at = Instant::now();
        p.signal(libc::SIGTERM);

        // new connections are refused while the old request finishes
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                break;
            }
            assert!(Instant::now() < deadline, "still accepting after SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!in_flight.is_finished());

        let r = in_flight.await.unwrap();
        assert_eq!((r.status(), r.text().as_str()), (200, "finished"));
        let status = p
            .wait_exit(Duration::from_secs(5))
            .await
            .expect("usher exits");
        assert!(status.success(), "exit status {status}");
        assert!(stopped_at.elapsed() < Duration::from_secs(5));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_within_the_grace_even_if_a_request_does_not() {
    let origin = Origin::start(slow_origin(Duration::from_secs(30))).await;
    let cfg = common::config(origin.addr, "shutdown_grace = \"500ms\"", "", "");
    let mut p = UsherProcess::spawn(TempDir::new("sigterm-grace"), &cfg).await;
    within(15, "SIGTERM past the grace", async {
        let mut c = connect(p.addr()).await;
        c.send(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        origin.wait_for(1).await;
        let stopped_at = Instant::now();
        p.signal(libc::SIGTERM);
        let status = p
            .wait_exit(Duration::from_secs(5))
            .await
            .expect("usher exits");
        let took = stopped_at.elapsed();
        assert!(status.success(), "exit status {status}");
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(3),
            "{took:?}"
        );
        // and an idle keep-alive client is closed too, not left hanging
        let _ = c.read_response("GET").await;
    })
    .await;
}

#[test]
fn check_on_a_missing_file_exits_78() {
    let dir = TempDir::new("check-missing");
    let out = check(&dir.path().join("nope.toml"));
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains("nope.toml"),
        "{}",
        text(&out.stderr)
    );
}

/// `usher run` refuses a bad config the way `check` does, and a port that
/// is taken stops the start with a message naming it.
#[test]
fn run_refuses_a_bad_config_and_a_taken_port() {
    let dir = TempDir::new("run-bad");
    let path = dir.write("bad.toml", THREE_MISTAKES);
    let out = bin()
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .expect("run usher");
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains("origin.url"),
        "{}",
        text(&out.stderr)
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let path = dir.write(
        "taken.toml",
        &format!(
            "[server]\nlisten = [\"{addr}\"]\nadmin = \"\"\n\n[origin]\nurl = \"http://127.0.0.1:1\"\n"
        ),
    );
    let out = bin()
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .expect("run usher");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

/// A SIGHUP that comes the moment usher listens (systemd's ExecReload, a
/// deploy script) reloads; it must not find the default action, which
/// ends the process.
#[test]
fn sighup_right_after_start_reloads_and_does_not_kill() {
    use std::io::BufRead;
    let dir = TempDir::new("early-hup");
    let path = dir.write(
        "usher.toml",
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n\n\
         [origin]\nurl = \"http://127.0.0.1:1\"\n\n[log]\nformat = \"json\"\n",
    );
    for round in 0..5 {
        let mut child = bin()
            .args(["run", "-c"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn usher");
        let pid = child.id() as i32;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watchdog = {
            let done = done.clone();
            std::thread::spawn(move || {
                // bounds the test: a usher that neither reloads nor exits is killed
                for _ in 0..100 {
                    if done.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                // SAFETY: kill(2) on our own child, reaped only after `done` is set.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            })
        };
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut hup_sent = false;
        let mut reloaded = false;
        // the reader sees each line as usher writes it; the first
        // "listening" line is the earliest a client could know it is up
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if !hup_sent && line.contains("\"listening\"") {
                // SAFETY: kill(2) on our own child, not yet reaped.
                assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
                hup_sent = true;
            }
            if line.contains("config reloaded") {
                reloaded = true;
                break;
            }
        }
        let alive = matches!(child.try_wait(), Ok(None));
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        watchdog.join().unwrap();
        let _ = child.kill();
        let status = child.wait().unwrap();
        assert!(hup_sent, "round {round}: usher never listened ({status})");
        assert!(
            reloaded && alive,
            "round {round}: an early SIGHUP ended usher ({status})"
        );
    }
}

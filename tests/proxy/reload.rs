//! Live reload of the real binary: a broken file keeps the running config
//! (and says so in the metrics), reloads under load lose no request, and a
//! moved listener is reported as needing a restart.

use crate::support as common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::clients::{admin_get, admin_post, connect, get};
use common::inproc::metric;
use common::process::UsherProcess;
use common::{within, Origin, TempDir};

const RELOAD_OK: &str = "usher_config_reloads_total{result=\"success\"}";
const RELOAD_FAILED: &str = "usher_config_reloads_total{result=\"failure\"}";
const LAST_OK: &str = "usher_config_last_reload_successful";

fn cfg(origin: &Origin, max_in_flight: usize, idle: &str) -> String {
    common::config(
        origin.addr,
        "",
        &format!("max_in_flight = {max_in_flight}\nidle_timeout = \"{idle}\""),
        "",
    )
}

async fn metrics(p: &UsherProcess) -> String {
    let r = get(p.admin(), "/metrics").await;
    assert_eq!(r.status(), 200);
    r.text()
}

async fn status(p: &UsherProcess) -> serde_json::Value {
    let r = admin_get(p.admin(), "/admin/status").await;
    assert_eq!(r.status(), 200);
    serde_json::from_slice(&r.body).expect("status JSON")
}

async fn reload(p: &UsherProcess) -> (u16, serde_json::Value) {
    let r = admin_post(p.admin(), "/admin/reload", "").await;
    (
        r.status(),
        serde_json::from_slice(&r.body).expect("reload JSON"),
    )
}

/// Waits until the metric `series` reads `value`.
async fn metric_reaches(p: &UsherProcess, series: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics(p).await;
        if metric(&m, series) == Some(value) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never reached {value}; now {:?}",
            metric(&m, series)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_config_keeps_the_running_one() {
    let origin = Origin::ok().await;
    let p = UsherProcess::spawn(TempDir::new("reload-bad"), &cfg(&origin, 7, "60s")).await;
    within(30, "reload failure", async {
        assert_eq!(get(p.addr(), "/").await.status(), 200);

        p.write("usher.toml", "[origin\nurl = \"http://127.0.0.1:1\"\n");
        p.signal(libc::SIGHUP);
        metric_reaches(&p, RELOAD_FAILED, 1.0).await;
        let m = metrics(&p).await;
        assert_eq!(metric(&m, LAST_OK), Some(0.0), "{m}");
        assert_eq!(metric(&m, RELOAD_OK), Some(0.0));
        // still serving, on the old config
        assert_eq!(get(p.addr(), "/").await.status(), 200);
        assert_eq!(status(&p).await["origin"]["max_in_flight"], 7);
        // the log line may reach the pipe a moment after the metric moved
        let logged = || {
            p.logs()
                .iter()
                .any(|l| l.contains("keeping the running config") && l.contains("usher.toml:1"))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !logged() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            logged(),
            "the failure is logged with file and line:\n{}",
            p.logs().join("\n")
        );

        // fixed, through the admin API
        p.write("usher.toml", &cfg(&origin, 9, "60s"));
        let (code, body) = reload(&p).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["result"], "success");
        assert_eq!(body["restart_required"], serde_json::json!([]));
        let m = metrics(&p).await;
        assert_eq!(metric(&m, LAST_OK), Some(1.0));
        assert_eq!(metric(&m, RELOAD_OK), Some(1.0));
        assert_eq!(status(&p).await["origin"]["max_in_flight"], 9);

        // a mistake through the admin API: refused, said why, nothing changed
        p.write("usher.toml", &cfg(&origin, 0, "60s"));
        let (code, body) = reload(&p).await;
        assert_eq!(code, 422, "{body}");
        assert_eq!(body["result"], "failure");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("origin.max_in_flight"), "{error}");
        assert_eq!(status(&p).await["origin"]["max_in_flight"], 9);
        assert_eq!(get(p.addr(), "/").await.status(), 200);
    })
    .await;
}

/// Keep-alive clients sending requests back to back until told to stop;
/// every answer must be a 200.
fn start_load(
    addr: std::net::SocketAddr,
    clients: usize,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|i| {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            tokio::spawn(async move {
                let mut c = connect(addr).await;
                let req = format!("GET /load/{i} HTTP/1.1\r\nHost: x\r\n\r\n");
                while !stop.load(Ordering::Relaxed) {
                    let answer = async {
                        c.send(req.as_bytes()).await?;
                        c.read_response("GET").await
                    };
                    match tokio::time::timeout(Duration::from_secs(5), answer).await {
                        Ok(Ok(r)) if r.status() == 200 && r.text() == "ok" => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Ok(r)) => {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{}: {}", r.status(), r.text()))
                        }
                        Ok(Err(e)) => {
                            failures.lock().unwrap().push(format!("client {i}: {e}"));
                            return;
                        }
                        Err(_) => {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("client {i}: timeout"));
                            return;
                        }
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_lose_no_request() {
    let origin = Origin::ok().await;
    // The two configs differ in the in-flight cap and in a setting that
    // makes usher build a new origin client, so each reload swaps both.
    let configs = [cfg(&origin, 4, "60s"), cfg(&origin, 8, "61s")];
    let p = UsherProcess::spawn(TempDir::new("reload-load"), &configs[0]).await;
    within(45, "50 reloads under load", async {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let load = start_load(p.addr(), 4, stop.clone(), ok.clone(), failures.clone());

        for i in 0..50usize {
            let next = (i + 1) % 2;
            p.write("usher.toml", &configs[next]);
            if i % 2 == 0 {
                p.signal(libc::SIGHUP);
                metric_reaches(&p, RELOAD_OK, (i + 1) as f64).await;
            } else {
                let (code, body) = reload(&p).await;
                assert_eq!(
                    (code, &body["result"]),
                    (200, &serde_json::json!("success")),
                    "{body}"
                );
            }
            let want = if next == 0 { 4 } else { 8 };
            assert_eq!(
                status(&p).await["origin"]["max_in_flight"],
                want,
                "reload {i}"
            );
        }
        // let the clients run on the last config too
        let before = ok.load(Ordering::Relaxed);
        while ok.load(Ordering::Relaxed) < before + 20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for t in load {
            t.await.unwrap();
        }
        let m = metrics(&p).await;
        assert_eq!(metric(&m, RELOAD_OK), Some(50.0));
        assert_eq!(metric(&m, RELOAD_FAILED), Some(0.0));
        let failures = failures.lock().unwrap();
        let ok = ok.load(Ordering::Relaxed);
        eprintln!("{ok} requests answered during 50 reloads");
        assert!(
            failures.is_empty(),
            "{} failed: {:?}",
            failures.len(),
            *failures
        );
        assert!(ok >= 100, "only {ok} requests went through");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_listener_needs_a_restart() {
    let origin = Origin::ok().await;
    let text = cfg(&origin, 4, "60s");
    let p = UsherProcess::spawn(TempDir::new("reload-listen"), &text).await;
    within(20, "listen change", async {
        let moved = text.replace(
            "listen = [\"127.0.0.1:0\"]",
            "listen = [\"127.0.0.1:0\", \"127.0.0.1:1\"]",
        );
        assert_ne!(moved, text);
        p.write("usher.toml", &moved);
        let (code, body) = reload(&p).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            body["restart_required"],
            serde_json::json!(["server.listen"])
        );
        assert_eq!(
            status(&p).await["restart_required"],
            serde_json::json!(["server.listen"])
        );
        assert_eq!(
            metric(&metrics(&p).await, "usher_config_restart_required"),
            Some(1.0)
        );
        // still serving where it was
        assert_eq!(get(p.addr(), "/").await.status(), 200);

        // back to what is bound: nothing left to restart for
        p.write("usher.toml", &text);
        p.signal(libc::SIGHUP);
        metric_reaches(&p, RELOAD_OK, 2.0).await;
        assert_eq!(status(&p).await["restart_required"], serde_json::json!([]));
    })
    .await;
}

/// New TLS handshakes get a certificate replaced on reload; a broken
/// certificate file keeps the running one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_too() {
    let origin = Origin::ok().await;
    let dir = TempDir::new("reload-tls");
    let (_, _, first) = common::dev_cert(&dir);
    let text = common::config(
        origin.addr,
        "",
        "",
        "[server.tls]\nlisten = [\"127.0.0.1:0\"]\n\n[[server.tls.certificates]]\ncert = \"dev.crt\"\nkey = \"dev.key\"\n",
    );
    let p = UsherProcess::spawn(dir, &text).await;
    let tls = p.tls().expect("TLS listener");
    within(20, "certificate reload", async {
        let https_get = |pem: String| async move {
            let s = common::clients::try_tls_connect(tls, &pem, &[b"http/1.1"]).await?;
            let mut c = common::Conn::new(s);
            c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await?;
            c.read_response("GET").await.map(|r| r.status())
        };
        assert_eq!(https_get(first.clone()).await.unwrap(), 200);

        let (_, _, second) = common::dev_cert(p.dir());
        assert_ne!(first, second);
        p.signal(libc::SIGHUP);
        metric_reaches(&p, RELOAD_OK, 1.0).await;
        assert_eq!(https_get(second.clone()).await.unwrap(), 200);
        assert!(
            https_get(first.clone()).await.is_err(),
            "old certificate still served"
        );

        p.write("dev.crt", "not a certificate");
        let (code, body) = reload(&p).await;
        assert_eq!(code, 422, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("dev.crt"),
            "{body}"
        );
        assert_eq!(
            https_get(second).await.unwrap(),
            200,
            "the running certificate stays"
        );
    })
    .await;
}

//! Idle HTTP/1 connections are parked between requests (hyper's buffers
//! released, the socket kept): what a client sees must not change. A
//! connection keeps serving after idle pauses, pipelined requests included,
//! over plain TCP and TLS; the smuggling guard still holds; the idle
//! timeout and the drain on shutdown still close it.

use crate::support as common;

use std::time::Duration;

use tokio::net::TcpStream;

use common::inproc::Usher;
use common::{clients, within, Conn, Origin, TempDir};

/// Long enough for a connection to park after its answer.
const PAUSE: Duration = Duration::from_millis(300);

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n")
}

async fn roundtrip<S>(c: &mut Conn<S>, path: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    c.send(get(path).as_bytes()).await.unwrap();
    let r = c.read_response("GET").await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_serves_after_idle_pauses() {
    within(20, "keep-alive across idle pauses", async {
        let origin = Origin::ok().await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        let mut c = Conn::new(TcpStream::connect(usher.addr).await.unwrap());
        roundtrip(&mut c, "/1").await;
        tokio::time::sleep(PAUSE).await;
        roundtrip(&mut c, "/2").await;
        tokio::time::sleep(PAUSE).await;
        // Three pipelined in one write, then one more after a pause.
        c.send(format!("{}{}{}", get("/3"), get("/4"), get("/5")).as_bytes())
            .await
            .unwrap();
        for _ in 0..3 {
            assert_eq!(c.read_response("GET").await.unwrap().status(), 200);
        }
        tokio::time::sleep(PAUSE).await;
        // A head split over two writes with a pause inside it.
        c.send(b"GET /6 HTTP/1.1\r\nHo").await.unwrap();
        tokio::time::sleep(PAUSE).await;
        c.send(b"st: a\r\n\r\n").await.unwrap();
        assert_eq!(c.read_response("GET").await.unwrap().status(), 200);
        // A body sent after a pause.
        c.send(b"POST /7 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe")
            .await
            .unwrap();
        tokio::time::sleep(PAUSE).await;
        c.send(b"llo").await.unwrap();
        assert_eq!(c.read_response("POST").await.unwrap().status(), 200);
        let seen = origin.wait_for(7).await;
        let targets: Vec<_> = seen.iter().map(|r| r.target().to_owned()).collect();
        assert_eq!(targets, ["/1", "/2", "/3", "/4", "/5", "/6", "/7"]);
        assert_eq!(seen[6].body, b"hello");
        let m = usher.metrics();
        let open: f64 = m
            .lines()
            .filter(|l| l.starts_with("usher_connections_open{") && l.contains("http1"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(open, 1.0, "one connection counted open while parked:\n{m}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smuggling_guard_holds_after_a_pause() {
    within(20, "guard after parking", async {
        let origin = Origin::ok().await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        let mut c = Conn::new(TcpStream::connect(usher.addr).await.unwrap());
        roundtrip(&mut c, "/first").await;
        tokio::time::sleep(PAUSE).await;
        c.send(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
              0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(c.read_response("POST").await.unwrap().status(), 400);
        assert!(c.closed_within(Duration::from_secs(5)).await);
        tokio::time::sleep(PAUSE).await;
        let seen = origin.take();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].target(), "/first");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_keep_alive_serves_after_idle_pauses() {
    let dir = TempDir::new("park-tls");
    within(20, "TLS keep-alive across idle pauses", async {
        let origin = Origin::ok().await;
        let (cert, key, pem) = common::dev_cert(&dir);
        let tls = format!(
            "[server.tls]\nlisten = [\"127.0.0.1:0\"]\n\n[[server.tls.certificates]]\n\
             cert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
        let usher = Usher::start(&common::config(origin.addr, "", "", &tls)).await;
        let tls = clients::tls_connect(usher.tls.unwrap(), &pem, &[b"http/1.1"]).await;
        let mut c = Conn::new(tls);
        for i in 0..3 {
            roundtrip(&mut c, &format!("/{i}")).await;
            tokio::time::sleep(PAUSE).await;
        }
        assert_eq!(origin.wait_for(3).await.len(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_still_times_out() {
    within(20, "idle timeout while parked", async {
        let origin = Origin::ok().await;
        let toml = common::config(origin.addr, "header_read_timeout = \"1s\"", "", "");
        let usher = Usher::start(&toml).await;
        let mut c = Conn::new(TcpStream::connect(usher.addr).await.unwrap());
        roundtrip(&mut c, "/").await;
        assert!(
            c.closed_within(Duration::from_secs(8)).await,
            "an idle keep-alive connection is closed after header_read_timeout"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_closes_parked_connections() {
    within(20, "drain while parked", async {
        let origin = Origin::ok().await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        let mut c = Conn::new(TcpStream::connect(usher.addr).await.unwrap());
        roundtrip(&mut c, "/").await;
        tokio::time::sleep(PAUSE).await;
        let left = usher.shutdown(Duration::from_secs(5)).await;
        assert_eq!(left, 0, "the parked connection closed within the grace");
        assert!(c.closed_within(Duration::from_secs(5)).await);
    })
    .await;
}

//! The same forwarding over every way a client reaches usher: HTTP/1.1,
//! h2c (prior knowledge), TLS with ALPN h2 and TLS with ALPN http/1.1.

use crate::support as common;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use common::clients::{self, h2_send};
use common::inproc::Usher;
use common::{within, Conn, Origin, Recorded, Reply, TempDir};

const HOST: &str = "cinema.example";

fn origin_replies(r: &Recorded) -> Reply {
    match r.target() {
        "/trailers" => Reply::Chunked {
            headers: vec![("Trailer".into(), "X-Checksum".into())],
            chunks: vec![b"hello ".to_vec(), b"world".to_vec()],
            trailers: vec![("X-Checksum".into(), "abc123".into())],
        },
        _ => Reply::Full {
            status: 200,
            headers: vec![
                ("Set-Cookie".into(), "s=1".into()),
                ("Set-Cookie".into(), "t=2".into()),
            ],
            body: format!("echo {} bytes", r.body_len).into_bytes(),
        },
    }
}

/// Starts an origin and usher with a plain and a TLS listener (dev
/// certificate in `dir`); returns them with the certificate PEM.
async fn setup(dir: &TempDir) -> (Origin, Usher, String) {
    let origin = Origin::start(origin_replies).await;
    let (cert, key, pem) = common::dev_cert(dir);
    let tls = format!(
        "[server.tls]\nlisten = [\"127.0.0.1:0\"]\n\n[[server.tls.certificates]]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let usher = Usher::start(&common::config(origin.addr, "", "", &tls)).await;
    (origin, usher, pem)
}

/// Checks what the origin saw for the h2 request sent by `h2_exchange`.
fn check_h2_request(seen: &Recorded, proto: &str) {
    let h = &seen.head;
    assert_eq!(h.first_line, "POST /h2/a%2Fb?x=%20&y HTTP/1.1");
    assert_eq!(h.get_all("host"), [HOST]);
    assert_eq!(h.get_all("x-forwarded-proto"), [proto]);
    assert_eq!(h.get_all("x-forwarded-host"), [HOST]);
    assert_eq!(h.get_all("x-multi"), ["1", "2"]);
    assert_eq!(h.get_all("te"), ["trailers"]);
    assert_eq!(seen.body, b"payload!");
    // HTTP/2 clients send cookies as separate fields; an HTTP/1.1 origin
    // must get them as one (RFC 9113 §8.2.3; many servers read only one).
    assert_eq!(
        h.get_all("cookie"),
        ["a=1; b=2; c=3"],
        "{}",
        String::from_utf8_lossy(&h.raw)
    );
}

async fn h2_exchange(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    scheme: &str,
) {
    let req = Request::builder()
        .method("POST")
        .uri(format!("{scheme}://{HOST}/h2/a%2Fb?x=%20&y"))
        .header("x-multi", "1")
        .header("cookie", "a=1")
        .header("x-multi", "2")
        .header("cookie", "b=2; c=3")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"payload!")))
        .unwrap();
    let r = h2_send(send, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "echo 8 bytes");
    let cookies: Vec<_> = r.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["s=1", "t=2"]);

    let req = Request::builder()
        .uri(format!("{scheme}://{HOST}/trailers"))
        .header("te", "trailers")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = h2_send(send, req).await;
    assert_eq!(r.body, "hello world");
    let trailers = r.trailers.expect("trailers relayed over h2");
    assert_eq!(trailers["x-checksum"], "abc123");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge() {
    let dir = TempDir::new("h2c");
    within(15, "h2c", async {
        let (origin, usher, _) = setup(&dir).await;
        let mut send = clients::h2c(usher.addr).await;
        h2_exchange(&mut send, "http").await;
        let seen = origin.wait_for(2).await;
        check_h2_request(&seen[0], "http");
        assert!(usher.metrics().contains("protocol=\"h2\""));
    })
    .await;
}

/// usher's h2 (vendor/h2) lets go of a connection's buffers whenever a
/// read finds nothing (here: while each client waits for its answers), and
/// of its write buffer once all is written: its next requests, sent as
/// references to the header tables both sides built, must come through
/// the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_connection_that_went_idle_serves_its_next_requests_the_same() {
    let dir = TempDir::new("h2-idle");
    within(15, "h2 after idle", async {
        let (origin, usher, pem) = setup(&dir).await;
        let mut h2c = clients::h2c(usher.addr).await;
        let tls = clients::tls_connect(usher.tls.unwrap(), &pem, &[b"h2"]).await;
        let mut h2 = clients::h2_over(tls).await;
        for _ in 0..3 {
            h2_exchange(&mut h2c, "http").await;
            h2_exchange(&mut h2, "https").await;
            let seen = origin.wait_for(4).await;
            let mut posts = seen
                .iter()
                .filter(|r| r.head.first_line.starts_with("POST"));
            let (a, b) = (posts.next().unwrap(), posts.next().unwrap());
            let (plain, tls) = if a.head.get_all("x-forwarded-proto") == ["http"] {
                (a, b)
            } else {
                (b, a)
            };
            check_h2_request(plain, "http");
            check_h2_request(tls, "https");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_alpn_h2() {
    let dir = TempDir::new("tls-h2");
    within(15, "TLS h2", async {
        let (origin, usher, pem) = setup(&dir).await;
        let tls = clients::tls_connect(usher.tls.unwrap(), &pem, &[b"h2", b"http/1.1"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut send = clients::h2_over(tls).await;
        h2_exchange(&mut send, "https").await;
        let seen = origin.wait_for(2).await;
        check_h2_request(&seen[0], "https");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_alpn_http11_and_plain_http11() {
    let dir = TempDir::new("tls-h1");
    within(15, "TLS and plain HTTP/1.1", async {
        let (origin, usher, pem) = setup(&dir).await;
        let raw = format!(
            "POST /h1?q=%7E HTTP/1.1\r\nHost: {HOST}\r\nCookie: a=1; b=2\r\nContent-Length: 5\r\n\r\nhello"
        );
        let tls = clients::tls_connect(usher.tls.unwrap(), &pem, &[b"http/1.1"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let mut c = Conn::new(tls);
        c.send(raw.as_bytes()).await.unwrap();
        let r = c.read_response("POST").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text(), "echo 5 bytes");
        assert_eq!(r.head.get_all("set-cookie"), ["s=1", "t=2"]);

        let r = clients::exchange(usher.addr, raw.as_bytes()).await;
        assert_eq!(r.text(), "echo 5 bytes");

        let seen = origin.wait_for(2).await;
        for (s, proto) in seen.iter().zip(["https", "http"]) {
            assert_eq!(s.head.first_line, "POST /h1?q=%7E HTTP/1.1");
            assert_eq!(s.head.get_all("x-forwarded-proto"), [proto]);
            assert_eq!(s.head.get_all("cookie"), ["a=1; b=2"]);
            assert_eq!(s.body, b"hello");
        }
    })
    .await;
}

/// A client that opens a connection and sends its head too slowly
/// (slowloris), or never finishes a TLS handshake, is cut off.
/// A TLS connection's first request waits for the socket without a read
/// buffer (the relay's `read_plan`): one that comes late, and in parts,
/// is served all the same, and so is the next on the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connections_late_first_request_is_served() {
    let dir = TempDir::new("tls-late");
    within(15, "TLS late first request", async {
        let (origin, usher, pem) = setup(&dir).await;
        let tls = clients::tls_connect(usher.tls.unwrap(), &pem, &[b"http/1.1"]).await;
        let mut c = Conn::new(tls);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        c.send(b"GET /late HTTP/1.1\r\nHo").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        c.send(format!("st: {HOST}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let r = c.read_response("GET").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text(), "echo 0 bytes");
        c.send(format!("GET /again HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(c.read_response("GET").await.unwrap().status(), 200);
        let seen = origin.wait_for(2).await;
        assert_eq!(seen[0].head.first_line, "GET /late HTTP/1.1");
        assert_eq!(seen[0].head.get_all("x-forwarded-proto"), ["https"]);
        assert_eq!(seen[1].head.first_line, "GET /again HTTP/1.1");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let dir = TempDir::new("slowloris");
    within(15, "slow clients", async {
        let origin = Origin::start(origin_replies).await;
        let (cert, key, pem) = common::dev_cert(&dir);
        let tail = format!(
            "[server.tls]\nlisten = [\"127.0.0.1:0\"]\nhandshake_timeout = \"500ms\"\n\n\
             [[server.tls.certificates]]\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
        let cfg = common::config(origin.addr, "header_read_timeout = \"500ms\"", "", &tail);
        let usher = Usher::start(&cfg).await;
        let wait = std::time::Duration::from_secs(3);

        // nothing at all
        let mut idle = clients::connect(usher.addr).await;
        // half a head, then silence
        let mut partial = clients::connect(usher.addr).await;
        partial
            .send(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // a TLS client that never says hello
        let mut mute = clients::connect(usher.tls.unwrap()).await;
        // TLS, then nothing (the relay waits without a read buffer); TLS,
        // then half a head
        let tls = clients::tls_connect(usher.tls.unwrap(), &pem, &[b"http/1.1"]).await;
        let mut tls_idle = Conn::new(tls);
        let tls = clients::tls_connect(usher.tls.unwrap(), &pem, &[b"http/1.1"]).await;
        let mut tls_partial = Conn::new(tls);
        tls_partial
            .send(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();

        let started = std::time::Instant::now();
        assert!(idle.closed_within(wait).await, "idle connection kept");
        // hyper may answer 408 before closing; either way the socket ends
        let _ = partial.read_response("GET").await;
        assert!(
            partial.closed_within(wait).await,
            "slowloris connection kept"
        );
        assert!(
            mute.closed_within(wait).await,
            "TLS connection without a handshake kept"
        );
        assert!(
            tls_idle.closed_within(wait).await,
            "TLS connection without a request kept"
        );
        let _ = tls_partial.read_response("GET").await;
        assert!(
            tls_partial.closed_within(wait).await,
            "TLS slowloris connection kept"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
        assert_eq!(origin.connections(), 0);
    })
    .await;
}

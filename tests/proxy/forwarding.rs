//! What reaches the origin: requests arrive as the client sent them (apart
//! from the documented forwarding headers), hop-by-hop fields never cross,
//! forwarding headers cannot be spoofed, and ambiguous framing is refused.

use crate::support as common;

use std::time::Duration;

use common::clients::{connect, exchange};
use common::inproc::Usher;
use common::{within, Origin, Recorded};

const HOST: &str = "cinema.example";

/// Requests covering methods, odd but legal targets, repeated headers,
/// cookies, and both body framings. None carries a hop-by-hop field.
fn cases() -> Vec<(&'static str, String)> {
    let h = format!("Host: {HOST}\r\n");
    let long = "v".repeat(4000);
    let many: String = (0..40).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    vec![
        ("percent-encoded target kept", format!(
            "GET /a%2Fb/%7e?x=%20&y=a+b&&z HTTP/1.1\r\n{h}Accept: text/html\r\nUser-Agent: test/1\r\n\
             X-Multi: one\r\nX-Multi: two\r\nCookie: a=1; b=2\r\nAccept-Language: ko, en;q=0.5\r\n\r\n"
        )),
        ("interleaved repeats keep their order", format!(
            "GET /r HTTP/1.1\r\n{h}X-A: 1\r\nX-B: 2\r\nX-A: 3\r\nX-b: 4\r\nCookie: c=3\r\n\r\n"
        )),
        ("odd path and query", format!(
            "GET /odd//path;p=1/:@!$&'()*+,=~%2e%2E/?q=%E2%9C%93&q=2&empty=&=v HTTP/1.1\r\n{h}\r\n"
        )),
        ("POST with Content-Length", format!(
            "POST /form?x=1 HTTP/1.1\r\n{h}Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 15\r\n\r\nhello=world&x=1"
        )),
        ("empty query", format!("GET /search? HTTP/1.1\r\n{h}\r\n")),
        ("POST with an empty body", format!(
            "POST /empty HTTP/1.1\r\n{h}Content-Length: 0\r\n\r\n"
        )),
        ("PUT chunked", format!(
            "PUT /upload/file.bin HTTP/1.1\r\n{h}Content-Type: application/octet-stream\r\n\
             Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\n\r\n"
        )),
        ("DELETE", format!("DELETE /items/42 HTTP/1.1\r\n{h}Authorization: Bearer abc\r\n\r\n")),
        ("PATCH with a JSON body", format!(
            "PATCH /items/42 HTTP/1.1\r\n{h}Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{{\"seats\": 2}}"
        )),
        ("OPTIONS on a path", format!("OPTIONS /api HTTP/1.1\r\n{h}Origin: https://x.example\r\n\r\n")),
        ("OPTIONS *", format!("OPTIONS * HTTP/1.1\r\n{h}\r\n")),
        ("custom token method", format!(
            "FROBNICATE /x?y HTTP/1.1\r\n{h}Content-Length: 3\r\n\r\nabc"
        )),
        ("long and many headers, obs-text", format!(
            "GET /big-head HTTP/1.1\r\n{h}X-Long: {long}\r\n{many}X-Utf8: caf\u{e9}\r\n\r\n"
        )),
    ]
}

/// Header fields in their order where HTTP gives it meaning: only fields
/// with the same name keep their order (RFC 9110 §5.3), so sort by name,
/// stably. Names keep the case they were written in.
fn normalized(fields: &[(String, String)]) -> Vec<(String, String)> {
    let mut v = fields.to_vec();
    v.sort_by_key(|f| f.0.to_ascii_lowercase());
    v
}

const FORWARDING: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

fn compare(name: &str, direct: &Recorded, proxied: &Recorded) {
    let p = &proxied.head;
    assert_eq!(p.first_line, direct.head.first_line, "{name}: request line");
    assert_eq!(p.get_all("x-forwarded-for"), ["127.0.0.1"], "{name}");
    assert_eq!(p.get_all("x-forwarded-proto"), ["http"], "{name}");
    assert_eq!(p.get_all("x-forwarded-host"), [HOST], "{name}");
    assert_eq!(
        p.get_all("forwarded"),
        [format!("for=127.0.0.1;proto=http;host=\"{HOST}\"")],
        "{name}"
    );
    let rest: Vec<(String, String)> = p
        .headers
        .iter()
        .filter(|(n, _)| !FORWARDING.iter().any(|f| n.eq_ignore_ascii_case(f)))
        .cloned()
        .collect();
    assert_eq!(
        normalized(&rest),
        normalized(&direct.head.headers),
        "{name}: header fields\nproxied head:\n{}",
        String::from_utf8_lossy(&p.raw)
    );
    assert_eq!(proxied.body, direct.body, "{name}: body");
    assert_eq!(proxied.trailers, direct.trailers, "{name}: trailers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_the_origin_as_sent() {
    within(30, "forwarding cases", async {
        let origin = Origin::ok().await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        for (name, raw) in cases() {
            let direct = within(5, name, exchange(origin.addr, raw.as_bytes())).await;
            assert_eq!(direct.status(), 200, "{name}: direct");
            let d = origin.wait_for(1).await.remove(0);
            let via = within(5, name, exchange(usher.addr, raw.as_bytes())).await;
            assert_eq!(via.status(), 200, "{name}: through usher: {}", via.text());
            assert_eq!(via.text(), "ok", "{name}");
            let p = origin.wait_for(1).await.remove(0);
            compare(name, &d, &p);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_reach_the_origin() {
    within(10, "request trailers", async {
        let origin = Origin::ok().await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        let raw = format!(
            "POST /t HTTP/1.1\r\nHost: {HOST}\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n\
             3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n"
        );
        let direct = exchange(origin.addr, raw.as_bytes()).await;
        assert_eq!(direct.status(), 200);
        let d = origin.wait_for(1).await.remove(0);
        assert_eq!(d.trailers, [("X-Sum".to_string(), "42".to_string())]);
        let via = exchange(usher.addr, raw.as_bytes()).await;
        assert_eq!(via.status(), 200);
        let p = origin.wait_for(1).await.remove(0);
        assert_eq!(p.body, b"abc");
        // hyper keeps the case of head fields only; trailer names arrive lowercase
        let lower = |t: &[(String, String)]| -> Vec<(String, String)> {
            t.iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect()
        };
        assert_eq!(lower(&p.trailers), lower(&d.trailers), "request trailers");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_never_reach_the_origin() {
    within(10, "hop-by-hop", async {
        let origin = Origin::ok().await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        let raw = format!(
            "GET /hop HTTP/1.1\r\nHost: {HOST}\r\nConnection: keep-alive, X-Secret\r\n\
             Connection: X-Other\r\nX-Secret: s\r\nX-Other: o\r\nKeep-Alive: timeout=5\r\n\
             Proxy-Connection: keep-alive\r\nTE: trailers, deflate;q=0.5\r\nUpgrade: h2c\r\n\
             X-Kept: k\r\n\r\n"
        );
        let via = exchange(usher.addr, raw.as_bytes()).await;
        assert_eq!(via.status(), 200);
        let p = origin.wait_for(1).await.remove(0);
        for gone in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "x-secret",
            "x-other",
            "upgrade",
        ] {
            assert!(
                p.head.get(gone).is_none(),
                "{gone} reached the origin:\n{}",
                String::from_utf8_lossy(&p.head.raw)
            );
        }
        // TE is hop-by-hop; usher asks for trailers itself since the client did
        assert_eq!(p.head.get_all("te"), ["trailers"]);
        assert_eq!(p.head.get("x-kept"), Some("k"));

        // without TE: trailers from the client, no TE at all
        for te in ["", "TE: gzip\r\n"] {
            let raw = format!("GET /hop2 HTTP/1.1\r\nHost: {HOST}\r\n{te}\r\n");
            assert_eq!(exchange(usher.addr, raw.as_bytes()).await.status(), 200);
            let p = origin.wait_for(1).await.remove(0);
            assert_eq!(p.head.get("te"), None, "client sent {te:?}");
        }
    })
    .await;
}

const SPOOF: &str = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\n\
                     Forwarded: for=6.6.6.6;proto=https\r\nX-Forwarded-Proto: https\r\n\
                     X-Forwarded-Host: evil.example\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_clients_cannot_spoof_forwarding_headers() {
    within(10, "spoofing", async {
        let origin = Origin::ok().await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        let raw = format!("GET /who HTTP/1.1\r\nHost: {HOST}\r\n{SPOOF}\r\n");
        assert_eq!(exchange(usher.addr, raw.as_bytes()).await.status(), 200);
        let p = origin.wait_for(1).await.remove(0).head;
        assert_eq!(p.get_all("x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(p.get_all("x-forwarded-proto"), ["http"]);
        assert_eq!(p.get_all("x-forwarded-host"), [HOST]);
        assert_eq!(
            p.get_all("forwarded"),
            [format!("for=127.0.0.1;proto=http;host=\"{HOST}\"")]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_forwarding_headers_are_kept_and_extended() {
    within(10, "trusted proxy", async {
        let origin = Origin::ok().await;
        let cfg = common::config(origin.addr, "trusted_proxies = [\"127.0.0.0/8\"]", "", "");
        let usher = Usher::start(&cfg).await;
        let raw = format!("GET /who HTTP/1.1\r\nHost: {HOST}\r\n{SPOOF}\r\n");
        assert_eq!(exchange(usher.addr, raw.as_bytes()).await.status(), 200);
        let p = origin.wait_for(1).await.remove(0).head;
        assert_eq!(
            p.get_all("x-forwarded-for"),
            ["6.6.6.6, 7.7.7.7, 127.0.0.1"]
        );
        assert_eq!(p.get_all("x-forwarded-proto"), ["https"]);
        assert_eq!(p.get_all("x-forwarded-host"), ["evil.example"]);
        assert_eq!(
            p.get_all("forwarded"),
            [format!(
                "for=6.6.6.6;proto=https, for=127.0.0.1;proto=http;host=\"{HOST}\""
            )]
        );
    })
    .await;
}

/// A request with both Content-Length and Transfer-Encoding: 400, the
/// connection closed, nothing forwarded (checked by a marker request that
/// must be the only one the origin sees).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_refused() {
    within(20, "CL+TE", async {
        let origin = Origin::ok().await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        let smuggles = [
            format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nContent-Length: 44\r\n\r\n\
                 0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
            ),
        ];
        for raw in &smuggles {
            let mut c = connect(usher.addr).await;
            c.send(raw.as_bytes()).await.unwrap();
            let r = c.read_response("POST").await.unwrap();
            assert_eq!(r.status(), 400, "{raw:?}");
            assert_eq!(r.head.get("connection"), Some("close"));
            assert!(
                c.closed_within(Duration::from_secs(5)).await,
                "connection left open after {raw:?}"
            );
        }
        // after a good request on the same connection
        let mut c = connect(usher.addr).await;
        let good = format!("GET /good HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        c.send(format!("{good}{}", smuggles[0]).as_bytes())
            .await
            .unwrap();
        assert_eq!(c.read_response("GET").await.unwrap().status(), 200);
        assert_eq!(c.read_response("POST").await.unwrap().status(), 400);
        assert!(c.closed_within(Duration::from_secs(5)).await);

        let marker = format!("GET /marker HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        assert_eq!(exchange(usher.addr, marker.as_bytes()).await.status(), 200);
        let seen: Vec<String> = origin
            .wait_for(2)
            .await
            .iter()
            .map(|r| r.target().to_string())
            .collect();
        assert_eq!(seen, ["/good", "/marker"], "the origin saw a refused request");
        assert_eq!(origin.count(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    within(10, "pipelining", async {
        let origin = Origin::start(|r| common::Reply::ok(&format!("for {}", r.target()))).await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        let mut c = connect(usher.addr).await;
        let batch: String = (0..5)
            .map(|i| {
                format!("POST /p/{i} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1\r\n\r\n{i}")
            })
            .collect();
        c.send(batch.as_bytes()).await.unwrap();
        for i in 0..5 {
            let r = c.read_response("POST").await.unwrap();
            assert_eq!(r.text(), format!("for /p/{i}"));
        }
        let seen = origin.wait_for(5).await;
        let bodies: Vec<&[u8]> = seen.iter().map(|r| r.body.as_slice()).collect();
        assert_eq!(bodies, [b"0", b"1", b"2", b"3", b"4"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_reaches_the_origin_in_origin_form() {
    within(10, "absolute form", async {
        let origin = Origin::ok().await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        let raw = format!("GET http://{HOST}/a%2Fb?x=%20 HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        assert_eq!(exchange(usher.addr, raw.as_bytes()).await.status(), 200);
        let seen = origin.wait_for(1).await.remove(0).head;
        assert_eq!(seen.first_line, "GET /a%2Fb?x=%20 HTTP/1.1");
        assert_eq!(seen.get_all("host"), [HOST]);
    })
    .await;
}

/// `Expect: 100-continue` (curl sends it for bodies over 1 KiB): the client
/// gets its 100 Continue, the origin's interim 100 does not confuse usher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_works_through_usher() {
    within(10, "100-continue", async {
        let origin = Origin::start(|r| common::Reply::ok(&format!("got {}", r.body_len))).await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        for addr in [origin.addr, usher.addr] {
            let mut c = connect(addr).await;
            c.send(
                format!(
                    "PUT /up HTTP/1.1\r\nHost: {HOST}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            let interim = within(3, "100 Continue", c.read_head()).await.unwrap().unwrap();
            assert_eq!(interim.status(), 100);
            c.send(b"hello").await.unwrap();
            let r = c.read_response("PUT").await.unwrap();
            assert_eq!((r.status(), r.text().as_str()), (200, "got 5"));
        }
        let seen = origin.wait_for(2).await;
        assert_eq!(seen[1].head.get("expect"), Some("100-continue"));
        assert_eq!(seen[1].body, b"hello");
    })
    .await;
}

/// usher keeps its origin connections alive (ephemeral ports last under
/// load), and an origin that closes them after each answer loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_connections_are_reused_and_their_closing_loses_nothing() {
    within(20, "origin keep-alive", async {
        let origin = Origin::ok().await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        let mut c = connect(usher.addr).await;
        for i in 0..20 {
            c.send(format!("GET /k/{i} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            assert_eq!(c.read_response("GET").await.unwrap().status(), 200);
        }
        assert_eq!(origin.connections(), 1, "one kept-alive origin connection");

        // An origin that closes each connection shortly after answering,
        // without a header saying so (like an idle keep-alive timeout
        // running out): the next request may already be on its way there.
        // usher sends an idempotent request without a body once more.
        let closing = Origin::start(|_| {
            common::Reply::ThenClose(
                Duration::from_millis(20),
                Box::new(common::Reply::ok("once")),
            )
        })
        .await;
        let usher = Usher::in_front_of(closing.addr, "").await;
        let mut c = connect(usher.addr).await;
        for i in 0..12 {
            let method = ["GET", "HEAD", "DELETE", "OPTIONS"][i % 4];
            c.send(format!("{method} /c/{i} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let r = c.read_response(method).await.unwrap();
            assert_eq!(r.status(), 200, "{method} {i}: {}", r.text());
        }
    })
    .await;
}

/// An HTTPS origin is reached over TLS, trusting the CA from
/// `origin.ca_file`, and its connections are kept alive and reused like a
/// plain one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origin_is_reached_over_tls_and_its_connections_reused() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    within(20, "https origin", async {
        let dir = common::TempDir::new("tls-origin");
        let (cert, key, _) = common::dev_cert(&dir);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&key).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(|req: http::Request<_>| async move {
                        let body = format!(
                            "tls-ok {} {}",
                            req.uri(),
                            req.headers()
                                .get("x-mixed-case")
                                .map_or("-", |v| { v.to_str().unwrap_or("?") })
                        );
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        let toml = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n\
             [origin]\nurl = \"https://localhost:{}\"\nca_file = \"{}\"\n",
            origin.port(),
            cert.display()
        );
        let usher = Usher::start(&toml).await;
        let mut c = connect(usher.addr).await;
        for i in 0..5 {
            c.send(
                format!("GET /tls/{i}?q=1 HTTP/1.1\r\nHost: {HOST}\r\nX-Mixed-Case: v{i}\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let r = c.read_response("GET").await.unwrap();
            assert_eq!(r.status(), 200, "{}", r.text());
            assert_eq!(r.text(), format!("tls-ok /tls/{i}?q=1 v{i}"));
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            1,
            "one kept-alive TLS connection to the origin"
        );
    })
    .await;
}

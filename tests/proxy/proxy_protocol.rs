//! PROXY protocol from an L4 balancer, through the real binary: the address
//! in a v1 or v2 header is the visitor's everywhere (what the origin sees in
//! `X-Forwarded-For`, the access log, the per-address caps and limits), and
//! only peers in `from` may send one. 127.0.0.1 plays the balancer;
//! 127.0.0.2 is a stranger on the same loopback.

use crate::support as common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpSocket, TcpStream};

use common::process::UsherProcess;
use common::{within, Conn, Origin, TempDir};

/// A running usher whose listeners are known by kind.
struct Edge {
    u: UsherProcess,
    /// The plain listener that takes PROXY headers.
    proxied: SocketAddr,
    /// A plain listener without PROXY protocol, if configured.
    direct: Option<SocketAddr>,
    /// The TLS listener (takes PROXY headers), if configured.
    tls: Option<SocketAddr>,
    /// The certificate it serves.
    cert: String,
}

/// usher in front of `origin` with a PROXY listener on 127.0.0.1 (and a
/// plain one on 127.0.0.3 without it); `server` and `tail` are extra lines.
async fn start(origin: SocketAddr, server: &str, tail: &str, tls: bool) -> Edge {
    let dir = TempDir::new("proxy-protocol");
    let (mut tls_section, mut cert) = (String::new(), String::new());
    if tls {
        let (c, k, pem) = common::dev_cert(&dir);
        tls_section = format!(
            "[server.tls]\nlisten = [\"127.0.0.1:0\"]\n[[server.tls.certificates]]\n\
             cert = \"{}\"\nkey = \"{}\"\n",
            c.display(),
            k.display()
        );
        cert = pem;
    }
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\", \"127.0.0.3:0\"]\nadmin = \"127.0.0.1:0\"\n{server}\n\
         {tls_section}\n[server.proxy_protocol]\nlisten = [\"127.0.0.1:0\"]\nfrom = [\"127.0.0.1/32\"]\n\n\
         [origin]\nurl = \"http://{origin}\"\n\n\
         [log]\nformat = \"json\"\nlevel = \"info\"\naccess = \"json\"\n\n{tail}\n"
    );
    let u = UsherProcess::spawn(dir, &text).await;
    let want = if tls { 3 } else { 2 };
    let listeners = within(10, "every listener up", async {
        loop {
            let found: Vec<(SocketAddr, bool, bool)> = u
                .logs()
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["message"] == "listening")
                .filter_map(|v| {
                    let a = v["listener"].as_str()?.parse().ok()?;
                    Some((a, v["tls"].as_bool()?, v["proxy_protocol"].as_bool()?))
                })
                .collect();
            if found.len() == want {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let pick = |tls: bool, proxy: bool| {
        listeners
            .iter()
            .find(|(_, t, p)| *t == tls && *p == proxy)
            .map(|(a, _, _)| *a)
    };
    Edge {
        proxied: pick(false, true).expect("the PROXY listener"),
        direct: pick(false, false),
        tls: pick(true, true),
        u,
        cert,
    }
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let s = sock.connect(to).await.expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// A v2 header: command (0 LOCAL, 1 PROXY), family byte, addresses, TLVs.
fn v2(cmd: u8, fam: u8, addrs: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x20 | cmd, fam]);
    h.extend_from_slice(&((addrs.len() + tlvs.len()) as u16).to_be_bytes());
    h.extend_from_slice(addrs);
    h.extend_from_slice(tlvs);
    h
}

/// A v2 PROXY header for a TCP visitor at `ip` (port 40000).
fn v2_for(ip: IpAddr) -> Vec<u8> {
    let port = 40000u16.to_be_bytes();
    match ip {
        IpAddr::V4(a) => {
            let block = [&a.octets()[..], &[127, 0, 0, 1], &port, &[0, 80]].concat();
            v2(1, 0x11, &block, &[])
        }
        IpAddr::V6(a) => {
            let block = [&a.octets()[..], &[0; 16], &port, &[0, 80]].concat();
            // An AWS-style TLV (VPC endpoint id) to skip.
            v2(1, 0x21, &block, b"\xea\x00\x07\x01vpce-1")
        }
    }
}

/// Sends `header` then a GET for `path` from 127.0.0.1; the response, or
/// `None` when usher closes without one.
async fn get_via(to: SocketAddr, header: &[u8], path: &str) -> Option<common::Response> {
    let mut c = Conn::new(connect_from("127.0.0.1", to).await);
    let req = format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n");
    c.send(&[header, req.as_bytes()].concat()).await.ok()?;
    within(10, "the answer", c.read_response("GET")).await.ok()
}

/// A counter from usher's /metrics, 0 when absent.
async fn metric(admin: SocketAddr, series: &str) -> u64 {
    let r = common::clients::get(admin, "/metrics").await;
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The access log lines (parsed) whose `target` is `path`.
fn access_lines(u: &UsherProcess, path: &str) -> Vec<serde_json::Value> {
    u.logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "access" && v["target"] == path)
        .collect()
}

#[tokio::test]
async fn the_visitor_in_the_header_is_who_the_origin_and_the_log_see() {
    let origin = Origin::ok().await;
    let e = start(origin.addr, "", "", false).await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "/v1",
            b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n".to_vec(),
            "203.0.113.7",
        ),
        (
            "/v1-tcp6",
            b"PROXY TCP6 2001:db8::7 ::1 40000 80\r\n".to_vec(),
            "2001:db8::7",
        ),
        (
            "/v2",
            v2_for("198.51.100.9".parse().unwrap()),
            "198.51.100.9",
        ),
        (
            "/v2-tcp6-tlv",
            v2_for("2001:db8::9".parse().unwrap()),
            "2001:db8::9",
        ),
        // The balancer's own connections keep its address.
        ("/v1-unknown", b"PROXY UNKNOWN\r\n".to_vec(), "127.0.0.1"),
        ("/v2-local", v2(0, 0x00, &[], &[]), "127.0.0.1"),
        ("/v2-unix", v2(1, 0x31, &[0; 216], &[]), "127.0.0.1"),
    ];
    for (path, header, client) in &cases {
        let r = get_via(e.proxied, header, path)
            .await
            .unwrap_or_else(|| panic!("{path}: closed without an answer"));
        assert_eq!(r.status(), 200, "{path}");
        let got = origin.wait_for(1).await;
        let head = &got[0].head;
        assert_eq!(got[0].target(), *path);
        assert_eq!(head.get("x-forwarded-for"), Some(*client), "{path}");
        let fwd = head.get("forwarded").unwrap_or_default();
        assert!(fwd.contains(client), "{path}: Forwarded {fwd}");
    }
    // One access line per request, the visitor's address at the top level.
    within(10, "the access lines", async {
        while cases
            .iter()
            .any(|(path, _, _)| access_lines(&e.u, path).is_empty())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    for (path, _, client) in &cases {
        let lines = access_lines(&e.u, path);
        assert_eq!(lines.len(), 1, "{path}");
        assert_eq!(lines[0]["client"], *client, "{path}");
        assert_eq!(lines[0]["status"], 200, "{path}");
    }

    // The same bytes on the listener without PROXY protocol are not a
    // header: that listener answers 400 to "PROXY ..." as a request line.
    let direct = e.direct.expect("the direct listener");
    let mut c = Conn::new(connect_from("127.0.0.3", direct).await);
    c.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let r = within(10, "direct answer", c.read_response("GET")).await;
    assert!(r.map_or(true, |r| r.status() == 400));
    assert_eq!(
        origin.count(),
        0,
        "nothing forwarded from the direct listener"
    );
}

#[tokio::test]
async fn per_address_caps_count_the_visitor_not_the_balancer() {
    let origin = Origin::ok().await;
    let e = start(origin.addr, "max_connections_per_ip = 1", "", false).await;
    let a = b"PROXY TCP4 203.0.113.10 127.0.0.1 40000 80\r\n";
    let b = b"PROXY TCP4 203.0.113.11 127.0.0.1 40001 80\r\n";
    // Visitor A holds a keep-alive connection through the balancer.
    let mut held = Conn::new(connect_from("127.0.0.1", e.proxied).await);
    held.send(&[&a[..], b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"].concat())
        .await
        .unwrap();
    assert_eq!(held.read_response("GET").await.unwrap().status(), 200);
    // A second connection for A is over A's cap ...
    let mut second = Conn::new(connect_from("127.0.0.1", e.proxied).await);
    second
        .send(&[&a[..], b"GET /a2 HTTP/1.1\r\nHost: x\r\n\r\n"].concat())
        .await
        .unwrap();
    assert!(second.closed_within(Duration::from_secs(5)).await);
    // ... while B, through the same balancer address, is served.
    let r = get_via(e.proxied, b, "/b").await.expect("B is served");
    assert_eq!(r.status(), 200);
    assert_eq!(
        metric(
            e.u.admin(),
            "usher_connections_refused_total{reason=\"per_ip_limit\"}"
        )
        .await,
        1
    );
    drop(held);
}

#[tokio::test]
async fn admission_limits_apply_per_visitor_behind_one_balancer() {
    let origin = Origin::ok().await;
    let room =
        "[room]\nevent = \"pp\"\nmax_active_users = 1\nnew_users_per_minute = 60\nburst = 1\n\
                [room.limits]\ntickets_per_minute_per_ip = 1\nrequests_per_second_per_ip = 0\n\
                ticket_proof_bits = 0\n";
    let e = start(origin.addr, "", room, false).await;
    let a = b"PROXY TCP4 203.0.113.20 127.0.0.1 40000 80\r\n";
    let b = b"PROXY TCP4 203.0.113.21 127.0.0.1 40001 80\r\n";
    let mut limited = false;
    for i in 0..20 {
        let r = get_via(e.proxied, a, &format!("/a{i}"))
            .await
            .expect("answered");
        assert_eq!(r.status(), 200, "never an error page");
        if r.head.get("retry-after").is_some() {
            assert!(
                r.head.get("set-cookie").is_none(),
                "no ticket over the limit"
            );
            limited = true;
            break;
        }
    }
    assert!(limited, "visitor A reached its ticket limit");
    // B comes through the same balancer and still gets a ticket.
    let r = get_via(e.proxied, b, "/b").await.expect("answered");
    assert_eq!(r.status(), 200);
    assert!(
        r.head.get("retry-after").is_none(),
        "B has its own allowance"
    );
    let cookies = r.head.get_all("set-cookie").join("; ");
    assert!(cookies.contains("usher_ticket="), "{cookies}");
}

#[tokio::test]
async fn strangers_garbage_and_late_headers_are_refused_and_usher_stays_up() {
    let origin = Origin::ok().await;
    let e = start(origin.addr, "header_read_timeout = \"1s\"", "", false).await;
    let good = b"PROXY TCP4 203.0.113.30 127.0.0.1 40000 80\r\n";
    let req = b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    // A stranger with a perfect header: refused.
    for _ in 0..3 {
        let mut c = Conn::new(connect_from("127.0.0.2", e.proxied).await);
        let _ = c.send(&[&good[..], req].concat()).await;
        assert!(c.closed_within(Duration::from_secs(5)).await, "stranger");
    }
    // The balancer without a header, with garbage, with truncated ones.
    let truncated_v2 = &v2_for("203.0.113.31".parse().unwrap())[..20];
    let bad: [&[u8]; 5] = [
        req,
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"PROXY TCP4 203.0.113.30 127.0.0.1\r\n",
        b"PROXY TCP4 203.0.113.30 127.0",
        truncated_v2,
    ];
    for bytes in bad {
        let mut s = connect_from("127.0.0.1", e.proxied).await;
        tokio::io::AsyncWriteExt::write_all(&mut s, bytes)
            .await
            .unwrap();
        // The peer leaves after what it sent (half-close), as a cut
        // connection would.
        tokio::io::AsyncWriteExt::shutdown(&mut s).await.unwrap();
        let mut c = Conn::new(s);
        assert!(
            c.closed_within(Duration::from_secs(5)).await,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // Half a header, then silence: cut at header_read_timeout.
    let mut slow = Conn::new(connect_from("127.0.0.1", e.proxied).await);
    slow.send(b"PROXY TCP4 203.0.").await.unwrap();
    let started = std::time::Instant::now();
    assert!(slow.closed_within(Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(origin.count(), 0, "nothing reached the origin");

    let m = |r: &'static str| {
        let admin = e.u.admin();
        async move {
            metric(
                admin,
                &format!("usher_connections_refused_total{{reason=\"{r}\"}}"),
            )
            .await
        }
    };
    assert_eq!(m("proxy_untrusted").await, 3);
    assert_eq!(m("proxy_header").await, 5);
    assert_eq!(m("proxy_timeout").await, 1);
    // Logged, but once per reason while they keep coming (throttled).
    let warned = |reason: &str| {
        e.u.logs()
            .iter()
            .filter(|l| l.contains("refused on a PROXY protocol listener"))
            .filter(|l| l.contains(&format!("\"reason\":\"{reason}\"")))
            .count()
    };
    assert_eq!(warned("proxy_untrusted"), 1);
    assert_eq!(warned("proxy_header"), 1);
    assert_eq!(warned("proxy_timeout"), 1);
    // Still serving.
    let r = get_via(e.proxied, good, "/after").await.expect("served");
    assert_eq!(r.status(), 200);
}

/// A TLS client over `tcp` (after whatever was written on it), trusting `cert`.
async fn tls_over(
    tcp: TcpStream,
    cert: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from("localhost").unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    within(10, "TLS handshake", connector.connect(name, tcp)).await
}

#[tokio::test]
async fn over_tls_the_header_comes_before_the_client_hello() {
    let origin = Origin::ok().await;
    let e = start(origin.addr, "", "", true).await;
    let tls = e.tls.expect("the TLS listener");
    let req = b"GET /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    for (header, client) in [
        (
            b"PROXY TCP4 203.0.113.40 127.0.0.1 40000 443\r\n".to_vec(),
            "203.0.113.40",
        ),
        (v2_for("2001:db8::40".parse().unwrap()), "2001:db8::40"),
    ] {
        let mut tcp = connect_from("127.0.0.1", tls).await;
        tokio::io::AsyncWriteExt::write_all(&mut tcp, &header)
            .await
            .unwrap();
        let mut c = Conn::new(tls_over(tcp, &e.cert).await.expect("handshake"));
        c.send(req).await.unwrap();
        assert_eq!(c.read_response("GET").await.unwrap().status(), 200);
        let got = origin.wait_for(1).await;
        assert_eq!(got[0].head.get("x-forwarded-for"), Some(client));
        assert_eq!(got[0].head.get("x-forwarded-proto"), Some("https"));
    }
    // No header (a ClientHello first), or a stranger: no handshake.
    let tcp = connect_from("127.0.0.1", tls).await;
    assert!(tls_over(tcp, &e.cert).await.is_err());
    let mut tcp = connect_from("127.0.0.2", tls).await;
    let header = b"PROXY TCP4 203.0.113.41 127.0.0.1 40000 443\r\n";
    let _ = tokio::io::AsyncWriteExt::write_all(&mut tcp, header).await;
    assert!(tls_over(tcp, &e.cert).await.is_err());
    assert_eq!(origin.count(), 0);
    assert_eq!(
        metric(
            e.u.admin(),
            "usher_connections_refused_total{reason=\"proxy_untrusted\"}"
        )
        .await,
        1
    );
    assert_eq!(
        metric(
            e.u.admin(),
            "usher_connections_refused_total{reason=\"proxy_header\"}"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn check_names_every_mistake_in_the_section() {
    let dir = TempDir::new("proxy-protocol-check");
    let path = dir.write(
        "usher.toml",
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n\
         [server.proxy_protocol]\nlisten = [\"127.0.0.1:9999\", \"nowhere\"]\nfrom = [\"10.0.0.0/33\"]\n\
         [origin]\nurl = \"http://127.0.0.1:8000\"\n",
    );
    let out = common::process::bin()
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(text.contains("server.proxy_protocol.listen.0"), "{text}");
    assert!(text.contains("not in server.listen"), "{text}");
    assert!(text.contains("server.proxy_protocol.listen.1"), "{text}");
    assert!(text.contains("server.proxy_protocol.from.0"), "{text}");
}

#[tokio::test]
async fn an_inherited_socket_takes_the_header_too() {
    let origin = Origin::ok().await;
    let o = origin.addr;
    let u = common::activated::Activated::start(
        move |listen| {
            format!(
                "[server]\nlisten = [\"{listen}\"]\nadmin = \"\"\n\
                 [server.proxy_protocol]\nlisten = [\"{listen}\"]\nfrom = [\"127.0.0.1/32\"]\n\
                 [origin]\nurl = \"http://{o}\"\n[log]\nformat = \"json\"\naccess = \"json\"\n"
            )
        },
        &[],
        None,
    );
    let r = get_via(u.addr, &v2_for("203.0.113.50".parse().unwrap()), "/sd")
        .await
        .expect("served on the inherited socket");
    assert_eq!(r.status(), 200);
    let got = origin.wait_for(1).await;
    assert_eq!(got[0].head.get("x-forwarded-for"), Some("203.0.113.50"));
    let mut c = Conn::new(connect_from("127.0.0.2", u.addr).await);
    let _ = c
        .send(b"PROXY TCP4 203.0.113.51 127.0.0.1 1 80\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    assert!(c.closed_within(Duration::from_secs(5)).await, "stranger");
    u.wait_for_lines("\"reason\":\"proxy_untrusted\"", 1).await;
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn a_reload_applies_from_at_once_and_asks_a_restart_for_listen() {
    let origin = Origin::ok().await;
    let e = start(origin.addr, "", "", false).await;
    let reloaded = |n: usize| {
        let u = &e.u;
        within(10, "the reload", async move {
            while u
                .logs()
                .iter()
                .filter(|l| l.contains("\"config reloaded\""))
                .count()
                < n
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let text = std::fs::read_to_string(&e.u.config).unwrap();
    // The balancer moves to 127.0.0.2.
    let moved = text.replace("from = [\"127.0.0.1/32\"]", "from = [\"127.0.0.2/32\"]");
    assert_ne!(moved, text);
    e.u.write("usher.toml", &moved);
    e.u.signal(libc::SIGHUP);
    reloaded(1).await;
    let header = b"PROXY TCP4 203.0.113.60 127.0.0.1 40000 80\r\n";
    assert!(
        get_via(e.proxied, header, "/old").await.is_none(),
        "old balancer refused"
    );
    let mut c = Conn::new(connect_from("127.0.0.2", e.proxied).await);
    c.send(
        &[
            &header[..],
            b"GET /new HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ]
        .concat(),
    )
    .await
    .unwrap();
    assert_eq!(c.read_response("GET").await.unwrap().status(), 200);
    let got = origin.wait_for(1).await;
    assert_eq!(got[0].head.get("x-forwarded-for"), Some("203.0.113.60"));

    // Which listeners read the header is fixed at start.
    let more = moved.replace(
        "listen = [\"127.0.0.1:0\"]\nfrom",
        "listen = [\"127.0.0.1:0\", \"127.0.0.3:0\"]\nfrom",
    );
    assert_ne!(more, moved);
    e.u.write("usher.toml", &more);
    e.u.signal(libc::SIGHUP);
    reloaded(2).await;
    assert!(e
        .u
        .logs()
        .iter()
        .any(|l| l.contains("needs a restart") && l.contains("server.proxy_protocol.listen")));
    let direct = e.direct.expect("the direct listener");
    let r = common::clients::get(direct, "/direct").await;
    assert_eq!(r.status(), 200, "the direct listener still takes no header");
}

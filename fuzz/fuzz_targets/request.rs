//! The whole request path: arbitrary bytes sent to a running usher (with a
//! room, in front of a small origin) over a real loopback connection, or,
//! for inputs of odd length, to one without a room (where plain GETs take
//! the relay, src/server/relay/). usher must neither panic (libFuzzer
//! aborts on a panic in any thread) nor hang, and answers only with HTTP
//! (or HTTP/2 frames after the h2c preface).
#![no_main]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

struct World {
    rt: Runtime,
    usher: SocketAddr,
    /// The same without a room: the relay's path.
    relayed: SocketAddr,
}

async fn origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    // read the whole body, as an origin does
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (usher, relayed) = rt.block_on(async {
            let origin = origin().await;
            let server = format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"\"\nheader_read_timeout = \"1s\"\n\
                 body_read_timeout = \"1s\"\nsend_timeout = \"1s\"\nmax_connections_per_ip = 0\n\
                 [origin]\nurl = \"http://{origin}\"\nresponse_timeout = \"2s\"\n"
            );
            let room = "[room]\nprotect = [\"/coupon\"]\nmax_active_users = 1000\n\
                 [room.limits]\ntickets_per_minute_per_ip = 100000000\nrequests_per_second_per_ip = 0\n";
            let mut addrs = Vec::new();
            for text in [format!("{server}{room}"), server] {
                let cfg = usher::config::Config::parse(&text, "fuzz", std::path::Path::new("."))
                    .expect("config");
                let app =
                    usher::app::App::new(cfg, usher::logging::LogHandle::none()).expect("app");
                let listeners = usher::server::Listeners::bind(&app).await.expect("bind");
                let running = usher::server::serve(app, listeners);
                addrs.push(running.bound.plain[0]);
                std::mem::forget(running);
            }
            (addrs[0], addrs[1])
        });
        World { rt, usher, relayed }
    })
}

/// A connection from one of 250 loopback addresses in turn, so a long run
/// does not run out of (address, port) pairs held in TIME_WAIT.
async fn connect(to: SocketAddr) -> TcpStream {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 250;
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::from(([127, 0, 0, 1 + n], 0)))
        .expect("bind a loopback address");
    sock.connect(to).await.expect("usher is up")
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let reply = w.rt.block_on(async {
        let to = if data.len() % 2 == 1 { w.relayed } else { w.usher };
        let mut s = connect(to).await;
        let _ = s.write_all(data).await;
        let _ = s.shutdown().await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        out
    });
    if !reply.is_empty() && !data.starts_with(b"PRI ") {
        assert!(
            reply.starts_with(b"HTTP/1."),
            "not HTTP: {:?}",
            String::from_utf8_lossy(&reply[..reply.len().min(200)])
        );
    }
});

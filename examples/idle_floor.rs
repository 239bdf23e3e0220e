//! The floor for an idle keep-alive connection in a tokio server, for
//! `benches/run.sh idle`: each connection is one task that reads a request
//! into a buffer it frees, answers a fixed response, then waits for the
//! socket to be readable under an idle timeout, as a parked usher connection
//! does. Nothing else: no HTTP parser, guard, TLS or metrics.
//!
//!   idle_floor 127.0.0.1:18110 [seconds]
//!
//! Loopback only; stops by itself after `seconds` (default 120).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

async fn connection(mut s: TcpStream) {
    loop {
        {
            let mut buf = Vec::with_capacity(8192);
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        if s.write_all(ANSWER).await.is_err() {
            return;
        }
        tokio::select! {
            r = s.readable() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(60)) => return,
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: std::net::SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| "127.0.0.1:18110".parse().unwrap());
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(120);
    assert!(addr.ip().is_loopback(), "loopback only");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let serve = async {
            loop {
                if let Ok((s, _)) = listener.accept().await {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(connection(s));
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(seconds), serve).await;
    });
}

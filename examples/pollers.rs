//! Polling visitors, for `benches/run.sh poll`: N keep-alive clients from one
//! loopback source address, each takes a queue ticket (`GET /` on a paused
//! room) and then polls `/__usher/status` with its ticket cookie every
//! `--interval`, as a held visitor's page does, until `--seconds` have
//! passed. Raw HTTP/1.1 over tokio sockets, one thread, so that several
//! processes can drive 15,000 clients beside usher on a small machine.
//!
//!   pollers --target 127.0.0.1:18102 --source 127.0.0.2 --clients 5000 \
//!           --interval 5 --ramp 15 --seconds 60 --out lat.bin
//!
//! Prints one summary line; `--out` gets every poll's latency in
//! microseconds (u32, little-endian) for merging across processes. Loopback
//! only (127.0.0.0/8); bounded in count and time; stops by itself.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// Most clients one process may hold (the machine allows 20,000 open files).
const MAX_CLIENTS: usize = 18_000;
/// Longest run.
const MAX_SECONDS: u64 = 600;
/// An answer slower than this is an error.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

struct Args {
    target: SocketAddr,
    source: IpAddr,
    clients: usize,
    interval: Duration,
    ramp: Duration,
    seconds: u64,
    out: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        target: "127.0.0.1:18102".parse().unwrap(),
        source: "127.0.0.1".parse().unwrap(),
        clients: 1000,
        interval: Duration::from_secs(5),
        ramp: Duration::from_secs(10),
        seconds: 60,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {v}: {e}");
        match flag.as_str() {
            "--target" => a.target = v.parse().map_err(|e| bad(&e))?,
            "--source" => a.source = v.parse().map_err(|e| bad(&e))?,
            "--clients" => a.clients = v.parse().map_err(|e| bad(&e))?,
            "--interval" => a.interval = Duration::from_secs_f64(v.parse().map_err(|e| bad(&e))?),
            "--ramp" => a.ramp = Duration::from_secs_f64(v.parse().map_err(|e| bad(&e))?),
            "--seconds" => a.seconds = v.parse().map_err(|e| bad(&e))?,
            "--out" => a.out = Some(v),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if !a.target.ip().is_loopback() || !a.source.is_loopback() {
        return Err("loopback addresses only".into());
    }
    if a.clients > MAX_CLIENTS || a.seconds > MAX_SECONDS {
        return Err(format!("at most {MAX_CLIENTS} clients and {MAX_SECONDS} s"));
    }
    Ok(a)
}

#[derive(Default)]
struct Stats {
    /// Latency of each answered poll, in microseconds.
    latencies: Vec<u32>,
    polls: u64,
    errors: u64,
    no_ticket: u64,
    reconnects: u64,
}

/// One HTTP/1.1 answer read off a keep-alive connection.
struct Answer {
    status: u16,
    head: String,
}

/// Reads one answer (Content-Length or chunked body), keeping any bytes
/// beyond it in `buf` (there are none: one request at a time).
async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Answer> {
    buf.clear();
    let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed");
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if s.read_buf(buf).await? == 0 {
            return Err(eof());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(n) => {
            while buf.len() < head_end + n {
                if s.read_buf(buf).await? == 0 {
                    return Err(eof());
                }
            }
        }
        None if lower.contains("transfer-encoding: chunked") => {
            while !buf[head_end..].ends_with(b"0\r\n\r\n") {
                if s.read_buf(buf).await? == 0 {
                    return Err(eof());
                }
            }
        }
        None => {}
    }
    Ok(Answer { status, head })
}

async fn connect(a: &Args) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(a.source, 0))?;
    let s = sock.connect(a.target).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Takes a ticket: the value of the `usher_ticket` cookie of `GET /`.
async fn ticket(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<String>> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nAccept: text/html\r\n\r\n")
        .await?;
    let answer = read_answer(s, buf).await?;
    Ok(answer.head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        if !name.eq_ignore_ascii_case("set-cookie") {
            return None;
        }
        let v = value.trim().strip_prefix("usher_ticket=")?;
        Some(v.split(';').next().unwrap_or(v).to_owned())
    }))
}

async fn client(id: usize, a: Arc<Args>, stats: Arc<Mutex<Stats>>, end: Instant) {
    let start = Instant::now() + a.ramp.mul_f64(id as f64 / a.clients.max(1) as f64);
    tokio::time::sleep_until(start).await;
    let mut buf = Vec::with_capacity(16 * 1024);
    let Ok(mut s) = connect(&a).await else {
        stats.lock().unwrap().errors += 1;
        return;
    };
    let cookie = match ticket(&mut s, &mut buf).await {
        Ok(Some(c)) => c,
        _ => {
            stats.lock().unwrap().no_ticket += 1;
            return;
        }
    };
    buf = Vec::with_capacity(1024);
    let req = format!(
        "GET /__usher/status HTTP/1.1\r\nHost: bench\r\nAccept: application/json\r\n\
         Cookie: usher_ticket={cookie}\r\n\r\n"
    )
    .into_bytes();
    // Spread the first polls over one interval, as page loads would be.
    let spread = (id * 7919 % 1000) as f64 / 1000.0;
    let mut next = Instant::now() + a.interval.mul_f64(spread);
    while next < end {
        tokio::time::sleep_until(next).await;
        next += a.interval;
        let asked = Instant::now();
        let polled = tokio::time::timeout(ANSWER_TIMEOUT, async {
            s.write_all(&req).await?;
            read_answer(&mut s, &mut buf).await
        })
        .await;
        let took = asked.elapsed().as_micros().min(u32::MAX as u128) as u32;
        let broken = {
            let mut st = stats.lock().unwrap();
            st.polls += 1;
            match &polled {
                Ok(Ok(answer)) if answer.status == 200 => st.latencies.push(took),
                Ok(Ok(_)) => st.errors += 1,
                Ok(Err(_)) | Err(_) => {
                    st.errors += 1;
                    st.reconnects += 1;
                }
            }
            !matches!(polled, Ok(Ok(_)))
        };
        if broken {
            match connect(&a).await {
                Ok(fresh) => s = fresh,
                Err(_) => return,
            }
        }
    }
}

fn main() {
    let a = match args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("pollers: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stats = Arc::new(Mutex::new(Stats::default()));
    rt.block_on(async {
        let end = Instant::now() + Duration::from_secs(a.seconds);
        let tasks: Vec<_> = (0..a.clients)
            .map(|id| tokio::spawn(client(id, a.clone(), stats.clone(), end)))
            .collect();
        for t in tasks {
            let _ = tokio::time::timeout_at(end + ANSWER_TIMEOUT * 2, t).await;
        }
    });
    let mut st = stats.lock().unwrap();
    st.latencies.sort_unstable();
    let pct = |p: f64| {
        let l = &st.latencies;
        if l.is_empty() {
            return 0.0;
        }
        l[((l.len() - 1) as f64 * p) as usize] as f64 / 1000.0
    };
    println!(
        "source={} clients={} polls={} answered={} errors={} no_ticket={} reconnects={} \
         p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        a.source,
        a.clients,
        st.polls,
        st.latencies.len(),
        st.errors,
        st.no_ticket,
        st.reconnects,
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
    if let Some(path) = &a.out {
        let bytes: Vec<u8> = st.latencies.iter().flat_map(|l| l.to_le_bytes()).collect();
        if let Err(e) = std::fs::write(path, bytes) {
            eprintln!("pollers: cannot write {path}: {e}");
        }
    }
}

//! Bodies stream through usher: a 100 MiB upload and a 100 MiB download
//! arrive whole and in order while usher's own memory (the real binary's
//! VmRSS) stays flat.

use crate::support as common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::clients::{connect, get};
use common::process::UsherProcess;
use common::{pattern, within, Origin, Reply, TempDir};

const SIZE: u64 = 100 << 20;
/// usher may grow by this much at most while 2 x 100 MiB cross it.
const MAX_GROWTH_KIB: u64 = 80 << 10;

/// Samples the process's RSS every 20 ms until dropped; keeps the maximum.
struct RssWatch {
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssWatch {
    fn start(pid: i32) -> RssWatch {
        let max = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (max.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    m.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch { max, stop }
    }

    fn max_kib(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn rss_kib(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_up_and_down_in_flat_memory() {
    let origin = Origin::start(|r| match r.target() {
        "/down" => Reply::Pattern(SIZE),
        "/up" => Reply::ok(&format!("{} {}", r.body_len, r.body_is_pattern)),
        _ => Reply::ok("warm"),
    })
    .await;
    let cfg = common::config(origin.addr, "", "", "");
    let usher = UsherProcess::spawn(TempDir::new("stream"), &cfg).await;
    within(60, "100 MiB each way", async {
        // warm up: pools, buffers and the allocator settle before the baseline
        for _ in 0..3 {
            assert_eq!(get(usher.addr(), "/warm").await.status(), 200);
        }
        let base = usher.rss_kib();
        let watch = RssWatch::start(usher.pid());

        let started = Instant::now();
        let mut c = connect(usher.addr()).await;
        c.send(
            format!("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut sent = 0u64;
        while sent < SIZE {
            let n = (SIZE - sent).min(buf.len() as u64) as usize;
            pattern::fill(sent, &mut buf[..n]);
            c.send(&buf[..n]).await.unwrap();
            sent += n as u64;
        }
        let r = c.read_response("POST").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.text(),
            format!("{SIZE} true"),
            "the origin got the upload intact"
        );
        let up = started.elapsed();

        let started = Instant::now();
        c.send(b"GET /down HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let head = c.read_head().await.unwrap().expect("response head");
        assert_eq!(head.status(), 200);
        assert_eq!(head.content_length(), Some(SIZE));
        let (mut got, mut intact) = (0u64, true);
        c.read_n(SIZE, &mut |b| {
            intact &= pattern::check(got, b);
            got += b.len() as u64;
        })
        .await
        .unwrap();
        assert_eq!(got, SIZE);
        assert!(intact, "the download arrived altered");
        let down = started.elapsed();

        let peak = watch.max_kib().max(usher.rss_kib());
        eprintln!(
            "upload {up:?}, download {down:?}; usher RSS {base} KiB at start, {peak} KiB at peak"
        );
        assert!(
            peak < base + MAX_GROWTH_KIB,
            "usher's RSS grew from {base} KiB to {peak} KiB"
        );
    })
    .await;
}
